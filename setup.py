"""Build hook only (the metadata is in pyproject.toml): a built wheel carries the chapter notebooks.

The notebooks stay at the top of the repository (``notebooks/``, where JupyterLab opens them and nbval tests
them); building a wheel or an sdist-built wheel copies them to ``eobook/notebooks/``, where
``eobook.resources.notebook_dir()`` finds them through ``importlib.resources``. An editable install reads
them from the checkout instead, so nothing is copied there.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"


class build_py_with_notebooks(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
        if not notebooks:
            raise FileNotFoundError(f"{NOTEBOOKS}: no chapter notebooks to put into the wheel")
        target = Path(self.build_lib) / "eobook" / "notebooks"
        self.mkpath(str(target))
        for notebook in notebooks:
            self.copy_file(str(notebook), str(target / notebook.name))


setup(cmdclass={"build_py": build_py_with_notebooks})
