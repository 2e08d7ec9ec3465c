"""Packed store: the same reader class reads a folder and its packed copy identically."""
from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from eobook.data import BigEarthNetMM, DataError, EuroSATMS, GeoBench, SSL4EOS12, ensure_sample_world
from eobook.data.cli import add_data_subcommands
from eobook.data.pack import pack, prepare


@pytest.fixture(scope="module")
def world():
    return ensure_sample_world("tiny", 0)


#: Normalised reflectances of a packed copy differ from the folder's by the rounding of resampled bands to
#: whole DN: 0.5 DN, at most 0.003 of the narrowest band's mean +/- 2 std range (SSL4EO-S12's B10);
#: ``test_packed_reflectances_are_rounded_dn`` checks the DN themselves.
REFLECTANCE_ATOL = 0.003


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            atol = REFLECTANCE_ATOL if key in ("s2", "s2a", "s2c") and a[key].is_floating_point() else None
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0 if atol else None)
        else:
            assert a[key] == b[key]


def test_bigearthnet_packed_equals_folder(world, tmp_path):
    store = prepare("BigEarthNetMM", world / "BigEarthNet-MM", tmp_path / "ben.zarr")
    for split in ("train", "test"):
        folder, packed = BigEarthNetMM(world / "BigEarthNet-MM", split=split), BigEarthNetMM(store, split=split)
        assert len(folder) == len(packed)
        for i in (0, len(folder) - 1):
            _same(folder[i], packed[i])
    with pytest.raises(DataError, match="packed store of 'BigEarthNetMM'"):
        GeoBench(store)


@pytest.fixture(scope="module")
def ssl4eo(world, tmp_path_factory):
    """(folder, packed store) of the first 5 SSL4EO-S12 locations with every modality and label (fast to pack)."""
    tmp = tmp_path_factory.mktemp("ssl4eo")
    src, copy = world / "SSL4EO-S12", tmp / "SSL4EO-S12"
    for modality in ("s1", "s2a", "s2c", "dw"):
        for loc in sorted((src / modality).iterdir())[:5]:
            shutil.copytree(loc, copy / modality / loc.name)
    shutil.copy(src / "ssl4eo_s12_ml.json", copy)
    return copy, prepare("SSL4EOS12", copy, tmp / "ssl.zarr")


def _chunk_files(array_dir):
    return sorted(p for p in array_dir.iterdir() if not p.name.startswith("."))


def test_bigearthnet_packed_removes_snow_cloud_like_folder(world, tmp_path):
    """remove_snow_cloud works on the packed copy (the lists travel in the store), and a store packed from a
    folder without the lists refuses it instead of silently keeping the snowy and cloudy patches."""
    source = world / "BigEarthNet-MM"
    store = prepare("BigEarthNetMM", source, tmp_path / "ben.zarr")
    folder = BigEarthNetMM(source, split="train", remove_snow_cloud=True)
    packed = BigEarthNetMM(store, split="train", remove_snow_cloud=True)
    assert packed.patches == folder.patches and len(packed) < len(BigEarthNetMM(store, split="train"))
    _same(folder[len(folder) - 1], packed[len(packed) - 1])

    bare = tmp_path / "no-lists"
    shutil.copytree(source, bare)
    for name in ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv"):
        (bare / name).unlink()
    bare_store = prepare("BigEarthNetMM", bare, tmp_path / "bare.zarr")
    assert len(BigEarthNetMM(bare_store, split="train")) == len(BigEarthNetMM(store, split="train"))
    with pytest.raises(DataError, match="without the snow/cloud lists"):
        BigEarthNetMM(bare_store, split="train", remove_snow_cloud=True)


def test_ssl4eo_packed_seasons(ssl4eo):
    copy, store = ssl4eo
    kwargs = dict(modalities=("s1", "s2c"), dw_labels=True, multilabels=True, seed=1)
    folder, packed = SSL4EOS12(copy, **kwargs), SSL4EOS12(store, **kwargs)
    _same(folder[3], packed[3])
    _same(SSL4EOS12(copy, seasons="all")[2], SSL4EOS12(store, seasons="all")[2])


def test_cli_prepare_geobench(world, tmp_path):
    parser = argparse.ArgumentParser()
    add_data_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "prepare", "GeoBench", "--root", str(world / "GEO-Bench"),
                              "--task", "m-landcover-seg", "--out", str(tmp_path / "seg.zarr")])
    assert args.func(args) == 0
    folder = GeoBench(world / "GEO-Bench", task="m-landcover-seg", split="test")
    _same(folder[0], GeoBench(tmp_path / "seg.zarr", split="test")[0])


def test_ssl4eo_packed_layout(ssl4eo):
    """Chunks of several locations and one season for the seasonal arrays, and every chunk written (also those
    equal to zarr's fill value, e.g. a season without multi-label), so that a missing chunk means a damaged
    copy; the Dynamic World masks stored in a byte."""
    _, store = ssl4eo
    attrs = json.loads((store / ".zattrs").read_text())
    assert attrs["format"] == "eobook-packed-v3"
    assert set(attrs["seasonal"]) == {"s1", "s2a", "s2c", "dw", "multilabel", "has_multilabel"}
    assert attrs["dtypes"] == {"dw": "int64", "s2a": "float32", "s2c": "float32"}
    for name in attrs["variables"]:
        meta = json.loads((store / name / ".zarray").read_text())
        locations, seasons = meta["shape"][:2]
        assert meta["chunks"][0] > 1 and meta["chunks"][1] == 1
        assert len(_chunk_files(store / name)) == math.ceil(locations / meta["chunks"][0]) * seasons
    assert json.loads((store / "dw" / ".zarray").read_text())["dtype"] == "|i1"


@pytest.mark.parametrize("kwargs", [dict(modalities=("s2c",), seasons=2, multilabels=True),
                                    dict(modalities=("s2c",), seasons="random", multilabels=True, seed=3),
                                    dict(modalities=("s1",), seasons=0, dw_labels=True),
                                    dict(modalities=("s2a", "s2c"), seasons="all")])
def test_ssl4eo_packed_selective_equals_folder(ssl4eo, kwargs):
    copy, store = ssl4eo
    folder, packed = SSL4EOS12(copy, **kwargs), SSL4EOS12(store, **kwargs)
    for i in range(len(folder)):
        _same(folder[i], packed[i])


def test_ssl4eo_packed_reads_only_requested(ssl4eo, tmp_path):
    """SoftCon's read (one season of S2 L1C and its multi-label) still works on a copy of the store without the
    chunks of every other array and season, so it does not read them."""
    copy, store = ssl4eo
    trimmed = shutil.copytree(store, tmp_path / "trimmed.zarr")
    for name in ("s1", "s2a", "dw", "s2c", "multilabel", "has_multilabel"):
        for chunk in _chunk_files(trimmed / name):
            if name not in ("s2c", "multilabel", "has_multilabel") or chunk.name.split(".")[1] != "2":
                chunk.unlink()
    kwargs = dict(modalities=("s2c",), seasons=2, multilabels=True)
    folder, packed = SSL4EOS12(copy, **kwargs), SSL4EOS12(trimmed, **kwargs)
    for i in range(len(folder)):
        _same(folder[i], packed[i])
    with pytest.raises(DataError, match="missing chunk"):  # the deleted chunks were really needed elsewhere
        SSL4EOS12(trimmed, modalities=("s2c",), seasons=1)[0]


def _with_attrs(store, out, **attrs):
    """A copy of ``store`` with some attributes changed."""
    copy = shutil.copytree(store, out)
    (copy / ".zattrs").write_text(json.dumps({**json.loads((copy / ".zattrs").read_text()), **attrs}))
    return copy


def test_store_checks(ssl4eo, tmp_path):
    _, store = ssl4eo
    old = _with_attrs(store, tmp_path / "old.zarr", format="eobook-packed-v1")
    with pytest.raises(DataError, match="format 'eobook-packed-v1'.*python -m eobook data prepare"):
        SSL4EOS12(old)
    variables = [v for v in json.loads((store / ".zattrs").read_text())["variables"] if v != "dw"]
    no_dw = _with_attrs(store, tmp_path / "no_dw.zarr", variables=variables)  # as if packed without masks
    with pytest.raises(DataError, match=r"packed without \['dw'\]"):
        SSL4EOS12(no_dw, dw_labels=True)
    with pytest.raises(DataError, match="packed with 4 seasons"):
        SSL4EOS12(store, n_seasons=3)


class _ClassZero:
    """A dataset of 70 samples of class 0: every chunk of its labels equals zarr's fill value."""

    def __len__(self):
        return 70

    def raw_sample(self, i):
        return {"image": np.full((2, 4, 4), i, np.uint16), "label": np.int64(0), "id": f"p{i}"}


def test_chunks_equal_to_fill_value_are_written(world, tmp_path):
    """zarr skips chunks equal to the fill value unless told otherwise: chunks of class-0 labels would be
    missing from the store, and its reader would take them for a damaged copy."""
    store = pack([(None, _ClassZero())], tmp_path / "zero.zarr", {"reader": "EuroSATMS"})
    meta = json.loads((store / "label" / ".zarray").read_text())
    assert len(_chunk_files(store / "label")) == math.ceil(meta["shape"][0] / meta["chunks"][0]) == 2
    store = prepare("EuroSATMS", world / "EuroSAT-MS", tmp_path / "eurosat.zarr")
    folder, packed = EuroSATMS(world / "EuroSAT-MS", split="train"), EuroSATMS(store, split="train")
    first = next(i for i in range(len(folder)) if folder[i]["label"] == 0)
    _same(folder[first], packed[first])


def _same_batch(a, b):
    """Two collated batches are equal, dtypes included."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("reader, folder, kwargs", [
    ("BigEarthNetMM", "BigEarthNet-MM", dict(split="train")),
    ("MMEarth", "MMEarth/data_1M_v001_64.h5", dict(split="train")),
    ("SSL4EOS12", "SSL4EO-S12", dict(modalities=("s1", "s2c"), seasons="all", dw_labels=True)),
    ("SSL4EOS12", "SSL4EO-S12", dict(modalities=("s2c",), seasons="random", multilabels=True, seed=2))])
def test_batched_read_equals_sample_reads(world, tmp_path, reader, folder, kwargs):
    """A DataLoader's batch read at once (``__getitems__``: one decode per chunk from the packed store, batched
    normalisation) equals the default collation of the samples read one by one, from the folder and from a
    store holding several samples per chunk."""
    from eobook.data import READERS
    from eobook.data.base import BatchCollate, CollatedBatch

    store = prepare(reader, world / folder, tmp_path / "store.zarr")
    chunk = json.loads((store / ("s2" if reader != "SSL4EOS12" else "s2c") / ".zarray").read_text())["chunks"][0]
    assert chunk > 1
    for root in (world / folder, store):
        dataset = READERS[reader](root, **kwargs)
        indices = [5, 0, 3, len(dataset) - 1, 2, 5]  # across chunks, out of order, one repeated
        batch = dataset.__getitems__(indices)
        assert isinstance(batch, CollatedBatch) and len(batch) == len(indices)
        _same_batch(BatchCollate()(batch), default_collate([dataset[i] for i in indices]))
        assert batch[1]["id"] == dataset[0]["id"]  # as a sequence it still yields the samples


def test_v2_store_refused(ssl4eo, tmp_path):
    """A store of the previous format (one sample per chunk) is refused, naming the command that re-packs it."""
    _, store = ssl4eo
    old = _with_attrs(store, tmp_path / "v2.zarr", format="eobook-packed-v2")
    with pytest.raises(DataError, match="format 'eobook-packed-v2', this eobook reads 'eobook-packed-v3'.*prepare"):
        SSL4EOS12(old)


def test_lossy_storage_dtype_refused(tmp_path):
    """A value the reader's narrower storage dtype cannot hold stops the packing, naming the key."""
    class Wide(_ClassZero):
        PACKED_DTYPES = {"label": "int8"}

        def raw_sample(self, i):
            return {**super().raw_sample(i), "label": np.int64(300 if i == 69 else 1)}

    with pytest.raises(DataError, match="label: values outside int8"):
        pack([(None, Wide())], tmp_path / "wide.zarr", {"reader": "EuroSATMS"})


def test_packed_reflectances_are_rounded_dn(world, ssl4eo):
    """The packed S2 reflectances are int16: the folder's resampled values rounded to whole DN (bicubic's
    undershoot below 0 kept)."""
    copy, store = ssl4eo
    pairs = [(SSL4EOS12(copy, modalities=("s2c", "s2a"), seasons="all", normalize=False),
              SSL4EOS12(store, modalities=("s2c", "s2a"), seasons="all", normalize=False), ("s2c", "s2a"))]
    ben = prepare("BigEarthNetMM", world / "BigEarthNet-MM", copy.parent / "ben.zarr")
    pairs.append((BigEarthNetMM(world / "BigEarthNet-MM", split="test", normalize=False),
                  BigEarthNetMM(ben, split="test", normalize=False), ("s2",)))
    for folder, packed, keys in pairs:
        assert packed.store.arrays[keys[0]].dtype == np.int16
        for i in range(len(folder)):
            a, b = folder[i], packed[i]
            for key in keys:
                assert b[key].dtype == torch.float32 and torch.equal(b[key], a[key].round()), key
                assert (b[key] - a[key]).abs().max() <= 0.5


@pytest.mark.parametrize("reader, kwargs", [
    ("SSL4EOS12", dict(modalities=("s1", "s2c"), seasons="all", dw_labels=True)),   # CromSS
    ("SSL4EOS12", dict(modalities=("s2c",), multilabels=True, seed=3)),              # SoftCon
    ("SSL4EOS12", dict(modalities=("s2c", "s2a"), normalize=False)),
    ("BigEarthNetMM", dict(split="train"))])                                         # DINO-MM, Fus-MAE
def test_native_batches_normalised_on_device_equal_cpu_batches(ssl4eo, world, reader, kwargs):
    """fit's loader reads a packed reader's batches native (int16 reflectances, int8 classes, not normalised);
    the reader's device normalisation (here on the CPU) gives exactly the batch normalised in the worker."""
    from eobook.train.loop import ResumableBatchSampler, make_loader, native_batches

    store = ssl4eo[1] if reader == "SSL4EOS12" else prepare(reader, world / "BigEarthNet-MM",
                                                              ssl4eo[1].parent / "ben-native.zarr")
    dataset = SSL4EOS12(store, **kwargs) if reader == "SSL4EOS12" else BigEarthNetMM(store, **kwargs)
    loaded, on_device = native_batches(dataset)
    assert on_device is not None and loaded is not dataset
    sampler = ResumableBatchSampler(len(dataset), 4, seed=0)
    native = next(iter(make_loader(loaded, sampler, 0)))
    plain = next(iter(make_loader(dataset, sampler, 0)))
    image = "s2" if "s2" in native else "s2c"
    assert native[image].dtype == torch.int16 and plain[image].dtype == torch.float32
    assert native.get("dw", torch.zeros(0, dtype=torch.int8)).dtype == torch.int8
    _same_batch(on_device(native), plain)
    assert not dataset.native  # switched back after the batch


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_compressions_read_alike_and_refuse_damaged_chunks(world, tmp_path, compression):
    """Both chunk encodings give the same samples; a truncated chunk file is one error naming it."""
    store = prepare("BigEarthNetMM", world / "BigEarthNet-MM", tmp_path / "ben.zarr", compression=compression)
    meta = json.loads((store / "s2" / ".zarray").read_text())
    assert (meta["compressor"] is None) == (compression == "none")
    folder, packed = BigEarthNetMM(world / "BigEarthNet-MM", split="val"), BigEarthNetMM(store, split="val")
    _same(folder[1], packed[1])
    from eobook.data.base import BatchCollate

    indices = [4, 1, len(packed) - 1, 1]
    _same_batch(BatchCollate()(packed.__getitems__(indices)), default_collate([packed[i] for i in indices]))
    chunk = _chunk_files(store / "s2")[0]
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{chunk.name}: unreadable chunk"):
        BigEarthNetMM(store, split="train")[0]
    with pytest.raises(ValueError, match="compression: expected one of"):
        prepare("BigEarthNetMM", world / "BigEarthNet-MM", tmp_path / "zip.zarr", compression="zip")
