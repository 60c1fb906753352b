#!/usr/bin/env bash
# The JAX backend on a GPU, as one run: which device, the JAX backend's tests on it, and
# bench/jax_speed.py's table (wall-clock time there). Needs a CUDA build of jax and the
# project's requirements (numpy, sympy, jinja2, scikit-learn for digits, torch for the oracle
# tests, pytest); nothing is installed.
#
#     bash bench/gpu.sh [OUTPUT_FOLDER]      # REPEATS=5 and JAX_PLATFORMS=cuda unless set
set -euo pipefail
out=${1:-.}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
# the multi-device test makes 8 CPU devices of its own; the extras test needs no device
python3 -m pytest -q -p no:cacheprovider tests/test_jax_backend.py tests/test_jax_normalization.py \
    -k "not eight_devices and not without_its_package" 2>&1 | tee "$out/gpu_tests.txt"
python3 bench/jax_speed.py --repeats "${REPEATS:-5}" --output "$out/jax_results_gpu.md"
