"""Bad input: each case raises DataError naming the file and the problem; on_error="skip" counts."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from eobook.data import BigEarthNetMM, DataError, GeoBench, ensure_sample_world
from eobook.data.world import write_tif


@pytest.fixture
def ben(tmp_path):
    """A 3-patch copy of the sample world's BigEarthNet-MM (v1 layout)."""
    src = ensure_sample_world("tiny", 0) / "BigEarthNet-MM"
    names = (src / "train.csv").read_text().split()[:3]
    s1_of = BigEarthNetMM(src, split="train").s1_of
    for name in names:
        shutil.copytree(src / "BigEarthNet-v1.0" / name, tmp_path / "BigEarthNet-v1.0" / name)
        shutil.copytree(src / "BigEarthNet-S1-v1.0" / s1_of[name], tmp_path / "BigEarthNet-S1-v1.0" / s1_of[name])
    (tmp_path / "train.csv").write_text("\n".join(names) + "\n")
    return tmp_path, names[0], s1_of[names[0]]


def _expect(root, path, words):
    with pytest.raises(DataError) as info:
        BigEarthNetMM(root, split="train")[0]
    assert str(path) in str(info.value) and words in str(info.value)


def test_missing_band(ben):
    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_B03.tif"
    path.unlink()
    _expect(root, path, "missing file")


def test_wrong_shape(ben):
    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_B05.tif"
    write_tif(path, np.ones((1, 7, 7), np.uint16))
    _expect(root, path, "does not match")


def test_wrong_dtype(ben):
    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_B04.tif"
    write_tif(path, np.ones((1, 48, 48), np.float64))
    _expect(root, path, "dtype float64")


def test_missing_crs_warns_and_reads(ben, caplog):
    """Several real datasets ship patches without a CRS: read them, with one warning naming the file."""
    import rasterio

    from eobook.data import DATA_WARNINGS

    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_B08.tif"
    with rasterio.open(path, "w", driver="GTiff", height=48, width=48, count=1, dtype="uint16") as dst:
        dst.write(np.full((1, 48, 48), 900, np.uint16))
    DATA_WARNINGS.reset()
    with caplog.at_level("WARNING", logger="eobook.data.base"):
        sample = BigEarthNetMM(root, split="train", normalize=False)[0]
        BigEarthNetMM(root, split="train")[0]  # the same file again: counted once
    assert float(sample["s2"][7].mean()) == 900
    assert DATA_WARNINGS.count == 1 and DATA_WARNINGS.first == [(str(path), "no CRS (georeferencing missing); read without it")]
    assert [r.getMessage() for r in caplog.records] == [f"{path}: no CRS (georeferencing missing); read without it"]


def test_nan_and_nodata(ben):
    root, name, s1 = ben
    path = root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_VV.tif"
    write_tif(path, np.full((1, 48, 48), np.nan, np.float32))
    _expect(root, path, "NaN")
    band = root / "BigEarthNet-v1.0" / name / f"{name}_B02.tif"
    write_tif(band, np.zeros((1, 48, 48), np.uint16))
    _expect(root, band, "nodata")


def test_unknown_label(ben):
    import json

    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_labels_metadata.json"
    path.write_text(json.dumps({"labels": ["Pastures", "Lunar regolith"]}))
    _expect(root, path, "unknown label name 'Lunar regolith'")


def test_truncated_tif(ben):
    root, name, _ = ben
    path = root / "BigEarthNet-v1.0" / name / f"{name}_B11.tif"
    path.write_bytes(path.read_bytes()[:200])
    _expect(root, path, "corrupt")


def test_skip_counts_and_reports(ben):
    root, name, _ = ben
    (root / "BigEarthNet-v1.0" / name / f"{name}_B03.tif").unlink()
    ds = BigEarthNetMM(root, split="train", on_error="skip")
    samples = [ds[i] for i in range(len(ds))]
    assert len(samples) == 3 and len(ds.skipped) == 1  # the bad one replaced by its neighbour, counted
    assert "skipped 1" in ds.skip_report() and f"{name}_B03.tif" in ds.skip_report()
    with pytest.raises(ValueError):
        BigEarthNetMM(root, split="train", on_error="ignore")


def test_corrupt_hdf5_and_pickle(tmp_path):
    src = ensure_sample_world("tiny", 0) / "GEO-Bench" / "classification_v1.0" / "m-eurosat"
    shutil.copytree(src, tmp_path / "m-eurosat")
    ds = GeoBench(tmp_path / "m-eurosat", split="train")
    first = tmp_path / "m-eurosat" / f"{ds.samples[0]}.hdf5"
    first.write_bytes(first.read_bytes()[:500])
    with pytest.raises(DataError, match="corrupt HDF5"):
        ds[0]
    second = tmp_path / "m-eurosat" / f"{ds.samples[1]}.hdf5"
    with h5py.File(second, "a") as f:
        f.attrs["pickle"] = repr(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="corrupt label pickle") as info:
        ds[1]
    assert str(second) in str(info.value)


def test_restricted_unpickler_runs_no_code(tmp_path):
    """A pickle that would call os.system when unpickled normally is inert here."""
    import pickle

    from eobook.data.geobench import read_pickled_label

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path),))

    blob = pickle.dumps({"label": 3, "payload": Evil()})
    assert read_pickled_label(tmp_path / "x.hdf5", {"pickle": repr(blob)}) == 3
    assert tmp_path.exists()
