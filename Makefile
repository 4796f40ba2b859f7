# voxguard: `make run` serves, `make test` tests; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_WEIGHTS := $(abspath ../shared/aasist)
# The official weights: ../shared/aasist when present (CI, this workspace), else checkpoints/.
SAMPLES ?= $(abspath ../shared/samples)
export VOXGUARD_CHECKPOINT_DIR ?= $(if $(wildcard $(SHARED_WEIGHTS)/AASIST.pth),$(SHARED_WEIGHTS),$(abspath checkpoints))

.PHONY: install test test-fast lint format weights run run-tls certs bench bench-gpu reliability eval-report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

weights: install
	$(VENV)/bin/voxguard weights --dir checkpoints

CERT_DIR ?= certs
certs: $(CERT_DIR)/cert.pem

$(CERT_DIR)/cert.pem:
	mkdir -p $(CERT_DIR)
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
		-keyout $(CERT_DIR)/key.pem -out $(CERT_DIR)/cert.pem 2>/dev/null
	chmod 600 $(CERT_DIR)/key.pem
	@echo "wrote $(CERT_DIR)/cert.pem and $(CERT_DIR)/key.pem (self-signed, localhost)"

# Fetch weights only when missing, then serve on http://localhost:8000 (Swagger UI at /docs).
run: install
	@test -f $(VOXGUARD_CHECKPOINT_DIR)/AASIST.pth || $(VENV)/bin/voxguard weights --dir $(VOXGUARD_CHECKPOINT_DIR)
	$(VENV)/bin/voxguard serve --host 0.0.0.0 --port 8000

# HTTPS with the self-signed certificate from `make certs`.
run-tls: install certs
	@test -f $(VOXGUARD_CHECKPOINT_DIR)/AASIST.pth || $(VENV)/bin/voxguard weights --dir $(VOXGUARD_CHECKPOINT_DIR)
	$(VENV)/bin/voxguard serve --host 0.0.0.0 --port 8443 --certfile $(CERT_DIR)/cert.pem --keyfile $(CERT_DIR)/key.pem

bench: install
	$(VENV)/bin/voxguard bench model --batch-sizes 1,16 --repeat 3

# GPU run: golden tests on cuda, engine, serving and bf16-agreement benchmarks (about 5 minutes on an H100).
# Where torch and the dependencies are installed without the venv: make bench-gpu PY=python3
BENCH_OUT ?= bench-results
bench-gpu:
	VOXGUARD_SAMPLES_DIR=$${VOXGUARD_SAMPLES_DIR:-$(SAMPLES)} scripts/bench_gpu.sh $(BENCH_OUT) $(PY)

# Robustness, overload, security and contract tests, then docs/reliability.md from their figures.
reliability: install
	$(PY) -m pytest -q tests/robustness tests/test_contract.py
	@mkdir -p test-artifacts
	@( $(VENV)/bin/pip-audit --progress-spinner off --skip-editable -l > test-artifacts/pip-audit.raw 2>&1; \
		status=$$?; unaudited=$$(grep -c "could not be audited" test-artifacts/pip-audit.raw); \
		if [ $$unaudited -gt 0 ]; then echo "pip-audit could not audit $$unaudited packages: their vulnerability data was not reachable from this machine, so this run proves nothing either way."; \
		elif [ $$status -eq 0 ]; then echo "pip-audit found no known vulnerabilities."; \
		else echo "pip-audit reported findings (exit $$status); each must be fixed or documented here:"; fi; \
		echo; echo '```'; tail -n 8 test-artifacts/pip-audit.raw; echo '```' ) > test-artifacts/pip-audit.txt
	$(PY) scripts/reliability_report.py > docs/reliability.md
	@echo "wrote docs/reliability.md"

# The sample evaluation reports in docs/eval-report/ (docs/evaluation.md quotes them): the shared samples
# plus espeak-ng speech, AASIST and AASIST-L, reference and whole-file protocols (a few minutes on 2 cores).
EVAL_SET ?= build/eval-samples
eval-report: install
	rm -rf $(EVAL_SET) docs/eval-report
	$(PY) scripts/eval_sample_set.py $(SAMPLES) $(EVAL_SET)
	for model in aasist aasist-l; do \
		$(VENV)/bin/voxguard eval $(EVAL_SET) --model $$model --out docs/eval-report/$$model && \
		$(VENV)/bin/voxguard eval $(EVAL_SET) --model $$model --whole-file --out docs/eval-report/$$model-whole-file \
		|| exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
