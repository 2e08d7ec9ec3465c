"""Readers on the synthetic sample world and on the real samples in ../shared/data/real."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eobook.data import (BEN19_CLASSES, DFC2020, BigEarthNetMM, DataError, EuroSATMS, GeoBench, MMEarth,
                         SEN12MS, SSL4EOS12, ensure_sample_world, real_data_root)


@pytest.fixture(scope="module")
def world():
    return ensure_sample_world(size="tiny", seed=0)  # cached on disk after the first run


def needs_real(sub: str):
    root = real_data_root()
    if root is None or not (root / sub).exists():
        pytest.skip(f"real data folder {sub} absent (../shared/data/real or $EOBOOK_REAL_DATA)")
    return root / sub


def test_world_is_marked_synthetic(world):
    import json

    summary = json.loads((world / "world.json").read_text())
    assert "SYNTHETIC" in summary["synthetic"] and (world / "BigEarthNet-MM" / "SYNTHETIC").is_file()
    assert 0.6 < summary["dw_label_accuracy"] < 0.8  # Dynamic-World-like noise
    assert min(summary["class_fractions"].values()) > 0.005  # every class occurs


def test_bigearthnet_world(world):
    train, test = BigEarthNetMM(world / "BigEarthNet-MM", split="train"), BigEarthNetMM(world / "BigEarthNet-MM", split="test")
    assert len(train) >= 64 and len(test) >= 32
    s = train[0]
    assert s["s2"].shape == (12, 48, 48) and s["s2"].dtype == torch.float32
    assert s["s1"].shape == (2, 48, 48) and s["label"].shape == (19,) and s["label43"].shape == (43,)
    assert 0 <= s["s2"].min() and s["s2"].max() <= 1
    raw = BigEarthNetMM(world / "BigEarthNet-MM", split="train", normalize=False)[0]
    assert raw["s1"].max() < 20 and raw["s1"].min() > -60  # dB
    assert raw["s2"].max() > 100  # DN, not reflectance
    cleaned = BigEarthNetMM(world / "BigEarthNet-MM", split="train", remove_snow_cloud=True)
    listed = (world / "BigEarthNet-MM" / "patches_with_cloud_and_shadow.csv").read_text().split()
    assert len(cleaned) == len(train) - len(set(listed) & set(train.patches)) - sum(
        p in train.patches for p in (world / "BigEarthNet-MM" / "patches_with_seasonal_snow.csv").read_text().split()
        if p not in listed)


def test_ssl4eo_world_seasons_and_labels(world):
    ds = SSL4EOS12(world / "SSL4EO-S12", modalities=("s1", "s2c"), dw_labels=True, multilabels=True, seed=3)
    s = ds[5]
    assert s["s2"].shape == (13, 36, 36) and s["s1"].shape == (2, 36, 36)
    assert s["dw"].dtype == torch.int64 and s["dw"].min() >= -1 and s["dw"].max() <= 8
    assert s["multilabel"].shape == (9,) and s["multilabel"].sum() >= 1
    again = SSL4EOS12(world / "SSL4EO-S12", modalities=("s2c",), seed=3)
    assert [again[i]["season"] for i in range(8)] == [ds[i]["season"] for i in range(8)]  # reproducible
    ds.set_epoch(1)
    assert [ds[i]["season"] for i in range(16)] != [again[i]["season"] for i in range(16)]
    full = SSL4EOS12(world / "SSL4EO-S12", modalities=("s2a", "s2c"), seasons="all", dw_labels=True)[0]
    assert full["s2a"].shape == (4, 12, 36, 36) and full["s2c"].shape == (4, 13, 36, 36) and full["dw"].shape == (4, 36, 36)


def test_ssl4eo_multilabels_alone_are_the_samples_labels(world):
    ds = SSL4EOS12(world / "SSL4EO-S12", modalities=("s2c",), multilabels=True, seed=3)
    ds.set_epoch(2)
    for i in range(6):
        assert torch.equal(torch.as_tensor(ds.multilabel(i)[0]), ds[i]["multilabel"])
    every_season = SSL4EOS12(world / "SSL4EO-S12", modalities=("s2c",), seasons="all", multilabels=True)
    assert every_season.multilabel(0).shape == (4, 9)
    with pytest.raises(ValueError, match="multilabels=True"):
        SSL4EOS12(world / "SSL4EO-S12", modalities=("s2c",)).multilabel(0)


def test_whole_dataset_sees_through_subsets_wrappers_and_cached_splits(world):
    from torch.utils.data import Subset

    from eobook.data import whole_dataset
    from eobook.methods.cromss import Relabelled

    reader = SSL4EOS12(world / "SSL4EO-S12", modalities=("s2c",))
    assert whole_dataset(reader) is reader and whole_dataset(Subset(Subset(reader, [0, 1, 2]), [1])) is reader
    cached = [reader[i] for i in range(3)]
    assert whole_dataset(Relabelled(Subset(cached, [0]), (0,) * 9)) is cached


def test_mmearth_world(world):
    ds = MMEarth(world / "MMEarth" / "data_1M_v001_64.h5", split="train")
    s = ds[0]
    assert {k: tuple(s[k].shape) for k in ("rgb", "ired", "sired", "eb", "depth")} == {
        "rgb": (3, 32, 32), "ired": (3, 32, 32), "sired": (2, 32, 32), "eb": (2, 32, 32), "depth": (1, 32, 32)}
    segs = torch.stack([ds[i]["seg"] for i in range(len(ds))])
    assert segs.dtype == torch.int64 and segs.min() >= 0 and segs.max() <= 11
    assert (segs == 11).any()  # the world's no-data strips map to the explicit class
    rgb = torch.stack([ds[i]["rgb"] for i in range(len(ds))])
    assert abs(rgb.mean()) < 0.5 and 0.5 < rgb.std() < 1.5  # z-scored with the tile-level statistics


def test_geobench_world(world):
    cls = GeoBench(world / "GEO-Bench", task="m-eurosat", split="train")
    s = cls[0]
    assert s["s2"].shape == (13, 32, 32) and s["label"].dtype == torch.int64 and s["label"].ndim == 0
    multi = GeoBench(world / "GEO-Bench", task="m-bigearthnet", split="test")[0]
    assert multi["s2"].shape == (12, 32, 32) and multi["label"].shape == (43,)
    seg = GeoBench(world / "GEO-Bench", task="m-landcover-seg", split="valid")[0]
    assert seg["label"].shape == (32, 32) and seg["label"].dtype == torch.int64
    assert len(GeoBench(world / "GEO-Bench", task="m-eurosat", partition="0.10x")) < len(cls)


def test_sen12ms_world_is_in_the_real_layout(world):
    """Four season folders of s1/s2/lc scene folders and the CRLF split lists; scene labels as the benchmark's."""
    import rasterio

    from eobook.data.bands import IGBP_TO_SIMPLIFIED
    from eobook.data.sen12ms import SEASONS

    root = world / "SEN12MS"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(SEASONS)
    first = (root / "train_list.txt").read_bytes().split(b"\r\n")[0].decode()
    assert first.startswith("ROIs1158_spring_s2_") and first.endswith(".tif")
    train, test = SEN12MS(root, split="train"), SEN12MS(root, split="test")
    assert (len(train), len(test), len(SEN12MS(root))) == (48, 24, 72)
    scene_folders = lambda ds: {f.rsplit("/", 1)[0] for f in ds.files}
    assert not scene_folders(train) & scene_folders(test)  # the test list holds whole scenes
    s = train[5]
    assert s["s1"].shape == (2, 32, 32) and s["s2"].shape == (13, 32, 32) and s["label"].shape == (32, 32)
    assert s["label"].min() >= 0 and s["label"].max() <= 9 and s["label_multi"].shape == (10,)
    # the scene label by hand: band 1 of the lc patch, IGBP -> simplified, argmax of the class fractions
    with rasterio.open(root / train.files[5].replace("s2_", "lc_")) as src:
        assert src.count == 4
        igbp = src.read(1)
    simple = np.vectorize(IGBP_TO_SIMPLIFIED.get)(igbp) - 1
    assert int(s["label_scene"]) == int(np.bincount(simple.ravel(), minlength=10).argmax())
    assert torch.equal(s["label"], torch.from_numpy(simple.astype(np.int64)))


def test_dfc2020_world_is_in_the_contest_layout(world):
    root = world / "DFC2020"
    assert (root / "ROIs0000_validation" / "s2_validation" / "ROIs0000_validation_s2_0_p0.tif").is_file()
    assert (root / "ROIs0000_test" / "dfc_0" / "ROIs0000_test_dfc_0_p31.tif").is_file()
    train, test = DFC2020(root, split="train"), DFC2020(root, split="test")
    assert (len(train), len(test)) == (64, 32) and train.files[2].endswith("_p2.tif") and train.files[10].endswith("_p10.tif")
    assert len(DFC2020(root, split="validation")) == 64 and len(DFC2020(root)) == 96
    s = test[0]
    assert s["s1"].dtype == torch.float32 and s["s2"].shape == (13, 32, 32) and 0 <= s["label"].min() <= s["label"].max() <= 9
    with pytest.raises(DataError, match="DFC2020 needs ROIs0000_validation"):
        DFC2020(world / "SEN12MS", split="train")
    with pytest.raises(DataError, match="not the SEN12MS layout"):
        SEN12MS(root, split="train")


def test_eurosat_world(world):
    train, test = EuroSATMS(world / "EuroSAT-MS", split="train"), EuroSATMS(world / "EuroSAT-MS", split="test")
    assert len(train) >= 64 and len(test) >= 20 and not set(train.files) & set(test.files)
    assert train[0]["s2"].shape == (13, 32, 32) and train[0]["label"].ndim == 0


def spectral_texture_features(image: torch.Tensor) -> np.ndarray:
    """Per band: mean, and mean absolute difference from the 3x3 local mean (the texture)."""
    local = torch.nn.functional.avg_pool2d(image[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    return torch.cat([image.mean((1, 2)), (image - local).abs().mean((1, 2))]).numpy()


def pixel_features(ds, every: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Every 7th pixel of every patch: S2 and S1 values -> its land-cover class."""
    x = [torch.cat([ds[i]["s2"], ds[i]["s1"]]).flatten(1).T[::every].numpy() for i in range(len(ds))]
    y = [ds[i]["label"].flatten()[::every].numpy() for i in range(len(ds))]
    return np.concatenate(x), np.concatenate(y)


def test_world_is_learnable(world):
    """A linear classifier maps pixels to their class, and band means plus textures to the EuroSAT class."""
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_test, y_test) = (pixel_features(DFC2020(world / "DFC2020", split=s)) for s in ("train", "test"))
    model = LogisticRegression(max_iter=3000).fit(x_train, y_train)
    majority = np.mean(y_test == np.bincount(y_train).argmax())
    assert model.score(x_test, y_test) > max(0.7, majority + 0.3)  # 10 classes
    es_train, es_test = EuroSATMS(world / "EuroSAT-MS", "train"), EuroSATMS(world / "EuroSAT-MS", "test")
    feats = lambda d: np.stack([spectral_texture_features(d[i]["s2"]) for i in range(len(d))])
    labels = lambda d: np.array([int(d[i]["label"]) for i in range(len(d))])
    model = LogisticRegression(max_iter=3000, C=100).fit(feats(es_train), labels(es_train))
    assert model.score(feats(es_test), labels(es_test)) > 0.5  # chance 0.1


# ---------------------------------------------------------------------------------------- real data
@pytest.mark.real_data
def test_bigearthnet_real_v1():
    root = needs_real("bigearthnet-mm-v1")
    ds = BigEarthNetMM(root, split=None)
    assert len(ds) == 6
    by_id = {ds.patches[i]: i for i in range(len(ds))}
    s = ds[by_id["S2A_MSIL2A_20170613T101031_87_48"]]
    assert s["s2"].shape == (12, 120, 120) and s["s1"].shape == (2, 120, 120)
    assert 0 <= s["s2"].min() and s["s2"].max() <= 1
    # hand-checked: "Non-irrigated arable land" + "Land principally occupied by agriculture, ..."
    assert torch.nonzero(s["label"]).flatten().tolist() == [2, 6]
    assert torch.nonzero(s["label43"]).flatten().tolist() == [11, 20]
    finn = ds[by_id["S2B_MSIL2A_20170924T93020_69_24"]]
    # Coniferous, Mixed forest, Transitional woodland/shrub, Peatbogs (inland wetlands), Water bodies
    assert [BEN19_CLASSES[i] for i in torch.nonzero(finn["label"]).flatten()] == [
        "Coniferous forest", "Mixed forest", "Transitional woodland, shrub", "Inland wetlands", "Inland waters"]
    raw = BigEarthNetMM(root, normalize=False)[0]
    assert raw["s1"].min() > -60 and raw["s1"].max() < 30 and raw["s2"].max() > 1000


@pytest.mark.real_data
def test_ssl4eo_real_s2c():
    root = needs_real("ssl4eo-s12")
    ds = SSL4EOS12(root, modalities=("s2c",), seasons=0, n_seasons=1)  # the samples hold one season each
    s = ds[1]
    assert len(ds) == 2 and s["s2"].shape == (13, 264, 264) and s["s2"].dtype == torch.float32
    assert 0 <= s["s2"].min() and s["s2"].max() <= 1 and s["s2"].std() > 0.01
    raw = SSL4EOS12(root, modalities=("s2c",), seasons=0, n_seasons=1, normalize=False)[1]
    assert raw["s2"][1].mean() > 100  # B02 in DN


@pytest.mark.real_data
def test_geobench_real():
    root = needs_real("geobench/brick_kiln_v1.0")
    ds = GeoBench(root, split="train")
    s = ds[0]
    assert len(ds) == 5 and s["s2"].shape == (13, 64, 64) and s["s2"].dtype == torch.float32
    assert int(s["label"]) == 0  # all fixtures are "no kiln", read without unpickling foreign classes
    assert abs(float(s["s2"].mean())) < 3


def test_bigearthnet_v2_layout_reads_like_v1(tmp_path):
    """The same world written as v1 folders and as reBEN (v2, metadata.parquet) reads back identically."""
    from eobook.data.world import World, WorldSize, write_bigearthnet

    size = WorldSize(256, (6, 3, 3), 24, 0, 0, (0, 0, 0), 0, (0, 0, 0), 0, (0, 0), 0, 0, 0)  # only BigEarthNet
    for layout in ("v1", "v2"):
        write_bigearthnet(World(1, 256), tmp_path / layout, size, np.random.default_rng(7), layout=layout)  # 1 snowy, 1 cloudy
    assert (tmp_path / "v2" / "metadata.parquet").is_file() and not (tmp_path / "v2" / "BigEarthNet-v1.0").exists()
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        v1, v2 = BigEarthNetMM(tmp_path / "v1", split=split), BigEarthNetMM(tmp_path / "v2", split=split)
        assert v2.layout == "v2" and len(v1) == len(v2) == count
        for a, b in zip(v1, v2):
            assert b["id"].endswith(a["id"].rsplit("_", 2)[-2] + "_" + a["id"].rsplit("_", 1)[-1])
            assert torch.equal(a["s2"], b["s2"]) and torch.equal(a["s1"], b["s1"]) and torch.equal(a["label"], b["label"])
            assert "label43" not in b  # reBEN has only the 19-class nomenclature
    every_v1, every_v2 = BigEarthNetMM(tmp_path / "v1"), BigEarthNetMM(tmp_path / "v2")
    kept_v1 = BigEarthNetMM(tmp_path / "v1", remove_snow_cloud=True)
    kept_v2 = BigEarthNetMM(tmp_path / "v2", remove_snow_cloud=True)
    assert len(every_v1) == len(every_v2) == 12 and len(kept_v1) == len(kept_v2) == 10


def test_open_dataset_in_memory_matches_the_reader_and_refuses_unknown_readers(world):
    from eobook.data import open_dataset

    on_disk = open_dataset("SEN12MS", world / "SEN12MS", split="test")
    in_memory = open_dataset("SEN12MS", world / "SEN12MS", in_memory=True, split="test")
    assert isinstance(on_disk, SEN12MS) and isinstance(in_memory, list) and len(in_memory) == len(on_disk)
    assert all(torch.equal(in_memory[i]["s2"], on_disk[i]["s2"]) for i in (0, len(on_disk) - 1))
    for in_memory_flag in (False, True):
        with pytest.raises(ValueError, match="reader: expected one of"):
            open_dataset("NoSuchReader", world, in_memory=in_memory_flag)


def test_chapter_dataset_follows_data_root_and_cache_data(world):
    from types import SimpleNamespace

    from eobook.data import DataError, chapter_dataset

    cfg = SimpleNamespace(data_root=str(world), world_size="tiny", world_seed=0, cache_data=False, smoke=False)
    assert isinstance(chapter_dataset(cfg, "SEN12MS", "SEN12MS", split="test"), SEN12MS)
    cached = chapter_dataset(SimpleNamespace(**{**vars(cfg), "cache_data": True}), "SEN12MS", "SEN12MS", split="test")
    assert isinstance(cached, list) and len(cached) == len(SEN12MS(world / "SEN12MS", split="test"))
    with pytest.raises(DataError, match="no NoSuchFolder dataset here"):
        chapter_dataset(cfg, "SEN12MS", "NoSuchFolder")


def test_bigearthnet_v1_pairs_s1_patches_once_per_process(world, monkeypatch):
    """A chapter opens several splits of the same folder: the S1 jsons (590,326 in the real archive) are read once."""
    from eobook.data import bigearthnet

    bigearthnet.s1_pairs.cache_clear()
    reads = []
    real_read = bigearthnet.read_json
    monkeypatch.setattr(bigearthnet, "read_json", lambda path: reads.append(path) or real_read(path))
    train = BigEarthNetMM(world / "BigEarthNet-MM", split="train")
    after_train = len([p for p in reads if "S1" in str(p)])
    BigEarthNetMM(world / "BigEarthNet-MM", split="test")
    assert after_train > 0 and len([p for p in reads if "S1" in str(p)]) == after_train
    assert len(train) > 0
