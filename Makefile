# Thin wrapper around `python -m kit`: every variable given on the command line is passed on as
# key=value (`make fold=2 backbone=vgg16 epochs_head=3`). The first target that needs Python
# creates .venv and installs the kit there.
.DEFAULT_GOAL := train
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Kaggle's image (kit/kaggle-image.txt): a second venv on its Python, 3.12 (pyenv's, else the PATH's)
KAGGLE_VENV := .venv-kaggle
KAGGLE_PYTHON ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12) \
	$(shell command -v python3.12 2>/dev/null))

# key='value' for every command-line variable except the Makefile's own, quoted for the shell.
OWN := PYTHON VENV k slow KAGGLE_PYTHON KAGGLE_VENV
ARGS := $(strip $(foreach v,$(filter-out $(OWN),$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),$(v)='$(subst ','\'',$($(v)))')))

# tensorflow's wheel is 570 MB and a download can break off midway for good: pip resumes it, and
# when that fails a second or third install fetches it from the start.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(call install,$(PY),-e '.[dev]')
	touch $@

# $(call install,<python>,<pip install arguments>): up to 3 tries, each resuming broken downloads.
define install
for try in 1 2 3; do $(1) -m pip install --quiet --resume-retries 10 $(2) && break; \
	  [ $$try = 3 ] && exit 1; echo "install: try $$try of 3 failed, trying again" >&2; sleep 15; done
endef

# Exactly the image's versions (and pytest-xdist, a test tool the image lacks); nothing else.
$(KAGGLE_VENV)/.installed: kit/kaggle-image.txt
	@[ -n "$(KAGGLE_PYTHON)" ] || { echo "make test-kaggle needs Python 3.12, Kaggle's: pyenv install 3.12, or give KAGGLE_PYTHON=<its path>" >&2; exit 2; }
	$(KAGGLE_PYTHON) -m venv --clear $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(call install,$(KAGGLE_VENV)/bin/python,-r kit/kaggle-image.txt pytest-xdist==3.8.0)
	$(KAGGLE_VENV)/bin/python -m pip install --quiet pip==24.1.2  # the image's: kernels install wheels with it
	touch $@

# The wheels dataset's contents (make wheels), which the kernels of make test-kaggle attach.
$(KAGGLE_VENV)/kit-wheels/kit-wheels.json: kit/kaggle-wheels.txt $(VENV)/.installed $(KAGGLE_VENV)/.installed
	$(PY) -m kit wheels user=kit-tests runs_dir=$(KAGGLE_VENV)

.PHONY: train demo all predict cv ensemble validate download init submit kernel push kernels status collect \
	release publish inference-kernel submit-code infer wheels publish-wheels pseudo bench backbones lr-find folds \
	spec test test-fast test-kaggle lint install help

train: $(VENV)/.installed ## train one fold of one backbone: make fold=0 backbone=xception [competition=demo]
	$(PY) -m kit train $(ARGS)

demo: $(VENV)/.installed ## the whole job on the embedded demo competition (offline): make all competition=demo
	$(PY) -m kit all competition=demo $(ARGS)

all: $(VENV)/.installed ## every fold x member, cv, and the submission of the best honest CV: make all competition=<slug>
	$(PY) -m kit all $(ARGS)

predict: $(VENV)/.installed ## predict again with a trained fold (after changing tta): make predict fold=0 backbone=vgg16
	$(PY) -m kit predict $(ARGS)

cv: $(VENV)/.installed ## CV table of whatever runs exist; runs/<slug>/cv.csv and report.md
	$(PY) -m kit cv $(ARGS)

ensemble: $(VENV)/.installed ## a submission CSV under submissions/: make ensemble [method=auto|mean|rank|weighted|stack]
	$(PY) -m kit ensemble $(ARGS)

pseudo: $(VENV)/.installed ## pseudo-labels from round 1 and runs/<slug>/round2.yaml: make pseudo [pseudo_threshold=0.95]
	$(PY) -m kit pseudo $(ARGS)

validate: $(VENV)/.installed ## check a CSV against the sample submission: make validate file=submissions/x.csv
	$(PY) -m kit validate $(ARGS)

download: $(VENV)/.installed ## the competition's data into data/<slug>/: make download competition=<slug>
	$(PY) -m kit download $(ARGS)

submit: $(VENV)/.installed ## validate, then submit: make submit file=submissions/x.csv message="..." [dry_run=1]
	$(PY) -m kit submit $(ARGS)

kernel: $(VENV)/.installed ## a push-ready Kaggle kernel under runs/<slug>/kernels/: make kernel fold=0 backbone=xception
	$(PY) -m kit kernel $(ARGS)

push: $(VENV)/.installed ## build and push that kernel: make push fold=0 backbone=xception
	$(PY) -m kit push $(ARGS)

kernels: $(VENV)/.installed ## push one kernel per fold x backbone
	$(PY) -m kit kernels $(ARGS)

status: $(VENV)/.installed ## the state of each pushed kernel
	$(PY) -m kit status $(ARGS)

collect: $(VENV)/.installed ## finished kernels' outputs into runs/<slug>/ (then make cv, make ensemble)
	$(PY) -m kit collect $(ARGS)

release: $(VENV)/.installed ## code competitions: the ensemble as runs/<slug>/release/: make release method=weighted [members=a,b]
	$(PY) -m kit release $(ARGS)

publish: $(VENV)/.installed ## the release as the Kaggle dataset <user>/<slug>-models (created, then new versions)
	$(PY) -m kit publish $(ARGS)

inference-kernel: $(VENV)/.installed ## the offline kernel writing submission.csv: runs/<slug>/kernels/inference/
	$(PY) -m kit inference-kernel $(ARGS)

submit-code: $(VENV)/.installed ## push it, wait for COMPLETE, submit that version: make submit-code message="..."
	$(PY) -m kit submit-code $(ARGS)

infer: $(VENV)/.installed ## what the inference kernel does, here: the release on data/<slug>'s test images
	$(PY) -m kit infer $(ARGS)

wheels: $(VENV)/.installed ## what kernels may need beyond Kaggle's image (kit/kaggle-wheels.txt) as runs/kit-wheels/
	$(PY) -m kit wheels $(ARGS)

publish-wheels: $(VENV)/.installed ## runs/kit-wheels/ as the Kaggle dataset <user>/kit-wheels, attached by kernels that need it
	$(PY) -m kit publish-wheels $(ARGS)

bench: $(VENV)/.installed ## speed and memory against the kit's targets: table + runs/bench/bench.csv [quick=1: smoke run] [backbones=1]
	$(PY) -m kit bench $(ARGS)

lr-find: $(VENV)/.installed ## a phase's learning rate by a sweep (fold 0): make lr-find phase=finetune [backbone=...]
	$(PY) -m kit lr-find $(ARGS)

backbones: $(VENV)/.installed ## the registered backbones: sizes, top:K blocks, parameters, where their weights come from
	$(PY) -m kit backbones $(ARGS)

folds: $(VENV)/.installed ## make runs/<slug>/folds.csv
	$(PY) -m kit folds $(ARGS)

init: $(VENV)/.installed ## competitions/<slug>.yaml from data/<slug>/ (after make download): make init competition=<slug> [metric=...] [force=1]
	$(PY) -m kit init $(ARGS)

spec: $(VENV)/.installed ## print the resolved spec with overrides applied
	$(PY) -m kit spec $(ARGS)

test: $(VENV)/.installed ## every test, slow ones included, one process per core: make test [k=<name part>]
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15 -m 'not kaggle_image' $(if $(k),-k '$(k)')

test-fast: $(VENV)/.installed ## the tests that train no model beyond a step (under 2 minutes): for your loop
	$(PY) -m pytest -q -n auto --dist loadfile -m 'not slow and not kaggle_image' $(if $(k),-k '$(k)')

test-kaggle: $(VENV)/.installed $(KAGGLE_VENV)/.installed $(KAGGLE_VENV)/kit-wheels/kit-wheels.json ## on Kaggle's image (.venv-kaggle): the fast tests and every registry entry's blocks and cut, then kernels end to end [slow=1: every test]
	$(KAGGLE_VENV)/bin/python -m pytest -q -n auto --dist loadfile -rs $(if $(k),-k '$(k)') \
	  -m '$(if $(slow),not kaggle_image,(not slow or registry) and not kaggle_image)'
	KIT_KAGGLE_PYTHON=$(CURDIR)/$(KAGGLE_VENV)/bin/python KIT_KAGGLE_WHEELS=$(CURDIR)/$(KAGGLE_VENV)/kit-wheels \
	  $(PY) -m pytest -q -n auto --dist loadfile --durations=10 -m kaggle_image $(if $(k),-k '$(k)')

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check kit tests

install: $(VENV)/.installed ## create .venv and install the kit (done by any target on first use)

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-16s %s\n", $$1, $$2}'
