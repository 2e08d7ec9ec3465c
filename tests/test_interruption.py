"""A pretraining run killed with SIGKILL mid-epoch resumes from its newest checkpoint and ends bitwise
equal to an uninterrupted run (CPU, deterministic mode); a kill during a checkpoint write never damages
the newest good checkpoint."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from eobook.train import list_checkpoints, load_checkpoint

CHAPTER = "dino_mm"
ARGS = ["-p", "deterministic=true", "-p", "batch_size=8", "-p", "max_steps_per_epoch=3", "-p", "epochs=2",
        "-p", "checkpoint_every=1", "-p", "device=cpu"]


def pretrain_command(out):
    return [sys.executable, "-m", "eobook", "pretrain", CHAPTER, "--profile", "tiny", "--out", str(out), *ARGS]


def run_to_end(out):
    subprocess.run(pretrain_command(out), check=True, capture_output=True, env=os.environ | {"EOBOOK_PROGRESS": "0"})
    return out / "checkpoints"


def kill_after_checkpoint(out, step, timeout=300):
    """Start the run and SIGKILL it as soon as checkpoint ``step`` exists (mid-epoch: 3 steps an epoch)."""
    proc = subprocess.Popen(pretrain_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    target = out / "checkpoints" / f"ckpt-{step:08d}.pt"
    while not target.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before checkpoint {step} appeared")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint {step} after {timeout} s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_ends_bitwise_equal(tmp_path):
    reference = run_to_end(tmp_path / "reference")
    kill_after_checkpoint(tmp_path / "killed", step=2)
    interrupted = list_checkpoints(tmp_path / "killed" / "checkpoints")
    assert interrupted and int(interrupted[-1].stem.split("-")[1]) < 6, "the kill must land before the end"
    resumed = run_to_end(tmp_path / "killed")

    final_ref = load_checkpoint(list_checkpoints(reference)[-1])
    final_res = load_checkpoint(list_checkpoints(resumed)[-1])
    assert final_ref["step"] == final_res["step"] == 6
    for name, tensor in final_ref["model"].items():
        assert torch.equal(tensor, final_res["model"][name]), name
    assert (reference / "metrics.jsonl").read_text() == (resumed / "metrics.jsonl").read_text()


def test_kill_during_checkpoint_write_keeps_newest_good_one(tmp_path, monkeypatch):
    from eobook import runtime

    good = runtime.atomic_torch_save({"model": {"w": torch.ones(2)}, "step": 1}, tmp_path / "ckpt-00000001.pt")

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(runtime.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        runtime.atomic_torch_save({"model": {"w": torch.zeros(2)}, "step": 2}, tmp_path / "ckpt-00000002.pt")
    assert list_checkpoints(tmp_path) == [good]
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_of_another_chapter_or_size_is_refused_by_name(tmp_path, capsys):
    from eobook.__main__ import main

    out = str(tmp_path / "run")
    short = ["-p", "batch_size=8", "-p", "max_steps_per_epoch=1", "-p", "epochs=1", "-p", "device=cpu"]
    assert main(["pretrain", "dino_mm", "--profile", "tiny", "--out", out, *short]) == 0
    capsys.readouterr()
    assert main(["pretrain", "dino_mm", "--profile", "tiny", "--out", out, *short, "-p", "embed_dim=32"]) == 2
    assert "checkpoint does not match this run (embed_dim: expected 32, checkpoint has" in capsys.readouterr().err
    assert main(["pretrain", "fus_mae", "--profile", "tiny", "--out", out, *short]) == 2
    assert "chapter: expected 'fus_mae', checkpoint has 'dino_mm'" in capsys.readouterr().err
