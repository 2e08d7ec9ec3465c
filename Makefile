# The two commands of the README:
#   make book   set up .venv and build the HTML book from the kept small-profile executions (book/small/)
#   make test   set up .venv, write the sample data, run the unit tests and the notebooks (nbval, tiny)
# The locks are resolved for CPython 3.11: use python3.11 where it is installed.
PYTHON  ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV    := .venv
PY      := $(VENV)/bin/python
RUNS_SMALL := _build/runs/small
export EOBOOK_DATA_DIR := $(CURDIR)/data/sample
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# Passive OpenMP waits: spinning threads starve each other when test workers or kernels share the cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book book-small test setup data lab lock clean

# One lock per platform, all with the same versions (`make lock` writes them; `make setup LOCK=name` overrides
# the choice): macOS arm64 -> macos-arm64 (PyPI's torch there is the CPU/MPS build). Linux x86_64 -> linux-cuda
# (PyPI's torch, a CUDA build that also runs on CPUs) where an NVIDIA driver is loaded, where .venv already holds
# that build (an environment keeps its torch) or in CI (CI tests this reference set); otherwise linux-cpu
# (PyTorch's CPU builds, a tenth of the download) once that lock exists.
PLATFORM  := $(shell uname -s)-$(shell uname -m)
CUDA_HINT := $(or $(wildcard /proc/driver/nvidia/version),$(filter-out %+cpu.dist-info,$(wildcard $(VENV)/lib/python3*/site-packages/torch-*.dist-info)),$(filter true,$(CI)))
ifeq ($(PLATFORM),Darwin-arm64)
  AUTO_LOCK := macos-arm64
else ifeq ($(PLATFORM),Linux-x86_64)
  AUTO_LOCK := $(if $(CUDA_HINT),linux-cuda,$(if $(wildcard requirements-lock-linux-cpu.txt),linux-cpu,linux-cuda))
endif
LOCK     ?= $(AUTO_LOCK)
LOCKFILE := requirements-lock-$(LOCK).txt
STAMP    := $(VENV)/.eobook-installed-$(LOCK)

setup: $(STAMP)

# Install the locked set once (pip checks every file against the lock's hashes); again only when the lock,
# pyproject.toml or setup.py changes.
$(STAMP): pyproject.toml setup.py $(LOCKFILE)
	@test -n "$(LOCK)" || { echo "make setup: no lock for $(PLATFORM); use 'pip install -e .[test,book]' (pyproject's ranges)"; exit 1; }
	@echo "make setup: $(LOCKFILE)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; sys.version_info[:2] == (3, 11) or print("make setup: the locks are resolved for CPython 3.11, .venv has", sys.version.split()[0])'
	$(PY) -m pip install -q "pip>=24" "setuptools>=77"
	$(PY) -m pip install -q -r $(LOCKFILE)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	rm -f $(VENV)/.eobook-installed*
	touch $@

# The embedded synthetic sample world (seeded; written once, in seconds).
data: setup
	$(PY) -m eobook data world --size tiny --seed 0

test: data
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# The book renders the kept executions of the small profile (book/small/, with what produced them) without
# running anything: offline, in a few minutes. `make book-small` re-executes them (CHAPTER=name for one).
book: setup
	$(PY) -m eobook book-assets --book book
	$(VENV)/bin/jupyter-book build book --config _config.yml -W -n --keep-going --path-output .
	@echo "The book is at _build/html/index.html"

# Every seed of SEEDS runs; the first seed's executed notebook is kept, the others' verdicts beside it.
CHAPTER ?= all
SEEDS   ?= 0 1 2
book-small: setup
	for seed in $(SEEDS); do \
	  $(PY) -m eobook run $(CHAPTER) --profile small --out $(RUNS_SMALL)/seed$$seed -p seed=$$seed --force || exit 1; \
	done
	$(PY) -m eobook collect $(filter-out all,$(CHAPTER)) --runs $(RUNS_SMALL)/seed$(firstword $(SEEDS)) \
	  --seed-runs $(foreach s,$(wordlist 2,9,$(SEEDS)),$(RUNS_SMALL)/seed$(s)) --dest book/small

# Open the chapters in JupyterLab.
lab: data
	$(PY) -m jupyter lab notebooks

# Re-resolve the locks after changing pyproject.toml (uv keeps every version the lock already has unless it must
# change; delete a line to update that package). linux-cuda is the reference set; the other platforms are held to
# its versions. environment.yml takes the same versions. The linux-cpu lock needs PyTorch's CPU index
# (download.pytorch.org/whl/cpu, where the +cpu builds are published); it is written last.
UV          := $(VENV)/bin/uv
LOCK_PINS   := _build/lock/linux-cuda-pins.txt
UV_COMPILE   = $(UV) pip compile pyproject.toml --extra test --extra book --python-version 3.11.7 \
	--generate-hashes --custom-compile-command "make lock" --quiet
lock: setup
	$(PY) -m pip install -q "uv==0.13.9"
	$(UV_COMPILE) --python-platform x86_64-manylinux_2_28 -o requirements-lock-linux-cuda.txt
	mkdir -p $(dir $(LOCK_PINS))
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ;]*\).*/\1/p' requirements-lock-linux-cuda.txt > $(LOCK_PINS)
	MACOSX_DEPLOYMENT_TARGET=14.0 $(UV_COMPILE) --python-platform aarch64-apple-darwin -c $(LOCK_PINS) \
	  -o requirements-lock-macos-arm64.txt
	$(PY) tools/sync_environment.py requirements-lock-linux-cuda.txt environment.yml
	$(UV_COMPILE) --python-platform x86_64-manylinux_2_28 --torch-backend cpu -c $(LOCK_PINS) \
	  -o requirements-lock-linux-cpu.txt
	{ echo "--extra-index-url https://download.pytorch.org/whl/cpu"; grep -v '^--extra-index-url' requirements-lock-linux-cpu.txt; } \
	  > requirements-lock-linux-cpu.tmp && mv requirements-lock-linux-cpu.tmp requirements-lock-linux-cpu.txt

clean:
	rm -rf _build book/_extra book/figures/package_layout.png
