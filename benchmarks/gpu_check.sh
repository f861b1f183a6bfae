#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, or an AMD one with a ROCm build of
# torch (its GPU answers to torch.cuda there), the tuned table, the GPU tests, a
# 30-epoch training run and the quick benchmarks, in under 8 minutes. Whenever a
# GPU is at hand, this is what runs; its results are committed and what it finds
# failing is fixed.
#
#   bash benchmarks/gpu_check.sh            # results into benchmarks/results/
#   RESULTS_DIR=$OUT TRITONNET_DATA=.data TRITONNET_COMMIT=abc1234 bash benchmarks/gpu_check.sh
#   GPU_CHECK_DRY_RUN=1 PYTHON=$PWD/.venv/bin/python RESULTS_DIR=/tmp/check bash benchmarks/gpu_check.sh
#   GPU_CHECK_STEPS="bench op_tests" bash benchmarks/gpu_check.sh   # a rerun of some steps
#   GPU_CHECK_STEPS="graphs train" ...   # the CUDA-graph step alone: about 3 minutes
#   GPU_CHECK_STEPS=distributed ...       # torchrun on NCCL, one rank: under 2 minutes
#
# It needs python3 with torch (CUDA or ROCm), triton, numpy, matplotlib, tqdm, pytest and
# hypothesis, and installs nothing: GPU machines may have no network. tritonnet is
# staged into a temporary folder with kernels/ placed where an install puts it
# (tritonnet/kernels), so no pip install is needed either. Fashion-MNIST is read
# from TRITONNET_DATA when set (the device tool can carry it); without it the
# training run is skipped and the training benchmark uses random data.
#
# The steps run in order of what matters most, each under its own time limit, so a
# slow step costs only its own results. The default steps' limits add up to 8
# minutes; op_tests and compile are for a second run (GPU_CHECK_STEPS). It writes the
# log, the test reports, five CSVs, the training history and the tuned table
# (tuned_<gpu>.json, to commit as kernels/tuned/<gpu>.json); the device tool
# brings back at most 8 files, so GPU_CHECK_PACK=1 packs all but the log into
# one gpu_check_<gpu>_results.tar.gz (use it only with RESULTS_DIR=$OUT).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
results=$(mkdir -p "${RESULTS_DIR:-$repo/benchmarks/results}" && cd "${RESULTS_DIR:-$repo/benchmarks/results}" && pwd)
python=${PYTHON:-python3}
if [ -n "${TRITONNET_DATA:-}" ]; then
    export TRITONNET_DATA=$(cd "$TRITONNET_DATA" && pwd)
fi
# One run in the CSVs for all the benchmark scripts below (harness.Environment).
export TRITONNET_RUN_TIMESTAMP=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
export TRITONNET_COMMIT=${TRITONNET_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$repo/tritonnet" "$repo/tests" "$repo/benchmarks" "$repo/pyproject.toml" "$stage/"
cp -r "$repo/kernels" "$stage/tritonnet/kernels"
cd "$stage"

# PYTHONPATH: the benchmark scripts (run by path) and the compile tests' child
# processes import tritonnet from the staging folder.
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 MPLBACKEND=Agg PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
device=$("$python" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')") \
    || { echo "gpu_check: $python cannot import torch" >&2; exit 2; }
# GPU_CHECK_DRY_RUN=1 walks the same steps on a CPU (the GPU cases skip), to check the script itself.
if [ "$device" = none ] && [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ]; then
    echo "gpu_check: no CUDA device visible to $python; nothing to check" >&2
    exit 2
fi
slug=$(echo "$device" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')
log="$results/gpu_check_${slug}.log"
: >"$log"
status=0

# The steps to run, by name (default: tune gpu_tests train bench, which fit 8
# minutes): also op_tests, compile, graphs, a short check of the CUDA-graph
# training step alone, and distributed, torchrun with one NCCL rank.
steps=" ${GPU_CHECK_STEPS:-tune gpu_tests train bench} "
wanted() { [[ $steps == *" $1 "* ]]; }

# step LIMIT_SECONDS COMMAND...: one step, logged with its time and exit status.
step() {
    local limit=$1
    shift
    echo "== [$(date -u +%T)] $* (limit ${limit}s)" | tee -a "$log"
    local started=$SECONDS
    # SIGINT first: pytest still writes its report of the tests that finished,
    # and the benchmarks keep the rows they appended.
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local code=${PIPESTATUS[0]}
    echo "== exit $code after $((SECONDS - started))s" | tee -a "$log"
    [ "$code" = 0 ] || status=1
}

echo "gpu_check on $device, commit $TRITONNET_COMMIT, run $TRITONNET_RUN_TIMESTAMP" | tee -a "$log"
{ nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null; "$python" -m tritonnet info; } 2>&1 | tee -a "$log"

pytest=("$python" -m pytest -q -p no:cacheprovider -m "not slow" -rs --durations=15)

# 0. This GPU's tuned table at the batches the later steps run, into the staged
# package, where they read it (their first calls then skip autotuning), and a copy
# to the results. A run cut short keeps the batches it finished.
if wanted tune; then
    step 40 "$python" benchmarks/tune.py --quick
    cp tritonnet/kernels/tuned/"$slug".json "$results/tuned_${slug}.json" 2>/dev/null
fi

# 1. The compiled, tuned kernels at the exercise's shapes, ieee/tf32/bf16, and training.
if wanted gpu_tests; then
    step 145 "${pytest[@]}" tests/test_gpu.py tests/test_launch.py --junitxml="$results/gpu_check_${slug}_tests_gpu.xml"
fi

# The CUDA-graph training steps (one step, and many steps, per replay) against the
# eager one: correct, then timed beside PyTorch's own whole-step graph.
if wanted graphs; then
    step 60 "${pytest[@]}" tests/test_gpu.py -k "cuda_graph or training or epoch_graph" \
        --junitxml="$results/gpu_check_${slug}_tests_gpu.xml"
    step 75 "$python" benchmarks/bench_training.py --quick --results-dir "$results" \
        --providers tritonnet,tritonnet-cuda-graph,tritonnet-epoch-graph,torch-eager,torch-cuda-graph
fi

# 2. The exercise's 30 epochs through the Triton backend, on the GPU.
if ! wanted train; then
    :
elif [ -n "${TRITONNET_DATA:-}" ]; then
    step 30 "$python" -m tritonnet train --dataset fashion-mnist --backend triton --device cuda \
        --epochs 30 --no-progress --out "$stage/run"
    cp "$stage/run/history.json" "$results/gpu_check_${slug}_train_history.json" 2>/dev/null
else
    echo "== training run skipped: TRITONNET_DATA is not set" | tee -a "$log"
fi

# 2b. Data-parallel on NCCL: torchrun with one rank, the step and its all-reduce
# replayed from a CUDA graph, against the one-process run of the same epoch.
if ! wanted distributed; then
    :
elif [ -n "${TRITONNET_DATA:-}" ]; then
    epoch=(train --dataset fashion-mnist --backend triton --device cuda --epochs 1 --no-progress)
    step 45 "$python" -m tritonnet "${epoch[@]}" --out "$stage/run_one"
    step 45 "$python" -m torch.distributed.run --standalone --nproc_per_node=1 -m tritonnet "${epoch[@]}" \
        --out "$stage/run_nccl"
    step 15 "$python" - "$stage/run_one" "$stage/run_nccl" <<'PYTHON'
import json, sys, torch
one, nccl = (torch.load(f"{run}/checkpoint.pt", weights_only=True) for run in sys.argv[1:])
history = json.load(open(f"{sys.argv[2]}/history.json"))
gap = max((one["parameters"][k] - nccl["parameters"][k]).abs().max().item() for k in one["parameters"])
accuracy = [run["history"][-1]["test_accuracy"] for run in (one, nccl)]
print(f"world size {history['world_size']}; largest weight difference {gap:.3g}; test accuracy {accuracy}")
sys.exit(0 if history["world_size"] == 1 and gap < 1e-3 and abs(accuracy[0] - accuracy[1]) < 5e-3 else 1)
PYTHON
else
    echo "== data-parallel run skipped: TRITONNET_DATA is not set" | tee -a "$log"
fi

# 3. The quick benchmarks: first the host cost per call of every operation against
# its torch twin, then every kernel at batches 1024, 4096 and 16384 in fp32 (ieee,
# TF32) and bf16, with short do_bench windows and no torch.compile rows (its
# compiles take minutes: step 5 times the training step alone).
if wanted bench; then
    step 25 "$python" benchmarks/bench_launch.py --quick --results-dir "$results"
    fast="tritonnet,torch-eager,torch-mm"
    step 40 "$python" benchmarks/bench_linear.py --quick --results-dir "$results" --providers "$fast"
    step 20 "$python" benchmarks/bench_softmax.py --quick --results-dir "$results" --providers tritonnet,torch-eager,torch-copy
    step 25 "$python" benchmarks/bench_output_layer.py --quick --results-dir "$results" --providers "$fast"
    # The graphed providers add their GPU kernel time per step (one profiled epoch each).
    step 65 "$python" benchmarks/bench_training.py --quick --results-dir "$results" \
        --providers tritonnet,tritonnet-cuda-graph,tritonnet-epoch-graph,tritonnet-module,torch-eager,torch-cuda-graph,exercise-style
    # The graphed step with its split-K forward, its SGD epilogue and its one-launch
    # backward of the narrow layers each on and off, and with PDL: which to keep; and
    # the whole step as one persistent kernel (its compile and PDL's builds take part
    # of the 45 s; bench_linear took 19 s of its 40).
    step 45 "$python" benchmarks/bench_step_variants.py --quick --results-dir "$results" --batch-sizes 64
    # The graphed steps in TF32 and in bf16 (autocast for torch), at batch 64: rows of their own.
    for precision in fp32-tf32 bf16; do
        step 20 "$python" benchmarks/bench_training.py --quick --results-dir "$results" --precision "$precision" \
            --batch-sizes 64 --epochs 1 --providers tritonnet-epoch-graph,torch-cuda-graph
    done
fi

# 4. Every operation's tests with their tensors on the GPU (conftest.TEST_DEVICE).
# One fixed config per kernel: autotuning each of hundreds of random shapes would
# take minutes; step 1 covers the autotuned configs. The compile-and-spill tests
# need no GPU: CI runs them. On the H200 the first 82% took 120 s (2026-11-27).
if wanted op_tests; then
    TRITONNET_AUTOTUNE=0 step 200 "${pytest[@]}" -k "not without_spills" \
        tests/test_linear_forward.py tests/test_linear_backward.py tests/test_softmax.py \
        tests/test_cross_entropy.py tests/test_linear_cross_entropy.py tests/test_sgd.py \
        tests/test_sigmoid.py tests/test_layers.py tests/test_model.py tests/test_functional.py \
        tests/test_nn.py --junitxml="$results/gpu_check_${slug}_tests_ops.xml"
fi

# 5. torch.compile, with the time left.
if wanted compile; then
    step 60 "$python" benchmarks/bench_training.py --quick --results-dir "$results" \
        --providers torch-compile,torch-compile-reduce-overhead
    # Its autotuning takes minutes at worst: batch 64 alone, and a timeout costs only its rows.
    step 60 "$python" benchmarks/bench_training.py --quick --results-dir "$results" --batch-sizes 64 \
        --providers torch-compile-max-autotune
fi

step 10 "$python" benchmarks/report.py --results-dir "$results"
if [ "${GPU_CHECK_PACK:-0}" = 1 ]; then
    (cd "$results" && files=$(find . -maxdepth 1 -type f ! -name "gpu_check_${slug}.log" ! -name '*.tar.gz' | sort) \
        && [ -n "$files" ] && tar czf "gpu_check_${slug}_results.tar.gz" $files && rm -f $files)
fi
echo "gpu_check: done on $device, status $status; results in $results" | tee -a "$log"
exit $status
