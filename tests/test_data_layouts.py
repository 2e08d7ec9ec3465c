"""The real layouts of SEN12MS, DFC2020, NoLDO-S12, fMoW-Sentinel, GEO-Bench's further tasks and DINO-MM's
BigEarthNet lists, read from the sample world; and their bad input, each one DataError naming the file."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from eobook.data import (DATA_WARNINGS, DFC2020, FMOW_CLASSES, OSM_CLASSES, BigEarthNetMM, DataError, FMoWSentinel,
                         GeoBench, NoLDOS12, SEN12MS, ensure_sample_world)
from eobook.data.world import write_tif


@pytest.fixture(scope="module")
def world():
    return ensure_sample_world(size="tiny", seed=0)


def copy_sen12ms(world, dest, train: int = 3):
    """The first ``train`` patches of the world's SEN12MS train list (and their scene folders' files)."""
    src = world / "SEN12MS"
    names = (src / "train_list.txt").read_text().split()[:train]
    for name in names:
        parts = name.split("_")
        season, scene = f"{parts[0]}_{parts[1]}", parts[3]
        for kind in ("s1", "s2", "lc"):
            file = name.replace("_s2_", f"_{kind}_")
            (dest / season / f"{kind}_{scene}").mkdir(parents=True, exist_ok=True)
            shutil.copy(src / season / f"{kind}_{scene}" / file, dest / season / f"{kind}_{scene}" / file)
    (dest / "train_list.txt").write_text("\r\n".join(names) + "\r\n")
    return names


# --------------------------------------------------------------------------------------------------- SEN12MS
def test_sen12ms_split_lists_are_required_and_checked(world, tmp_path):
    names = copy_sen12ms(world, tmp_path)
    assert len(SEN12MS(tmp_path, split="train")) == 3
    with pytest.raises(DataError, match="missing split list") as info:
        SEN12MS(tmp_path, split="test")
    assert "test_list.txt" in str(info.value)
    (tmp_path / "train_list.txt").write_text(f"{names[0]}\nROIs1158_spring_lc_1_p0.tif\n")
    with pytest.raises(DataError, match=r"line 2: 'ROIs1158_spring_lc_1_p0.tif' is not an S2 patch name"):
        SEN12MS(tmp_path, split="train")


def test_sen12ms_drops_the_benchmarks_broken_patch_with_a_warning(world, tmp_path):
    names = copy_sen12ms(world, tmp_path)
    (tmp_path / "train_list.txt").write_text("\r\n".join(names + ["ROIs1868_summer_s2_146_p202.tif"]) + "\r\n")
    DATA_WARNINGS.reset()
    ds = SEN12MS(tmp_path, split="train")
    assert len(ds) == 3 and ds.dropped == ["ROIs1868_summer_s2_146_p202.tif"]
    assert DATA_WARNINGS.count == 1 and "S1 patch holds NaN" in DATA_WARNINGS.first[0][1]


def test_sen12ms_bad_labels_and_sizes_name_the_file(world, tmp_path):
    names = copy_sen12ms(world, tmp_path)
    season, scene = "_".join(names[0].split("_")[:2]), names[0].split("_")[3]
    lc = tmp_path / season / f"lc_{scene}" / names[0].replace("_s2_", "_lc_")
    bad = np.full((4, 32, 32), 10, np.uint16)
    bad[0, 0, 0] = 18
    write_tif(lc, bad)
    with pytest.raises(DataError, match=r"IGBP value\(s\) \[18\] in band 1, expected 1..17") as info:
        SEN12MS(tmp_path, split="train")[0]
    assert str(lc) in str(info.value)
    season, scene = "_".join(names[1].split("_")[:2]), names[1].split("_")[3]
    s1 = tmp_path / season / f"s1_{scene}" / names[1].replace("_s2_", "_s1_")
    write_tif(s1, np.zeros((2, 16, 16), np.float32) - 10)
    with pytest.raises(DataError, match="size 16x16, its S2 patch is 32x32") as info:
        SEN12MS(tmp_path, split="train")[1]
    assert str(s1) in str(info.value)


def test_dfc2020_label_outside_the_table(world, tmp_path):
    src = world / "DFC2020" / "ROIs0000_validation"
    for kind in ("s1", "s2", "dfc"):
        folder = tmp_path / "ROIs0000_validation" / f"{kind}_validation"
        folder.mkdir(parents=True)
        shutil.copy(src / f"{kind}_validation" / f"ROIs0000_validation_{kind}_0_p0.tif", folder)
    label = tmp_path / "ROIs0000_validation" / "dfc_validation" / "ROIs0000_validation_dfc_0_p0.tif"
    values = np.full((32, 32), 4, np.uint16)
    values[:2] = 0  # no label: -1
    write_tif(label, values)
    sample = DFC2020(tmp_path, split="train")[0]
    assert int((sample["label"] == -1).sum()) == 64 and int(sample["label"].max()) == 3
    values[5, 5] = 11
    write_tif(label, values)
    with pytest.raises(DataError, match=r"label value\(s\) \[11\], expected the simplified IGBP classes 1..10"):
        DFC2020(tmp_path, split="train")[0]


# --------------------------------------------------------------------------------------------------- NoLDO-S12
def test_noldo_world_tiles_and_labels(world):
    root = world / "NoLDO-S12"
    train, test = NoLDOS12(root, task="dw", split="train"), NoLDOS12(root, task="dw", split="test")
    assert (len(train), len(test)) == (8, 4)
    assert train[0]["s2"].shape == (13, 30, 30) and test[0]["s2"].shape == (13, 32, 32)  # 510 / 512 px in the real data
    assert "p" in test.names[0] and "." in train.names[0]  # test tiles write the decimal point as p
    labels = torch.cat([train[i]["label"].flatten() for i in range(len(train))])
    assert labels.min() == -1 and labels.max() <= 8 and (labels == -1).float().mean() < 0.6
    osm = NoLDOS12(root, task="osm", split="train")
    assert osm.classes == OSM_CLASSES and len(OSM_CLASSES) == 13
    values = torch.cat([osm[i]["label"].flatten() for i in range(len(osm))])
    assert values.min() == -1 and values.max() <= 12 and len(values.unique()) > 8
    s1_only = NoLDOS12(root, task="osm", split="test", modalities=("s1",))[0]
    assert set(s1_only) == {"s1", "label", "id"}


def noldo_copy(world, dest, task="dw"):
    src = world / "NoLDO-S12" / f"{task}_train"
    shutil.copytree(src, dest / "data_s12" / f"{task}_train")  # one level down, as the authors' data_s12/
    name = sorted(p.name[3:] for p in (src / "image_s2").iterdir())[0]
    return dest / "data_s12" / f"{task}_train", name


def test_noldo_dw_cloud_second_band_and_bad_values(world, tmp_path):
    folder, name = noldo_copy(world, tmp_path)
    label = folder / "label_dw" / f"dw_{name}"
    values = np.full((30, 30), 3, np.uint8)
    values[0] = 10  # cloud: not annotated
    values[1] = 0
    write_tif(label, np.stack([np.full((30, 30), 7, np.uint8), values]))  # the authors read band 2
    ds = NoLDOS12(tmp_path, task="dw", split="train")
    sample = ds[ds.names.index(name[:-4])]
    assert int((sample["label"] == -1).sum()) == 60 and set(sample["label"].unique().tolist()) == {-1, 2}
    values[4, 4] = 11
    write_tif(label, values)
    with pytest.raises(DataError, match=r"label value\(s\) \[11\], expected 0 \(no label\) to 10 \(10 = cloud\)") as info:
        ds[ds.names.index(name[:-4])]
    assert str(label) in str(info.value)
    with pytest.raises(DataError, match="no dw_test/ folder"):
        NoLDOS12(tmp_path, task="dw", split="test")


def test_noldo_osm_value_14_and_size_mismatch(world, tmp_path):
    folder, name = noldo_copy(world, tmp_path, "osm")
    index = NoLDOS12(tmp_path, task="osm", split="train").names.index(name[:-4])
    write_tif(folder / "label_osm" / f"osm_{name}", np.full((30, 30), 14, np.uint8))
    with pytest.raises(DataError, match=r"\[14\], expected 0 \(no label\) to 13"):
        NoLDOS12(tmp_path, task="osm", split="train")[index]
    write_tif(folder / "image_s1" / f"s1_{name}", np.zeros((2, 32, 32), np.float32) - 12)
    with pytest.raises(DataError, match="size 32x32, its S2 patch is 30x30"):
        NoLDOS12(tmp_path, task="osm", split="train")[index]


# --------------------------------------------------------------------------------------------------- fMoW-Sentinel
def test_fmow_world_csv_and_images(world):
    train, val = FMoWSentinel(world / "fMoW-Sentinel", "train"), FMoWSentinel(world / "fMoW-Sentinel", "val")
    assert len(train) == len(val) == 62 and sorted(int(train[i]["label"]) for i in range(62)) == list(range(62))
    shapes = {tuple(train[i]["s2"].shape) for i in range(10)}
    assert len(shapes) > 1 and all(s[0] == 13 for s in shapes)  # images keep their own size
    resized = FMoWSentinel(world / "fMoW-Sentinel", "val", resize_to=24)[7]
    assert resized["s2"].shape == (13, 24, 24) and 0 <= resized["s2"].min() and resized["s2"].max() <= 1
    assert train[0]["id"].startswith(FMOW_CLASSES[int(train[0]["label"])])


def test_fmow_unknown_category_and_missing_image(world, tmp_path):
    shutil.copy(world / "fMoW-Sentinel" / "val.csv", tmp_path / "val.csv")
    with pytest.raises(DataError, match="missing file") as info:
        FMoWSentinel(tmp_path, "val")[0]
    assert "fmow-sentinel/val/airport/airport_" in str(info.value)
    lines = (tmp_path / "val.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "ufo_landing_site", 1)
    (tmp_path / "val.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 4: category 'ufo_landing_site' is not one of the 62 fMoW classes"):
        FMoWSentinel(tmp_path, "val")
    with pytest.raises(DataError, match="missing split csv"):
        FMoWSentinel(tmp_path, "train")


# --------------------------------------------------------------------------------------------------- GEO-Bench
@pytest.mark.parametrize("task, bands, kind, classes", [
    ("m-brick-kiln", 13, "scene", 2), ("m-so2sat", 10, "scene", 17),
    ("m-cashew-plantation", 12, "segmentation", 7), ("m-SA-crop-type", 12, "segmentation", 10)])
def test_geobench_tasks_of_the_full_profile(world, task, bands, kind, classes):
    ds = GeoBench(world / "GEO-Bench", task=task, split="test")
    s = ds[0]
    assert s["s2"].shape == (bands, 32, 32) and ds.label_kind == kind and len(ds.classes) == classes
    assert (s["label"].ndim == 2) == (kind == "segmentation")
    with h5py.File(ds.task_dir / f"{ds.samples[0]}.hdf5") as f:
        names = list(f)
    if task == "m-so2sat":
        assert "01 - VH.Real" in names and len(names) == 18
    if task == "m-cashew-plantation":
        assert any(n.startswith("02 - Blue_2019-11-") for n in names)  # dated band names, as GEO-Bench writes them


def test_geobench_label_outside_the_task_and_bands_on_two_dates(world, tmp_path):
    shutil.copytree(world / "GEO-Bench" / "segmentation_v1.0" / "m-cashew-plantation", tmp_path / "m-cashew-plantation")
    ds = GeoBench(tmp_path / "m-cashew-plantation", split="train")
    path = ds.task_dir / f"{ds.samples[0]}.hdf5"
    with h5py.File(path, "a") as f:
        label = f["label"][()]
        label[0, 0] = 7
        f["label"][...] = label
    with pytest.raises(DataError, match=r"label value\(s\) \[7\], expected the task's classes 0..6") as info:
        ds[0]
    assert str(path) in str(info.value)
    second = ds.task_dir / f"{ds.samples[1]}.hdf5"
    with h5py.File(second, "a") as f:
        dated = next(n for n in f if n.startswith("02 - Blue_"))
        f.create_dataset("02 - Blue_2020-01-01", data=f[dated][()])
    with pytest.raises(DataError, match="band '02 - Blue' on 2 dates"):
        ds[1]


# --------------------------------------------------------------------------------------------------- BigEarthNet lists
def test_bigearthnet_seco_split_scheme(world, tmp_path):
    src = world / "BigEarthNet-MM"
    shutil.copytree(src, tmp_path / "ben", ignore=shutil.ignore_patterns("*.csv"))
    names = (src / "val.csv").read_text().split()
    with pytest.raises(DataError, match="missing split file") as info:
        BigEarthNetMM(tmp_path / "ben", split="val", split_scheme="seco")
    assert "bigearthnet-val.txt" in str(info.value)
    (tmp_path / "ben" / "bigearthnet-val.txt").write_text("\n".join(names[:5]) + "\n")
    ds = BigEarthNetMM(tmp_path / "ben", split="val", split_scheme="seco")
    assert ds.patches == names[:5] and ds[4]["label"].shape == (19,)
    with pytest.raises(ValueError, match="split_scheme: expected one of"):
        BigEarthNetMM(tmp_path / "ben", split="val", split_scheme="dino")
