#!/bin/bash
# The device checks for a lent GPU, as one prepared script (docs/gpu.md):
#   bash benchmarks/gpu_check.sh OUT_DIR
# 1. install nnvis without dependencies into the machine's own torch (no network there;
#    openTSNE and captum, when needed, travel as wheels in .whl/);
# 2. the CUDA tests, verbose, with a JUnit file, so a cut-off run still names its failures;
# 3. the CPU-vs-GPU benchmark, printing each figure as it comes.
# Lessons of the first run: name each test as it finishes (-v), keep the tracebacks in a
# file, and give the tests most of the time limit (~4 minutes on an H100 in one process, 51 s
# with pytest-xdist's -n 6). Carry .whl/ (run's carry): without openTSNE, a requirement of nnvis,
# the registry loads none of nnvis's plugins and every test fails the same way.
set -u
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
python3 -c "import openTSNE" || { echo "openTSNE is missing: carry .whl/ (see the top of this script)"; exit 2; }
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${WORKERS:-6}")
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
NNVIS_CUDA_LOG="$out/cuda_deviations.jsonl" timeout "${TESTS_S:-360}" python3 -m pytest -v -p no:cacheprovider \
  $workers -m cuda tests/test_cuda.py -rfE --tb=short --junitxml="$out/cuda_tests.xml" > "$out/cuda_tests.log" 2>&1
echo "tests rc=$?"
grep -E "FAILED|ERROR|^E " "$out/cuda_tests.log" | head -60
timeout "${BENCH_S:-150}" python3 benchmarks/devices.py --models "${MODELS:-demo:64,resnet50:224,vit_b_16:224}" \
  --images 1 > "$out/devices.log" 2>&1
echo "benchmark rc=$?"
tail -60 "$out/devices.log"
