"""Write environment.yml from pyproject.toml's dependencies at the versions of the reference lock.

    python tools/sync_environment.py requirements-lock-linux-cuda.txt environment.yml          # write
    python tools/sync_environment.py requirements-lock-linux-cuda.txt environment.yml --check  # exit 1 if stale

`make lock` runs it. The conda environment holds every direct dependency of the package, its test and its book
extras from conda-forge, pinned to the lock's version (conda's solver picks the rest, and conda-forge's pytorch
build for the machine: CUDA where a driver is found, CPU otherwise); eobook itself goes in with pip.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base", "huggingface-hub": "huggingface_hub"}
HEADER = """\
# A conda/mamba environment with the versions of the tested set (requirements-lock-linux-cuda.txt), from
# conda-forge. Written by `make lock` (tools/sync_environment.py): edit pyproject.toml, not this file.
#   conda env create -f environment.yml && conda activate eobook && pip install --no-deps -e .
# conda-forge's pytorch is its CUDA build where conda finds an NVIDIA driver, its CPU build elsewhere.
name: eobook
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;\\]+)", line)
        if match:
            pins[normalise(match[1])] = match[2]
    return pins


def direct_dependencies(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    names = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    return [normalise(re.match(r"[A-Za-z0-9_.-]+", spec)[0]) for spec in names]


def environment(lock: Path, pyproject: Path) -> str:
    pins = lock_pins(lock)
    lines = []
    for name in direct_dependencies(pyproject):
        if name not in pins:
            raise SystemExit(f"{lock}: no pin for {name}, a dependency in {pyproject}: run make lock")
        conda = CONDA_NAMES.get(name, name)
        lines.append(f"  - {conda}={pins[name]}")
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    lock, target = Path(argv[0]), Path(argv[1])
    text = environment(lock, Path(__file__).resolve().parents[1] / "pyproject.toml")
    if "--check" in argv:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} does not match {lock}: run `make lock` (or python {' '.join(sys.argv)} without --check)")
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
