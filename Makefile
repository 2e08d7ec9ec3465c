# The two commands of the README:
#   make book   set up .venv and build the HTML book from the kept small-profile executions (book/small/)
#   make test   set up .venv, write the sample data, run the unit tests and the notebooks (nbval, tiny)
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.eobook-installed
RUNS_SMALL := _build/runs/small
export EOBOOK_DATA_DIR := $(CURDIR)/data/sample
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# Passive OpenMP waits: spinning threads starve each other when test workers or kernels share the cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book book-small test setup data lab lock clean

setup: $(STAMP)

# Install the locked set (requirements-lock.txt) once; again only when the lock or pyproject changes.
$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools>=68" wheel
	$(PY) -m pip install -q -r requirements-lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
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

# Re-resolve the tested set after changing pyproject.toml dependencies.
lock: setup
	{ sed -n '/^#/p' requirements-lock.txt; $(PY) -m pip freeze --exclude-editable | grep -vi '^eobook'; } > requirements-lock.tmp
	mv requirements-lock.tmp requirements-lock.txt

clean:
	rm -rf _build book/_extra book/figures/package_layout.png
