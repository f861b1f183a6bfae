#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, the GPU tests and the quick
# benchmarks, in under 8 minutes. Whenever a GPU is at hand, this is what runs;
# its results are committed and what it finds failing is fixed.
#
#   bash benchmarks/gpu_check.sh            # results into benchmarks/results/
#   RESULTS_DIR=$OUT bash benchmarks/gpu_check.sh
#   GPU_CHECK_DRY_RUN=1 PYTHON=.venv/bin/python RESULTS_DIR=/tmp/check bash benchmarks/gpu_check.sh
#
# It needs python3 with torch (CUDA), triton, numpy, matplotlib, tqdm, pytest and
# hypothesis, and installs nothing: GPU machines may have no network. tritonnet is
# staged into a temporary folder with kernels/ placed where an install puts it
# (tritonnet/kernels), so no pip install is needed either.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
results=${RESULTS_DIR:-$repo/benchmarks/results}
python=${PYTHON:-python3}
mkdir -p "$results"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$repo/tritonnet" "$repo/tests" "$repo/benchmarks" "$repo/pyproject.toml" "$stage/"
cp -r "$repo/kernels" "$stage/tritonnet/kernels"
cd "$stage"

export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 MPLBACKEND=Agg
device=$("$python" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')") \
    || { echo "gpu_check: $python cannot import torch" >&2; exit 2; }
# GPU_CHECK_DRY_RUN=1 walks the same steps on a CPU (the GPU cases skip), to check the script itself.
if [ "$device" = none ] && [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ]; then
    echo "gpu_check: no CUDA device visible to $python; nothing to check" >&2
    exit 2
fi
slug=$(echo "$device" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')
echo "gpu_check on $device"
log="$results/gpu_check_${slug}.log"
{ nvidia-smi -L 2>/dev/null; "$python" -m tritonnet info; } 2>&1 | tee "$log"

status=0
# Every operation's tests on the GPU (their tensors go to CUDA), and the GPU module.
timeout 240 "$python" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_gpu.py tests/test_linear_forward.py tests/test_linear_backward.py \
    tests/test_softmax.py tests/test_linear_cross_entropy.py $(ls tests/test_sgd.py tests/test_sigmoid.py tests/test_convergence.py 2>/dev/null) \
    tests/test_layers.py tests/test_model.py tests/test_functional.py tests/test_nn.py \
    --junitxml="$results/gpu_check_${slug}_tests.xml" 2>&1 | tee -a "$log" \
    || status=1

# Figures stay behind (plot.py redraws them from the CSVs): the device tool brings
# back at most 8 files, and the log, the test report and 4 CSVs fill 6 of them.
timeout 210 "$python" benchmarks/run.py --quick --results-dir "$results" --figures-dir "$stage/figures" \
    2>&1 | tee -a "$log" || status=1

echo "gpu_check: done on $device, status $status; results in $results"
exit $status
