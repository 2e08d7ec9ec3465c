"""The package as users install it: a wheel that runs a chapter from an empty folder in a fresh environment, the
metadata current build backends accept, one lock per platform with the same versions, and environment.yml."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCKS = {"linux-cuda": REPO / "requirements-lock-linux-cuda.txt", "macos-arm64": REPO / "requirements-lock-macos-arm64.txt"}
#: What a wheel build needs from the checkout (MANIFEST.in adds the same to an sdist).
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "eobook", "notebooks"]


def pins(lock: Path) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2]
            for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;\\]+)", lock.read_text(), re.M)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's sources (the checkout gets no build/ or egg-info)."""
    work = tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, work / "src" / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                                    ".ipynb_checkpoints"))
        else:
            (work / "src").mkdir(exist_ok=True)
            shutil.copy2(source, work / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(work / "dist"), str(work / "src")], check=True, capture_output=True, text=True)
    (built,) = (work / "dist").glob("eobook-*.whl")
    return built


def test_the_wheel_carries_the_registry_the_notebooks_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    registry = {p.name for p in (REPO / "eobook" / "data" / "registry").glob("*.json")}
    notebooks = {p.name for p in (REPO / "notebooks").glob("*.ipynb")}
    assert registry and {f"eobook/data/registry/{n}" for n in registry} <= names
    assert notebooks and {f"eobook/notebooks/{n}" for n in notebooks} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any("__pycache__" in n or n.startswith(("tests/", "data/", "book/")) for n in names)


@pytest.mark.slow
def test_the_wheel_runs_a_chapter_from_an_empty_folder_in_a_fresh_venv(wheel, tmp_path):
    """A fresh venv that sees the installed dependencies (a .pth file naming this environment's site-packages) but
    not the checkout; the wheel installed with --no-deps; `python -m eobook run` from an empty folder, with the
    user folders of a fresh home: the sample world goes to the platform's user data folder, the run folder is
    complete, and the kernel ran the wheel's code (no git commit in its provenance)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "installed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    home.mkdir()
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("EOBOOK_", "PYTHON", "JUPYTER", "XDG_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"),
               HF_HUB_OFFLINE="1", EOBOOK_PROGRESS="0", PYTHONHASHSEED="0", MPLBACKEND="Agg")
    where = subprocess.run([str(python), "-c", "import eobook, eobook.resources as r; print(eobook.__file__); "
                            "print(r.notebook_dir()); print(r.checkout_root())"],
                           cwd=empty, env=env, check=True, capture_output=True, text=True).stdout.split("\n")
    assert where[0].startswith(str(purelib)) and where[1].startswith(str(purelib)) and where[2] == "None"
    result = subprocess.run([str(python), "-m", "eobook", "run", "dino_mm", "--profile", "tiny", "--out", "runs"],
                            cwd=empty, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = empty / "runs" / "dino_mm"
    assert json.loads((run / "metrics.json").read_text())["status"] == "complete"
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["git"] == {"sha": None, "dirty": None} and provenance["packages"]["eobook"] == "0.1.0"
    assert (run / "01_dino_mm.ipynb").is_file() and list((run / "figures").glob("*.png"))
    assert (home / "data" / "eobook" / "sample" / "world-tiny-seed0" / "world.json").is_file()


def test_metadata_for_current_build_backends():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first release that reads PEP 639
    assert "Permission is hereby granted, free of charge" in (REPO / "LICENSE").read_text()
    dependencies = " ".join(project["project"]["dependencies"])
    assert "platformdirs" in dependencies and "huggingface_hub" in dependencies


@pytest.mark.parametrize("platform", list(LOCKS))
def test_every_lock_holds_the_reference_versions_with_hashes(platform):
    """Same versions everywhere (the Linux CUDA lock is the reference set); every pin has its hashes."""
    lock = LOCKS[platform]
    text = lock.read_text()
    reference = pins(LOCKS["linux-cuda"])
    mine = pins(lock)
    assert {"torch", "torchvision", "platformdirs", "huggingface-hub", "pytest", "jupyter-book"} <= set(mine)
    assert {name: v for name, v in mine.items() if reference.get(name, v) != v} == {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    if platform == "macos-arm64":
        assert not any(name.startswith(("nvidia-", "cuda-")) or name == "triton" for name in mine)


def test_the_installed_environment_is_the_lock_of_this_machine():
    """`make setup` on a Linux x86_64 machine whose .venv holds PyPI's torch picks the Linux CUDA lock; this
    environment has exactly its versions."""
    from importlib.metadata import distributions

    if sys.platform != "linux" or not (REPO / ".venv").is_dir() or Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("checks the checkout's own .venv on Linux")
    chosen = subprocess.run(["make", "-s", "-p", "-n", "setup"], cwd=REPO, capture_output=True, text=True).stdout
    assert re.search(r"^LOCKFILE := requirements-lock-linux-cuda\.txt$", chosen, re.M)
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()}
    assert {name: (v, installed.get(name)) for name, v in pins(LOCKS["linux-cuda"]).items() if installed.get(name) != v} == {}


def test_environment_yml_has_the_versions_of_the_lock():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "sync_environment.py"), str(LOCKS["linux-cuda"]),
                             str(REPO / "environment.yml"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    text = (REPO / "environment.yml").read_text()
    assert "  - pytorch=" + pins(LOCKS["linux-cuda"])["torch"] in text and "-r requirements" not in text


def test_every_dataset_and_real_sample_has_its_licence_in_the_docs():
    from eobook.data.licences import COPERNICUS, REAL_SAMPLES, copernicus_attribution, data_licences

    readme, book = (REPO / "data" / "README.md").read_text(), (REPO / "book" / "data.md").read_text()
    for name, licence in data_licences().items():
        assert f"| {name} | {licence} |" in readme and f"| {name} | {licence} |" in book, name
    for folder, licence in REAL_SAMPLES.items():
        assert f"| `{folder}/` | {licence} |" in readme, folder
        assert licence in book, folder
    assert COPERNICUS in book and COPERNICUS in readme
    assert copernicus_attribution(2017) == f"{COPERNICUS} 2017" and copernicus_attribution() == COPERNICUS
    assert "CDLA-Permissive-1.0" in data_licences()["BigEarthNet-MM"]
