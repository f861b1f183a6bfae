# The two Quick-start commands, `make demo` and `make test`, work on a fresh
# machine: they create .venv, install torch (a CUDA build where `nvidia-smi`
# finds a GPU, the CPU build torch==2.13.0 elsewhere), triton and tritonnet, and
# find or install the data.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0
TORCH_GPU ?= torch
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo sweep figures test test-gpu bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install -q "$(TORCH_GPU)"; \
	else \
		$(BIN)/pip install -q "$(TORCH_CPU)"; \
	fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# Fashion-MNIST from Debian's package where apt can install it (tests and the
# offline fallback need it); MNIST itself downloads on first use where online.
data:
	@if [ ! -d $(FASHION_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

# The exercise's main job: 30 epochs at lr 0.1, batch 64, with the loss and accuracy figures.
# Run again, demo and sweep continue their runs (after Ctrl-C) or, if finished, redraw the figures.
demo: setup data
	$(BIN)/tritonnet train --epochs 30 --out runs/train $$(test -f runs/train/checkpoint.pt && echo --resume)

sweep: setup data
	$(BIN)/tritonnet sweep --lrs 1,0.5,0.25,0.01,0.001 --epochs 30 --out runs/sweep $$(test -d runs/sweep && echo --resume)

# The committed figures/: a 30-epoch run and the learning-rate sweeps on Fashion-MNIST,
# trained again over the runs of a previous `make figures` (--overwrite).
figures: setup data
	$(BIN)/tritonnet train --dataset fashion-mnist --epochs 30 --out runs/fashion-mnist --figures-dir figures --overwrite
	$(BIN)/tritonnet sweep --dataset fashion-mnist --epochs 30 --out runs/fashion-mnist-sweep --figures-dir figures --overwrite
	$(BIN)/tritonnet sweep --dataset fashion-mnist --epochs 30 --grad-scale features \
		--out runs/fashion-mnist-sweep-features --figures-dir figures --overwrite
	cp runs/fashion-mnist/history.json figures/fashion-mnist_history.json
	cp runs/fashion-mnist-sweep/sweep.json figures/fashion-mnist_lr_sweep.json
	cp runs/fashion-mnist-sweep-features/sweep.json figures/fashion-mnist_lr_sweep_grad-scale-features.json

test: setup data
	$(BIN)/python -m pytest -q

# On a machine with an NVIDIA GPU: GPU tests plus the quick benchmarks.
test-gpu: setup
	bash benchmarks/gpu_check.sh

bench: setup data
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
