"""Fuzz-style: readers fed corrupted copies of real and synthetic files (truncated at random points,
random bytes flipped) either read the sample or raise a DataError naming the corrupted file; never any
other exception, never a hang."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from eobook.data import BigEarthNetMM, DataError, GeoBench, ensure_sample_world, real_data_root

CASES = 12  # corruptions per file kind (seeded)


def corrupt(path: Path, rng: np.random.Generator, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        del data[int(rng.integers(0, len(data))):]
    else:
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 32))):
            data[pos] = int(rng.integers(0, 256))
    path.write_bytes(bytes(data))


def read_or_named_error(read, path: Path) -> None:
    try:
        sample = read()
    except DataError as err:
        assert path.name in str(err), f"DataError does not name {path.name}: {err}"
        return
    assert all(np.isfinite(v.numpy()).all() for v in sample.values() if hasattr(v, "numpy") and v.is_floating_point())


def fuzz(files: list[Path], read, seed: int) -> dict[str, int]:
    """Corrupt each file in turn, read, restore; count clean reads and named errors."""
    rng = np.random.default_rng(seed)
    outcome = {"read": 0, "named_error": 0}
    for case in range(CASES):
        path = files[case % len(files)]
        original = path.read_bytes()
        corrupt(path, rng, "truncate" if case % 2 == 0 else "flip")
        try:
            try:
                read()
                outcome["read"] += 1
            except DataError:
                outcome["named_error"] += 1
            read_or_named_error(read, path)
        finally:
            path.write_bytes(original)
    return outcome


def ben_copy(src: Path, dest: Path) -> tuple[Path, list[Path]]:
    """One BigEarthNet-MM v1 patch pair copied to ``dest``; returns the root and its GeoTIFFs."""
    reader = BigEarthNetMM(src, split=None)
    name = reader.patches[0]
    for folder, patch in (("BigEarthNet-v1.0", name), ("BigEarthNet-S1-v1.0", reader.s1_of[name])):
        shutil.copytree(src / folder / patch, dest / folder / patch)
    for csv in src.glob("*.csv"):
        (dest / csv.name).write_text(name + "\n")
    return dest, sorted(dest.rglob("*.tif"))


def test_bigearthnet_synthetic_files(tmp_path):
    root, tifs = ben_copy(ensure_sample_world("tiny", 0) / "BigEarthNet-MM", tmp_path)
    outcome = fuzz(tifs, lambda: BigEarthNetMM(root, split="train")[0], seed=0)
    assert outcome["named_error"] > 0 and sum(outcome.values()) == CASES


def test_bigearthnet_real_files(tmp_path):
    real = real_data_root()
    if real is None or not (real / "bigearthnet-mm-v1").is_dir():
        pytest.skip("real BigEarthNet-MM samples (../shared/data/real) are absent")
    root, tifs = ben_copy(real / "bigearthnet-mm-v1", tmp_path)
    outcome = fuzz(tifs, lambda: BigEarthNetMM(root, split=None)[0], seed=1)
    assert outcome["named_error"] > 0


def test_geobench_hdf5_files(tmp_path):
    src = ensure_sample_world("tiny", 0) / "GEO-Bench"
    task = next(p for p in src.rglob("m-eurosat") if p.is_dir())
    shutil.copytree(task, tmp_path / task.name)
    reader = GeoBench(tmp_path / task.name, split="train")
    first = next((tmp_path / task.name).glob(f"{reader.samples[0]}*"))
    outcome = fuzz([first], lambda: GeoBench(tmp_path / task.name, split="train")[0], seed=2)
    assert outcome["named_error"] > 0


def test_mmearth_hdf5_file(tmp_path):
    from eobook.data import MMEarth

    src = ensure_sample_world("tiny", 0) / "MMEarth"
    shutil.copytree(src, tmp_path / "MMEarth")
    h5 = next((tmp_path / "MMEarth").glob("*.h5"))

    def read():
        reader = MMEarth(h5, split="train")  # a new reader opens the file anew
        return reader[len(reader) - 1]

    outcome = fuzz([h5], read, seed=3)
    assert outcome["named_error"] > 0


@pytest.mark.parametrize("reader", ["DFC2020", "NoLDOS12"])
def test_real_layout_geotiffs(tmp_path, reader):
    """The SEN12MS-family and NoLDO-S12 readers on corrupted copies of the sample world's files."""
    from eobook.data import DFC2020, NoLDOS12

    world = ensure_sample_world("tiny", 0)
    if reader == "DFC2020":
        shutil.copytree(world / "DFC2020" / "ROIs0000_test", tmp_path / "ROIs0000_test")
        read = lambda: DFC2020(tmp_path, split="test")[0]
        files = [tmp_path / "ROIs0000_test" / f"{k}_0" / f"ROIs0000_test_{k}_0_p0.tif" for k in ("s1", "s2", "dfc")]
    else:
        shutil.copytree(world / "NoLDO-S12" / "osm_test", tmp_path / "osm_test")
        name = NoLDOS12(tmp_path, task="osm", split="test").names[0]
        read = lambda: NoLDOS12(tmp_path, task="osm", split="test")[0]
        files = [tmp_path / "osm_test" / f"{d}" / f"{p}_{name}.tif"
                 for d, p in (("image_s1", "s1"), ("image_s2", "s2"), ("label_osm", "osm"))]
    outcome = fuzz(files, read, seed=4)
    assert outcome["named_error"] > 0 and sum(outcome.values()) == CASES
