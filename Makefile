# voxguard: `make run` serves, `make test` tests; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLES ?= $(abspath ../shared/samples)
# The official weights, by voxguard's own rule (src/voxguard/model/locate.py: VOXGUARD_CHECKPOINT_DIR,
# else checkpoints/, else ../shared/aasist beside the repository), so compose mounts the folder that
# `voxguard serve` and `make run` would use. Plain python3: the lookup needs nothing installed.
WEIGHTS_DIR = $(shell PYTHONPATH=src $(PYTHON) -m voxguard.model.locate)

.PHONY: install test test-docker test-fast lint format weights run run-tls certs bench bench-serve bench-gpu audit reliability \
	eval-report corpus detector clean docker-build up up-cpu up-scale down

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not docker"

lint: install
	$(VENV)/bin/ruff check src tests docker scripts
	$(VENV)/bin/ruff format --check src tests docker scripts

format: install
	$(VENV)/bin/ruff format src tests docker scripts
	$(VENV)/bin/ruff check --fix src tests docker scripts

weights: install
	$(VENV)/bin/voxguard weights

CERT_DIR ?= certs
certs: $(CERT_DIR)/cert.pem

$(CERT_DIR)/cert.pem:
	mkdir -p $(CERT_DIR)
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
		-keyout $(CERT_DIR)/key.pem -out $(CERT_DIR)/cert.pem 2>/dev/null
	chmod 600 $(CERT_DIR)/key.pem
	@echo "wrote $(CERT_DIR)/cert.pem and $(CERT_DIR)/key.pem (self-signed, localhost)"

# Fetch weights only when missing, then serve on http://localhost:8000 (Swagger UI at /docs). Like
# `voxguard serve`, this machine only (127.0.0.1, no key needed); to open it to the network:
# VOXGUARD_HOST=0.0.0.0 VOXGUARD_API_KEYS=... make run
run: install
	$(VENV)/bin/voxguard weights --model aasist
	$(VENV)/bin/voxguard serve --port 8000

# HTTPS with the self-signed certificate from `make certs`, for browsers on other machines (the
# microphone needs a secure page), so on every interface unless VOXGUARD_HOST says otherwise.
run-tls: install certs
	$(VENV)/bin/voxguard weights --model aasist
	$(VENV)/bin/voxguard serve --host $${VOXGUARD_HOST:-0.0.0.0} --port 8443 --certfile $(CERT_DIR)/cert.pem --keyfile $(CERT_DIR)/key.pem

bench: install
	$(VENV)/bin/voxguard bench model --batch-sizes 1,16 --repeat 3

# The serving stack apart from the model: voxguard on a simulated H200 (bf16) under wrk, against the
# framework floor and the load generator's own ceiling (needs wrk and nginx; about a minute).
bench-serve: install
	$(VENV)/bin/voxguard bench serve --engine simulated --simulated-ms 0.9,0.68

# GPU run: golden tests on cuda, engine, serving and bf16-agreement benchmarks (about 5 minutes on an H100).
# Where torch and the dependencies are installed without the venv: make bench-gpu PY=python3
BENCH_OUT ?= bench-results
bench-gpu:
	VOXGUARD_SAMPLES_DIR=$${VOXGUARD_SAMPLES_DIR:-$(SAMPLES)} scripts/bench_gpu.sh $(BENCH_OUT) $(PY)

# Known vulnerabilities in the installed dependencies (pip-audit); CI runs it after the tests.
audit: install
	$(PY) scripts/dependency_audit.py

# Robustness, overload, security and contract tests and the dependency audit, then docs/reliability.md.
reliability: install
	$(PY) -m pytest -q tests/robustness tests/test_contract.py
	$(PY) scripts/dependency_audit.py
	$(PY) scripts/reliability_report.py > docs/reliability.md
	@echo "wrote docs/reliability.md"

# The sample evaluation reports in docs/eval-report/ (docs/evaluation.md quotes them): the shared samples
# plus espeak-ng speech, AASIST and AASIST-L, the service's and the reference protocol (a few minutes on 2 cores).
EVAL_SET ?= build/eval-samples
eval-report: install
	rm -rf $(EVAL_SET) docs/eval-report
	$(PY) scripts/eval_sample_set.py $(SAMPLES) $(EVAL_SET)
	for model in aasist aasist-l; do \
		$(VENV)/bin/voxguard eval $(EVAL_SET) --model $$model --out docs/eval-report/$$model && \
		$(VENV)/bin/voxguard eval $(EVAL_SET) --model $$model --protocol reference --out docs/eval-report/$$model-reference \
		|| exit 1; \
	done

# voxguard's own detector (docs/training.md#voxguards-own-detector-specnet): the corpus (real speech from
# ../shared and Debian's Asterisk prompts, synthetic speech made here, channel copies; about 40 minutes on 2
# cores), then the recipe: leave-one-family-out SpecNet runs, the shipped model and the held-out figures
# against the official AASIST on the same files (about 1.5 hours on 2 cores). Needs the packages in
# scripts/corpus-packages.txt (apt-get install $$(cat scripts/corpus-packages.txt)).
CORPUS ?= build/corpus
DETECTOR_OUT ?= build/detector
corpus: install
	$(VENV)/bin/voxguard corpus --out $(CORPUS) --shared $(abspath ../shared)

detector: corpus
	$(PY) scripts/detector_recipe.py --corpus $(CORPUS) --out $(DETECTOR_OUT) --checkpoint-dir $(VOXGUARD_CHECKPOINT_DIR)

# Containers (docker/README.md). DOCKER_VARIANT=cpu builds the image for machines without a GPU (on
# Ubuntu instead of the CUDA base: the Dockerfile builds on the one BASE_IMAGE it is given);
# DOCKER_WEIGHTS=baked fetches the weights into the image instead of mounting checkpoints/;
# DOCKER_TORCH_INDEX_URL takes torch from a mirror (empty: the variant's default index);
# DOCKER_EXTRAS=whisper adds the package extra that specnet-whisper needs (empty: none).
DOCKER ?= docker
DOCKER_IMAGE ?= voxguard
DOCKER_VARIANT ?= gpu
DOCKER_WEIGHTS ?= mounted
DOCKER_BASE_IMAGE ?= $(if $(filter cpu,$(DOCKER_VARIANT)),ubuntu:24.04)
DOCKER_TORCH_INDEX_URL ?=
DOCKER_EXTRAS ?=
docker-build:
	$(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=$(DOCKER_VARIANT) \
		$(if $(DOCKER_BASE_IMAGE),--build-arg BASE_IMAGE=$(DOCKER_BASE_IMAGE)) \
		--build-arg TORCH_INDEX_URL=$(DOCKER_TORCH_INDEX_URL) --build-arg EXTRAS=$(DOCKER_EXTRAS) \
		--build-arg WEIGHTS=$(DOCKER_WEIGHTS) -t $(DOCKER_IMAGE):$(DOCKER_VARIANT) .

# One GPU replica on :8000 (compose.yaml -> docker/compose.yaml); the weights come from $(WEIGHTS_DIR).
up:
	@test -f $(WEIGHTS_DIR)/AASIST.pth || { echo "no AASIST.pth in $(WEIGHTS_DIR): run 'make weights' first"; exit 1; }
	VOXGUARD_CHECKPOINT_DIR=$(WEIGHTS_DIR) $(DOCKER) compose up

# The same without a GPU: the voxguard:cpu image (make docker-build DOCKER_VARIANT=cpu) on :8000.
up-cpu:
	@test -f $(WEIGHTS_DIR)/AASIST.pth || { echo "no AASIST.pth in $(WEIGHTS_DIR): run 'make weights' first"; exit 1; }
	VOXGUARD_CHECKPOINT_DIR=$(WEIGHTS_DIR) $(DOCKER) compose -f compose.yaml -f docker/compose.cpu.yaml up

# Two GPU replicas behind nginx on :8080 (VOXGUARD_GPU_2=0 puts both on one GPU).
up-scale:
	@test -f $(WEIGHTS_DIR)/AASIST.pth || { echo "no AASIST.pth in $(WEIGHTS_DIR): run 'make weights' first"; exit 1; }
	VOXGUARD_CHECKPOINT_DIR=$(WEIGHTS_DIR) $(DOCKER) compose --profile scale up

# The image built, run and composed on a real Docker engine (tests marked `docker`, tests/deploy/):
# needs a running daemon (scripts/start_dockerd.sh starts one as CI does), debootstrap and root;
# about 10 minutes and 13 GB of disk while it runs, all removed at the end.
test-docker: install
	$(PY) -m pytest -m docker tests/deploy

down:
	$(DOCKER) compose --profile scale down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
