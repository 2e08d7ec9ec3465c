"""What travels with the package, and where it writes by default.

Read through :mod:`importlib.resources`, so that an installed wheel works from any folder:

* the data registry, ``eobook/data/registry/*.json`` (:func:`registry_dir`);
* the chapter notebooks: ``eobook/notebooks/*.ipynb`` in a built wheel (``setup.py`` copies them there), the
  checkout's ``notebooks/`` in an editable install (:func:`notebook_dir`).

Written by default into the platform's user data folder (:mod:`platformdirs`: ``~/.local/share/eobook`` on
Linux, ``~/Library/Application Support/eobook`` on macOS); an environment variable overrides each:

=====================  ======================  ==========================================
what                   variable                default
=====================  ======================  ==========================================
synthetic sample world ``EOBOOK_DATA_DIR``     ``<user data folder>/sample``
downloaded datasets    ``EOBOOK_DATASETS_DIR`` ``<user data folder>/datasets/<dataset>``
=====================  ======================  ==========================================

The checkout's ``make`` sets ``EOBOOK_DATA_DIR`` to its own ``data/sample``. Run folders are where ``--out``
says. Caches are the libraries' own, in the user's cache folder: the Hugging Face hub's (``HF_HOME``; a
downloaded dataset keeps its hub cache in its own folder), matplotlib's, torch's.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

APP = "eobook"


def _package_path(*parts: str) -> Path:
    """A folder inside the installed ``eobook`` package (a real folder: the package is never zipped)."""
    return Path(str(importlib.resources.files(APP).joinpath(*parts)))


def checkout_root() -> Path | None:
    """The source checkout this package is imported from (an editable install), or None (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def notebook_dir() -> Path:
    """The folder of the chapter notebooks: the wheel's copy, else the checkout's ``notebooks/``."""
    shipped = _package_path("notebooks")
    if shipped.is_dir():
        return shipped
    root = checkout_root()
    if root is None:
        raise FileNotFoundError(f"{shipped}: the chapter notebooks are missing from this installation of eobook")
    return root / "notebooks"


def registry_dir() -> Path:
    """The folder of the data registry's json files (``eobook/data/registry``)."""
    return _package_path("data", "registry")


def _user_dir(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else default


def user_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def sample_data_dir() -> Path:
    """Where the synthetic sample worlds are written: ``$EOBOOK_DATA_DIR`` or ``<user data folder>/sample``."""
    return _user_dir("EOBOOK_DATA_DIR", user_data_dir() / "sample")


def datasets_dir() -> Path:
    """The default data root of downloads: ``$EOBOOK_DATASETS_DIR`` or ``<user data folder>/datasets``."""
    return _user_dir("EOBOOK_DATASETS_DIR", user_data_dir() / "datasets")
