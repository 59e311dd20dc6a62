# Thin wrapper around `python -m kit`: every variable given on the command line is passed on as
# key=value (`make fold=2 backbone=vgg16 epochs_head=3`). The first target that needs Python
# creates .venv and installs the kit there.
.DEFAULT_GOAL := train
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# key='value' for every command-line variable except the Makefile's own, quoted for the shell.
OWN := PYTHON VENV k
ARGS := $(strip $(foreach v,$(filter-out $(OWN),$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),$(v)='$(subst ','\'',$($(v)))')))

# tensorflow's wheel is 570 MB and a download can break off midway for good: pip resumes it, and
# when that fails a second or third install fetches it from the start.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	for try in 1 2 3; do $(PY) -m pip install --quiet --resume-retries 10 -e '.[dev]' && break; \
	  [ $$try = 3 ] && exit 1; echo "install: try $$try of 3 failed, trying again" >&2; sleep 15; done
	touch $@

.PHONY: train demo all predict cv ensemble validate download submit kernel push kernels status collect \
	release publish inference-kernel submit-code infer pseudo bench backbones lr-find folds spec test test-fast lint install help

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

bench: $(VENV)/.installed ## speed and memory against the kit's targets: table + runs/bench/bench.csv [quick=1: smoke run] [backbones=1]
	$(PY) -m kit bench $(ARGS)

lr-find: $(VENV)/.installed ## a phase's learning rate by a sweep (fold 0): make lr-find phase=finetune [backbone=...]
	$(PY) -m kit lr-find $(ARGS)

backbones: $(VENV)/.installed ## the registered backbones: sizes, top:K blocks, parameters, where their weights come from
	$(PY) -m kit backbones $(ARGS)

folds: $(VENV)/.installed ## make runs/<slug>/folds.csv
	$(PY) -m kit folds $(ARGS)

spec: $(VENV)/.installed ## print the resolved spec with overrides applied
	$(PY) -m kit spec $(ARGS)

test: $(VENV)/.installed ## every test, slow ones included, one process per core: make test [k=<name part>]
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15 $(if $(k),-k '$(k)')

test-fast: $(VENV)/.installed ## the tests that train no model beyond a step (under 2 minutes): for your loop
	$(PY) -m pytest -q -n auto --dist loadfile -m 'not slow' $(if $(k),-k '$(k)')

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check kit tests

install: $(VENV)/.installed ## create .venv and install the kit (done by any target on first use)

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-16s %s\n", $$1, $$2}'
