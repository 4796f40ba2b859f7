#!/usr/bin/env bash
# GPU checks in one go (about 7 minutes on an H100): golden tests and training in every precision on
# cuda, engine benchmarks with and without CUDA graphs, serving under wrk, replicas per GPU, bf16 agreement.
# Usage: scripts/bench_gpu.sh OUT_DIR [PYTHON]
# Needs VOXGUARD_CHECKPOINT_DIR (weights + golden.npz) and VOXGUARD_SAMPLES_DIR.
set -uo pipefail
out=${1:-bench-results}
py=${2:-python3}
mkdir -p "$out"
status=0
# Each step is a pipeline into tee (a subshell): pipefail gives its status to the `|| status=1` after it.
run() { echo "+ $*" >&2; "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
VOXGUARD_TEST_DEVICE=cuda run "$py" -m pytest -q -p no:cacheprovider tests/test_model.py tests/test_inference.py \
  2>&1 | tee "$out/gpu-tests.txt" || status=1
# Training on the GPU: fp32, bf16 autocast and fp16 with a gradient scaler, each trained, resumed and loaded.
VOXGUARD_TEST_DEVICE=cuda run "$py" -m pytest -q -p no:cacheprovider tests/test_training_device.py \
  -o log_cli=true --log-cli-level=INFO 2>&1 | tee "$out/gpu-training.txt" || status=1
# The service under wrk (it must be on the device machine's PATH: carry the Debian package), against the
# framework floor, for the fp32 and bf16 engines with CUDA graphs.
for engine in fast bf16; do
  run timeout 200 "$py" -m voxguard.cli bench serve --device cuda --engine $engine --connections 64 --duration 15 \
    --json | tee "$out/serve-cuda-$engine.json" || status=1
done
# Replicas sharing the GPU, each its own process (host side), each under its own wrk.
run timeout 300 "$py" -m voxguard.cli bench replicas --device cuda --engine bf16 --replicas 1,2,4 --connections 64 \
  --duration 15 --json | tee "$out/replicas-cuda.json" || status=1
for graphs in cuda-graphs no-cuda-graphs; do
  run "$py" -m voxguard.cli bench model --device cuda --$graphs --batch-sizes 1,16,64,256 --repeat 10 --json \
    | tee "$out/model-aasist-$graphs.json" || status=1
done
run "$py" -m voxguard.cli bench model --model aasist-l --device cuda --batch-sizes 1,64,256 --repeat 10 --json \
  | tee "$out/model-aasist-l.json" || status=1
samples=("$VOXGUARD_SAMPLES_DIR"/*.flac "$VOXGUARD_SAMPLES_DIR"/*.mp3 "$VOXGUARD_SAMPLES_DIR"/derived/*)
run "$py" -m voxguard.cli bench agreement --engine bf16 --device cuda "${samples[@]}" --json \
  | tee "$out/agreement-bf16-cuda.json" || status=1
exit $status
