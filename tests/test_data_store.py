"""Packed store: the same reader class reads a folder and its packed copy identically."""
from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from eobook.data import BigEarthNetMM, DataError, GeoBench, SSL4EOS12, ensure_sample_world
from eobook.data.cli import add_data_subcommands
from eobook.data.store import prepare


@pytest.fixture(scope="module")
def world():
    return ensure_sample_world("tiny", 0)


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key])
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


def test_ssl4eo_packed_seasons(world, tmp_path):
    src, copy = world / "SSL4EO-S12", tmp_path / "SSL4EO-S12"  # 5 locations keep the test fast
    for modality in ("s1", "s2a", "s2c", "dw"):
        for loc in sorted((src / modality).iterdir())[:5]:
            shutil.copytree(loc, copy / modality / loc.name)
    shutil.copy(src / "ssl4eo_s12_ml.json", copy)
    store = prepare("SSL4EOS12", copy, tmp_path / "ssl.zarr")
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
