# cifar-bench: make setup | bench | test | data | image | lock | cluster-up | cluster-down | clean
# Run `make help` for what each target does.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# The real CIFAR-10 images shipped beside the repository; override with BENCH_DATA=PATH.
BENCH_DATA ?= $(abspath ../shared/data/cifar10-jpeg.tar.gz)
PRESET ?= cpu
STAMP  := $(shell date -u +%Y%m%dT%H%M%SZ)
RUNS   ?= runs/bench-$(STAMP)
BENCH_ARGS ?=
# Repeats of each case (a fresh process each), interleaved: round 1 of every case, then round 2, ...
# 3 or more for a baseline. RUNS has one writer at a time (a second make bench into it stops, exit 2).
ROUNDS ?= 1

# Where `make data` stages the data set and its decoded cache.
DATA_DIR ?= data

.PHONY: help setup bench test lock data image container-tools browser-tools cluster-up cluster-down clean parity gpu-check

help:
	@echo "make setup        create $(VENV) with the locked dependencies (requirements.lock: torch, lightning, ...;"
	@echo "                  about 6 GB on disk, 2-5 minutes the first time; a no-op while the lock is unchanged)"
	@echo "make bench        the main job: baseline, dp, ddp on real CIFAR-10 (PRESET=$(PRESET)), JSON in runs/"
	@echo "                  BENCH_DATA=PATH  PRESET=smoke|cpu|full  RUNS=DIR  ROUNDS=N  BENCH_ARGS='--epochs 1 ...' (to cifar-bench run)"
	@echo "make test         start the local Slurm cluster and run every test (about 25 minutes on 2 cores)"
	@echo "make data         stage CIFAR-10 once (login node): DATA_DIR=dir [ARCHIVE=file] -> decoded cache in DATA_DIR/cache"
	@echo "make image        build cifar.sif (Apptainer; IMAGE_FROM=docker via the Dockerfile; CUDA_VARIANT=cu130|cu128|cu126)"
	@echo "make lock         regenerate requirements.lock from requirements.in (pip-compile, hashes)"
	@echo "make cluster-up / cluster-down   start / stop the local 2-node Slurm cluster used by the tests"
	@echo "make clean        delete runs/ and .benchmarks/ (results of earlier runs)"
	@echo "make parity       product vs bare Lightning vs a hand-written loop, in turns (PAIRS=5 SLICE_S=1; docs/performance.md)"
	@echo "make gpu-check    the prepared GPU check from the source tree (GPU_PYTHON=python3; docs/performance.md)"

setup: $(VENV)/.installed

# Exactly the lock, hash-checked, no resolver: CI and the container install the same files.
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "setup: installing $$(grep -c '^[A-Za-z0-9]' requirements.lock) locked packages (torch, lightning, torchvision, ...;" \
	  "6 GB on disk) into $(VENV): 2-5 minutes the first time, longer on a slow network"
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install --quiet --quiet --require-hashes --no-deps -r requirements.lock && \
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable . && \
	echo "setup: done in $$(( $$(date +%s) - start )) s; commands: $(BIN)/cifar-bench, $(BIN)/pytest, $(BIN)/tensorboard" \
	  "(or: source $(BIN)/activate)"
	@touch $@

# The run itself checks BENCH_DATA, PRESET and BENCH_ARGS: a bad value stops the suite with the run's
# own one-line error and its exit status (2), and no suite.json is written.
# A link "latest" beside the results folder (runs/latest by default) names the newest folder that received
# results, so that `cifar-bench table runs/latest/*.json` is that run alone; `trap : INT TERM` keeps this shell alive after Ctrl-C (the
# suite and its run still get the signal) so an interrupted run's folder is linked too.
SUITE = BENCH_DATA="$(BENCH_DATA)" $(BIN)/python -m pytest suite -p no:cacheprovider -q -rN \
  --bench-preset $(PRESET) --bench-rounds $(ROUNDS) --bench-out $(RUNS) --benchmark-json $(RUNS)/suite.json$(foreach arg,$(BENCH_ARGS), --bench-arg=$(arg))
bench: setup
	@[ -n "$(strip $(RUNS))" ] || { echo "make bench: RUNS is empty: name the results folder, e.g. RUNS=runs/mine" >&2; exit 2; }
	@[ "$(notdir $(patsubst %/,%,$(RUNS)))" != latest ] || { echo "make bench: RUNS=$(RUNS) is the link to the newest results: name a new folder, e.g. RUNS=runs/mine" >&2; exit 2; }
	@echo '$(SUITE)'
	@trap : INT TERM; marker=$$(mktemp); $(SUITE); \
	status=$$?; runs="$(patsubst %/,%,$(RUNS))"; \
	if [ -n "$$(find -H "$$runs" -maxdepth 1 -name '*.json' -newer "$$marker" -print -quit 2>/dev/null)" ]; then \
	  ln -sfn "$$(basename "$$runs")" "$$(dirname "$$runs")/latest" && \
	  echo "results: $$runs/ = $$(dirname "$$runs")/latest/ (one JSON per case; suite.json unless the suite failed)"; fi; \
	rm -f "$$marker"; exit $$status

test: setup cluster-up container-tools browser-tools
	BENCH_DATA="$(BENCH_DATA)" $(BIN)/python -m pytest -p no:cacheprovider -ra tests suite \
	  --bench-preset smoke --bench-out runs/test-suite-$(STAMP)

# Download (MD5-checked) into DATA_DIR, or use ARCHIVE=path given by the user; then decode once
# into DATA_DIR/cache. Jobs read it with BENCH_DATA=<same data path> BENCH_CACHE=DATA_DIR/cache.
data: setup
	@if [ -n "$(ARCHIVE)" ]; then src="$(abspath $(ARCHIVE))"; \
	else $(BIN)/cifar-bench data download "$(DATA_DIR)" && src="$(abspath $(DATA_DIR))"; fi; \
	$(BIN)/cifar-bench data prepare --data "$$src" --cache-dir "$(abspath $(DATA_DIR))/cache" && \
	echo "staged: export BENCH_DATA=$$src BENCH_CACHE=$(abspath $(DATA_DIR))/cache"

lock:
	$(PYTHON) -m venv .venv-tools && .venv-tools/bin/pip install --quiet pip-tools
	.venv-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-find-links --no-emit-index-url -o requirements.lock requirements.in

cluster-up:
	slurm/cluster.sh up

cluster-down:
	slurm/cluster.sh down

clean:
	rm -rf runs .benchmarks

# cifar.sif, the Apptainer image for the cluster (apptainer.def; IMAGE_FROM=docker builds it via
# the Dockerfile; CUDA_VARIANT=cu130|cu128|cu126; SIF=path; container/build-image.sh lists the rest).
# Stops with status 2 where apptainer is missing.
SIF ?= cifar.sif
image:
	bash container/build-image.sh $(SIF)

# What the image tests (tests/test_containers.py, test_apptainer.py; marker `container`) need:
# podman, runc (this machine's runtime; crun cannot run here) and debootstrap (the stand-in base),
# and Apptainer: the site's where `apptainer` is on PATH and is not ours, else Debian sid's
# installed into a tree with a host-side `apptainer` command (container/apptainer-install.sh; about
# 2 minutes once, then a few seconds; its failure says "apptainer install failed" and exits 3).
CONTAINER_TOOLS := podman runc debootstrap
container-tools:
	@missing=""; for t in $(CONTAINER_TOOLS); do command -v $$t >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make test needs$$missing: apt-get install -y podman runc debootstrap (as root)"; exit 2; fi; \
	  echo "installing$$missing (apt-get) for the image tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CONTAINER_TOOLS) >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CONTAINER_TOOLS) >/dev/null; }; \
	fi
	@site=$$(command -v apptainer 2>/dev/null || true); \
	if [ -n "$$site" ] && ! grep -q apptainer-install.sh "$$site" 2>/dev/null; then echo "container-tools: the site's $$($$site --version) ($$site)"; \
	elif [ "$$(id -u)" = 0 ]; then bash container/apptainer-install.sh; \
	else echo "make test needs Apptainer: install the site's, or run 'bash container/apptainer-install.sh' as root"; exit 2; fi

# What the history page's browser test (tests/test_history_page.py) needs: Debian's chromium and its
# chromedriver (about 1 minute to install once; its failure says "browser install failed" and exits 3).
BROWSER_TOOLS := chromium chromium-driver
browser-tools:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" != 0 ]; then echo "make test needs chromium and chromedriver: apt-get install -y $(BROWSER_TOOLS) (as root)"; exit 2; fi; \
	echo "installing $(BROWSER_TOOLS) (apt-get) for the history page's browser test"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_TOOLS) >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_TOOLS) >/dev/null; } \
	  || { echo "browser install failed (apt-get install $(BROWSER_TOOLS))"; exit 3; }

# Parity benchmark (docs/performance.md): not a test; prints median ratios with 95 % CIs. A round's
# sides run together in turns of SLICE_S seconds (0: one after the other, also images/s over epochs).
PAIRS ?= 5
SLICE_S ?= 1
parity: setup
	BENCH_DATA="$(BENCH_DATA)" $(BIN)/python -m bench.selfcheck.parity --preset $(PRESET) --pairs $(PAIRS) --slice-s $(SLICE_S) --out runs/parity-$(STAMP)

# The GPU check runs in the GPU machine's own Python (GPU_PYTHON) from this source tree; the data
# archive travels in the ignored folder .gpu-check/.
GPU_PYTHON ?= python3
gpu-check:
	@mkdir -p .gpu-check/site && { test -e .gpu-check/$(notdir $(BENCH_DATA)) || cp "$(BENCH_DATA)" .gpu-check/; }
	@# tabulate (pure Python, the lock's version) travels too: bench imports it, a lent machine may lack it
	@test -d .gpu-check/site/tabulate || cp -r $(VENV)/lib/python*/site-packages/tabulate .gpu-check/site/ 2>/dev/null || true
	PYTHONPATH="$(CURDIR):$(CURDIR)/.gpu-check/site" $(GPU_PYTHON) -m bench.selfcheck.gpu_check --data .gpu-check/$(notdir $(BENCH_DATA)) --out runs/gpu-check-$(STAMP)
