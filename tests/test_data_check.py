"""``python -m eobook data check``: one JSON line per split read, exit 1 naming bad files, one line for a wrong
layout; on the sample world and on the real samples in ../shared/data/real."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from eobook.__main__ import main
from eobook.data import FOLDERS, ensure_sample_world, real_data_root
from eobook.data.check import count_labels, identify_layout


@pytest.fixture(scope="module")
def world():
    return ensure_sample_world(size="tiny", seed=0)


def run_check(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["data", "check", *map(str, args)])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) <= 1, f"more than one line on stdout: {lines}"
    return code, json.loads(lines[0]) if lines else None, err


def test_every_world_folder_is_identified_as_its_reader(world):
    for reader, folder in FOLDERS.items():
        if reader != "MMEarth":
            assert identify_layout(world / folder)[0] == reader, folder
    assert identify_layout(world / "MMEarth" / "data_1M_v001_64.h5")[0] == "MMEarth"
    assert identify_layout(world)[0] is None and "data root holding" in identify_layout(world)[1]


def test_check_sen12ms_train_split_of_the_world(world, capsys):
    code, report, _ = run_check(capsys, "SEN12MS", "--root", world / "SEN12MS", "--split", "train")
    assert code == 0
    assert set(report) >= {"dataset", "root", "split", "samples", "classes", "seconds", "errors"}
    assert (report["dataset"], report["split"], report["samples"], report["failed"], report["errors"]) == (
        "SEN12MS", "train", 48, 0, [])
    assert sum(report["classes"].values()) == 48 and len(report["classes"]) == 10  # one scene label per sample


def test_check_counts_pixels_for_segmentation(world, capsys):
    code, report, _ = run_check(capsys, "DFC2020", "--root", world / "DFC2020", "--split", "test")
    assert code == 0 and report["samples"] == 32 and sum(report["classes"].values()) == 32 * 32 * 32
    code, report, _ = run_check(capsys, "NoLDOS12", "--root", world / "NoLDO-S12", "--task", "osm", "--split", "train")
    assert code == 0 and report["task"] == "osm" and len(report["classes"]) == 14  # 13 classes + unlabelled
    assert report["classes"]["(unlabelled)"] > 0 and sum(report["classes"].values()) == 8 * 30 * 30


def test_check_bigearthnet_v1_and_v2_trees(world, tmp_path, capsys):
    from eobook.data.world import World, WorldSize, write_bigearthnet

    code, report, _ = run_check(capsys, "BigEarthNetMM", "--root", world / "BigEarthNet-MM", "--split", "val")
    assert code == 0 and (report["samples"], report["failed"]) == (32, 0)
    size = WorldSize(256, (4, 2, 2), 24, 0, 0, (0, 0, 0), 0, (0, 0, 0), 0, (0, 0), 0, 0, 0)
    write_bigearthnet(World(1, 256), tmp_path, size, np.random.default_rng(3), layout="v2")
    code, report, _ = run_check(capsys, "BigEarthNetMM", "--root", tmp_path, "--split", "train")
    assert code == 0 and (report["samples"], report["failed"]) == (4, 0) and sum(report["classes"].values()) > 4


def test_count_labels_kinds():
    from collections import Counter

    counts = Counter()
    count_labels(counts, np.array([[1.0, 0, 1], [0, 0, 1]]), "multilabel", ("a", "b", "c"))
    count_labels(counts, np.int64(2), "scene", ("a", "b", "c"))
    count_labels(counts, np.array([[0, -1], [2, 2]]), "segmentation", ("a", "b", "c"))
    assert dict(counts) == {"a": 2, "b": 0, "c": 5, "(unlabelled)": 1}


def test_check_names_the_bad_files_and_exits_1(world, tmp_path, capsys):
    src = world / "DFC2020" / "ROIs0000_test"
    for kind in ("s1", "s2", "dfc"):
        (tmp_path / "ROIs0000_test" / f"{kind}_0").mkdir(parents=True)
        for n in range(4):
            name = f"ROIs0000_test_{kind}_0_p{n}.tif"
            shutil.copy(src / f"{kind}_0" / name, tmp_path / "ROIs0000_test" / f"{kind}_0" / name)
    broken = tmp_path / "ROIs0000_test" / "s2_0" / "ROIs0000_test_s2_0_p2.tif"
    broken.write_bytes(broken.read_bytes()[:300])
    (tmp_path / "ROIs0000_test" / "dfc_0" / "ROIs0000_test_dfc_0_p3.tif").unlink()
    code, report, err = run_check(capsys, "DFC2020", "--root", tmp_path, "--split", "test")
    assert code == 1 and report["samples"] == 4 and report["failed"] == 2
    assert str(broken) in report["errors"][0] and "corrupt" in report["errors"][0]
    assert "ROIs0000_test_dfc_0_p3.tif: missing file" in report["errors"][1]
    assert "2 of 4 samples failed" in err and str(broken) in err


def test_check_refuses_a_root_in_another_layout_in_one_line(world, tmp_path, capsys):
    code, report, err = run_check(capsys, "SEN12MS", "--root", world / "DFC2020", "--split", "train")
    assert code == 2 and report is None and len(err.strip().splitlines()) == 1
    assert "looks like DFC2020" in err and "SEN12MS needs train_list.txt" in err
    code, _, err = run_check(capsys, "BigEarthNetMM", "--root", world)
    assert code == 2 and "data root holding" in err and "BigEarthNet-MM/" in err
    (tmp_path / "ROIs1158_spring").mkdir()
    code, _, err = run_check(capsys, "SEN12MS", "--root", tmp_path, "--split", "test")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "test_list.txt" in err
    code, _, err = run_check(capsys, "SEN12MS", "--root", world / "SEN12MS", "--task", "dw")
    assert code == 2 and "SEN12MS has no tasks" in err


# ---------------------------------------------------------------------------------------- real data
def needs_real(sub: str):
    root = real_data_root()
    if root is None or not (root / sub).exists():
        pytest.skip(f"real data folder {sub} absent (../shared/data/real or $EOBOOK_REAL_DATA)")
    return root / sub


@pytest.mark.real_data
def test_check_real_bigearthnet_v1_without_split_lists(capsys):
    root = needs_real("bigearthnet-mm-v1")
    code, report, _ = run_check(capsys, "BigEarthNetMM", "--root", root)
    assert code == 0 and report["samples"] == 6 and report["failed"] == 0 and report["split"] is None
    assert report["classes"]["Arable land"] >= 1 and report["classes"]["Coniferous forest"] >= 1


@pytest.mark.real_data
def test_check_real_geobench_brick_kiln(capsys):
    root = needs_real("geobench/brick_kiln_v1.0")
    code, report, _ = run_check(capsys, "GeoBench", "--root", root)
    assert code == 0 and report["split"] == "train" and report["classes"] == {"not brick kiln": 5, "brick kiln": 0}
