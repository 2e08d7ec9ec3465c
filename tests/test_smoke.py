"""`python -m eobook run CHAPTER --profile full --smoke`: every stage of every `full` profile, at the paper's model
and input sizes, for 2 optimizer steps on a handful of samples, writes a complete run folder: on the sample
world (every dataset in its real layout), and on the real samples of ../shared/data/real where they hold a
chapter's dataset (its other datasets then come from the sample world, as a user's mixed data root would):
DINO-MM and Fus-MAE on the real BigEarthNet-MM patches (the other chapters pretrain on MMEarth or SSL4EO-S12
with labels, of which the real samples hold nothing)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authors_checkpoints import write_checkpoint
from eobook.chapters import CHAPTERS, chapter_names, get_chapter
from eobook.data import ensure_sample_world, real_data_root

REAL = real_data_root()


def smoke(chapter: str, out: Path, data_root: Path | None = None, params: tuple[str, ...] = (),
          env: dict[str, str] | None = None) -> dict:
    """Run the chapter's full-profile smoke through the CLI; return its metrics.json (after checking the run)."""
    cmd = [sys.executable, "-m", "eobook", "run", chapter, "--profile", "full", "--smoke", "--out", str(out)]
    if data_root is not None:
        cmd += ["-p", f"data_root={data_root}"]
    for param in params:
        cmd += ["-p", param]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200,
                          env=os.environ | {"HF_HUB_OFFLINE": "1", "EOBOOK_PROGRESS": "0"} | (env or {}))
    folder = out / chapter
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["smoke"] is True and metrics["profile"] == "full"
    figures = sorted((folder / "figures").glob("*.png"))
    assert figures, "a smoke run draws every figure of the chapter"
    executed = json.loads(next(folder.glob("*.ipynb")).read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    shutil.rmtree(folder / "checkpoints")  # full-size checkpoints of every stage: gigabytes, checked by the run itself
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("chapter", chapter_names())
def test_full_smoke_on_the_sample_world(chapter, tmp_path):
    smoke(chapter, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dino-mm-vits8-s1s2", "softcon-vits14-ms", "cromss-13b-midf"])
def test_full_smoke_evaluates_the_authors_weights(name, tmp_path):
    """``-p init=authors:<name>``: the chapter's evaluation on a released file (here a synthetic one of the
    authors' layout) instead of its pretraining; the results table labels what it evaluated."""
    entry = next(e for ch in CHAPTERS.values() for e in ch.released if e.name == name)
    write_checkpoint(entry, tmp_path / "weights")
    metrics = smoke(entry.chapter, tmp_path / "runs", params=(f"init={entry.init}",),
                    env={"EOBOOK_WEIGHTS_DIR": str(tmp_path / "weights")})
    folder = tmp_path / "runs" / entry.chapter
    assert json.loads((folder / "provenance.json").read_text())["parameters"]["init"] == entry.init
    assert not {"pretrain_steps", "pretrain_loss", "pretrain_final_loss"} & set(metrics)  # nothing was trained
    executed = (folder / get_chapter(entry.chapter).notebook).read_text()
    assert "0 missing, 0 unexpected" in executed and "authors' weights, this book's protocol" in executed


def real_bigearthnet(root: Path) -> Path:
    """A BigEarthNet-MM folder as a user assembles it: the v1 archives' two folders (the real samples) beside
    the official split lists and snow/cloud lists, which BigEarthNet distributes as separate files."""
    real = REAL / "bigearthnet-mm-v1"
    folder = root / "BigEarthNet-MM"
    folder.mkdir(parents=True)
    for name in ("BigEarthNet-v1.0", "BigEarthNet-S1-v1.0"):
        (folder / name).symlink_to(real / name, target_is_directory=True)
    patches = sorted(p.name for p in (real / "BigEarthNet-v1.0").iterdir() if p.is_dir())
    splits = {"train": patches[:3], "val": patches[3:4], "test": patches[4:]}
    for split, names in splits.items():
        (folder / f"{split}.csv").write_text("".join(f"{n}\n" for n in names))
    for name in ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv"):
        (folder / name).write_text("")
    return folder


def mixed_root(root: Path) -> Path:
    """``root`` completed with the sample world's datasets that it does not hold (by their folder names)."""
    world = ensure_sample_world("tiny", 0)
    root.mkdir(parents=True, exist_ok=True)
    for dataset in (p for p in world.iterdir() if p.is_dir()):
        if not (root / dataset.name).exists():
            (root / dataset.name).symlink_to(dataset, target_is_directory=True)
    return root


needs_real = pytest.mark.skipif(REAL is None or not (REAL / "bigearthnet-mm-v1").is_dir(),
                                reason="the real samples (../shared/data/real) are not here")


@pytest.mark.slow
@pytest.mark.real_data
@needs_real
@pytest.mark.parametrize("chapter", ["dino_mm", "fus_mae"])
def test_full_smoke_on_real_bigearthnet(chapter, tmp_path):
    """The chapters that pretrain on BigEarthNet-MM, on the real v1 patches (Fus-MAE's SEN12MS: the world's)."""
    root = tmp_path / "data"
    real_bigearthnet(root)
    metrics = smoke(chapter, tmp_path / "runs", mixed_root(root))
    assert metrics["smoke"]
