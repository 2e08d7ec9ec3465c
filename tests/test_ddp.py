"""DDP under torchrun: two CPU processes (gloo) follow the same loss trajectory as one process with the
same global batch, for DINO-MM's pretraining step (its centre is all-reduced); rank 0 alone writes."""
import json
import os
import socket
import subprocess
import sys

import pytest

ARGS = ["pretrain", "dino_mm", "--profile", "tiny", "-p", "batch_size=8", "-p", "max_steps_per_epoch=3",
        "-p", "epochs=2", "-p", "checkpoint_every=3", "-p", "device=cpu", "-p", "deterministic=true"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out, nproc):
    env = os.environ | {"OMP_NUM_THREADS": "1", "EOBOOK_PROGRESS": "0"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "eobook", *ARGS, "--out", str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), "-m", "eobook", *ARGS, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "checkpoints" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    single = run(tmp_path / "one", 1)
    double = run(tmp_path / "two", 2)
    assert [r["step"] for r in double] == [r["step"] for r in single] == list(range(6))  # rank 0 logged once
    for a, b in zip(single, double):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5), (a["step"], a["loss"], b["loss"])
        assert b["kl_to_center"] == pytest.approx(a["kl_to_center"], rel=1e-3, abs=1e-5)
    names = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert names == ["ckpt-00000003.pt", "ckpt-00000006.pt", "metrics.jsonl"]
