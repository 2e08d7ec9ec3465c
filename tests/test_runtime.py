"""Runtime: seeding, device and AMP policy, atomic writes, provenance and run folders."""
import json
import os

import pytest
import torch

from eobook.runtime import (RunFolder, amp_dtype, atomic_write_json, choose_device, provenance, require_free_disk,
                            seed_everything)


def test_seed_everything_repeats_draws():
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
        seed_everything(-1)


def test_amp_only_on_cuda():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, "auto") is None and amp_dtype(cpu, "off") is None
    with pytest.raises(ValueError, match="only used on CUDA"):
        amp_dtype(cpu, "bf16")
    with pytest.raises(ValueError, match="amp: expected one of"):
        amp_dtype(cpu, "fp8")


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device: expected one of"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            choose_device("cuda")


def test_atomic_write_replaces_whole_file(tmp_path):
    target = atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(target, {"a": 2, "t": torch.tensor([1.0])})
    assert json.loads(target.read_text()) == {"a": 2, "t": [1.0]}
    assert os.listdir(tmp_path) == ["m.json"]


def test_run_folder_marks_complete_only_on_finish(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.log_metrics(mAP=50.0)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"status": "running", "mAP": 50.0}
    folder.finish()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "complete"


def test_provenance_records_what_a_rerun_needs():
    record = provenance({"epochs": 3}, torch.device("cpu"), command=["python", "-m", "eobook"])
    assert record["parameters"] == {"epochs": 3}
    assert record["packages"]["torch"] == torch.__version__.split("+")[0]
    assert set(record["git"]) == {"sha", "dirty"}
    assert record["command"] == ["python", "-m", "eobook"]


def test_free_disk_check_names_the_path(tmp_path):
    with pytest.raises(OSError, match=f"{tmp_path}.*needs"):
        require_free_disk(tmp_path, 10**18)


def test_captions_name_profile_data_and_hardware_and_credit_real_sentinel_data():
    from eobook.methods import dino_mm as dm
    from eobook.runtime import setup_run

    world = setup_run(dm.CHAPTER.profile("tiny"), None, verbose=False)
    assert world.caption().startswith("Profile 'tiny' on the synthetic sample world; hardware: ")
    assert "Copernicus" not in world.caption() and "not a reproduction" in world.caption()
    real = setup_run(dm.CHAPTER.profile("full", data_root="/data"), None, verbose=False)
    assert "the real data" in real.caption() and real.caption().endswith("Contains modified Copernicus Sentinel data.")
    smoke = setup_run(dm.CHAPTER.profile("full", smoke=True), None, verbose=False)
    assert "smoke run" in smoke.caption()
    assert "What you are reading" in world.banner().data and "<b>tiny</b>" in world.banner().data
