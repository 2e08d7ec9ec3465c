# The two commands of the README:
#   make book   set up .venv, write the sample data, run every chapter (profile tiny), build the HTML book
#   make test   set up .venv, write the sample data, run the unit tests and the notebooks (nbval, tiny)
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.eobook-installed
RUNS    := _build/runs/book
export EOBOOK_DATA_DIR := $(CURDIR)/data/sample
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# Passive OpenMP waits: spinning threads starve each other when test workers or kernels share the cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: book test setup data lab lock clean

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

book: data
	$(PY) -m eobook run all --profile tiny --out $(RUNS) --force
	$(PY) -m eobook collect --runs $(RUNS) --dest book/chapters
	mkdir -p book/figures book/_extra
	rm -rf book/_extra/mathjax && cp -r "$$($(PY) -c 'import jupyter_server_mathjax, pathlib; print(pathlib.Path(jupyter_server_mathjax.__file__).parent / "static")')" book/_extra/mathjax
	$(PY) -c "import matplotlib; matplotlib.use('Agg'); from eobook.viz import package_diagram; package_diagram().savefig('book/figures/package_layout.png', dpi=110)"
	$(VENV)/bin/jupyter-book build book --config _config.yml -W -n --keep-going --path-output .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# Open the chapters in JupyterLab.
lab: data
	$(PY) -m jupyter lab notebooks

# Re-resolve the tested set after changing pyproject.toml dependencies.
lock: setup
	{ sed -n '/^#/p' requirements-lock.txt; $(PY) -m pip freeze --exclude-editable | grep -vi '^eobook'; } > requirements-lock.tmp
	mv requirements-lock.tmp requirements-lock.txt

clean:
	rm -rf _build book/chapters
