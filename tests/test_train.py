"""The training loop: schedules at known steps, EMA, learning, checkpoint/resume, refusal of foreign checkpoints."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from eobook.runtime import DistInfo, seed_everything, set_deterministic
from eobook.train import (CheckpointError, ResumableBatchSampler, TrainConfig, cosine_schedule, ema_momentum, ema_update,
                          fit, list_checkpoints, load_checkpoint, param_groups, rampup)


class LinearData(torch.utils.data.Dataset):
    """y = x @ w with a fixed w: a regression the loop must learn."""

    def __init__(self, n=64, dim=5):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.arange(1.0, dim + 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Regressor(nn.Module):
    """A pretraining module with step randomness from ctx.generator and an EMA copy (like a teacher)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(5, 1)
        self.teacher = nn.Linear(5, 1).requires_grad_(False)

    def forward(self, batch, ctx):
        noise = 0.01 * torch.randn(batch["x"].shape, generator=ctx.generator)
        loss = ((self.net(batch["x"] + noise).squeeze(-1) - batch["y"]) ** 2).mean()
        return {"loss": loss, "noise_mean": noise.mean()}

    def on_step_end(self, ctx):
        ema_update(self.teacher, self.net, 0.9)


def config(**kw):
    base = dict(epochs=3, batch_size=8, lr=0.3, warmup_epochs=1, checkpoint_every=5, log_every=0, device="cpu",
                weight_decay=1e-4, weight_decay_end=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def train(ckpt_dir=None, stop=None, **kw):
    seed_everything(0)
    set_deterministic(True)
    model = Regressor()
    result = fit(model, LinearData(), config(**kw), checkpoint_dir=ckpt_dir, checkpoint_meta={"chapter": "toy"},
                 stop_after_steps=stop, log=lambda _: None)
    return model, result


def test_cosine_schedule_known_values():
    values = cosine_schedule(1.0, 0.0, total_steps=10, warmup_steps=2)
    np.testing.assert_allclose(values[:3], [0.0, 0.5, 1.0])
    # half-way through the 8 cosine steps the value is the mean of base and final
    assert values[2 + 4] == pytest.approx(0.5)
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert len(values) == 10 and np.all(np.diff(values[2:]) < 0)


def test_rampup_matches_its_formula():
    assert rampup(0, 80) == pytest.approx(math.exp(-5))
    assert rampup(40, 80) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup(80, 80) == 1.0 and rampup(200, 80) == 1.0


def test_ema_momentum_is_a_half_cosine_to_one():
    assert ema_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert ema_momentum(0.996, 50, 100) == pytest.approx(1 - 0.004 / 2)
    assert ema_momentum(0.996, 100, 100) == pytest.approx(1.0)
    # the same curve as a cosine schedule from the base momentum to 1 (DINO's teacher)
    assert ema_momentum(0.99, 7, 40) == pytest.approx(cosine_schedule(0.99, 1.0, 40)[7])


def test_param_groups_exempt_biases_norms_tokens_and_named_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.norm = nn.Linear(3, 4), nn.LayerNorm(4)
            self.cls_token = nn.Parameter(torch.zeros(1, 4))
            self.modality_embed = nn.Parameter(torch.zeros(2, 4))
            self.frozen = nn.Linear(4, 4).requires_grad_(False)

        def no_weight_decay(self):  # timm's convention
            return {"modality_embed"}

    net = Net()
    decay, no_decay = param_groups(net, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(net.proj.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(net.proj.bias), id(net.norm.weight), id(net.norm.bias),
                                                   id(net.cls_token), id(net.modality_embed)}


def test_stage_settings_inherit_the_run_and_reset_the_rest():
    run = config(seed=7, checkpoint_every=3, grad_clip=1.0, warmup_epochs=1)
    stage = run.stage(epochs=5, optimizer="sgd", lr=0.01)
    assert (stage.seed, stage.device, stage.checkpoint_every) == (7, "cpu", 3)
    assert (stage.epochs, stage.optimizer, stage.lr) == (5, "sgd", 0.01)
    assert (stage.grad_clip, stage.warmup_epochs, stage.log_every) == (0.0, 0.0, 0)


def test_ema_update_is_exact():
    target, source = nn.Linear(2, 2), nn.Linear(2, 2)
    expected = 0.75 * target.weight.detach().clone() + 0.25 * source.weight.detach()
    ema_update(target, source, 0.75)
    torch.testing.assert_close(target.weight, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(target, source, 1.5)


def test_fit_learns_and_follows_schedules(tmp_path):
    model, result = train(tmp_path)
    losses = result.series("loss")
    assert np.mean(losses[-4:]) < 0.1 * np.mean(losses[:4])
    lrs = result.series("lr")
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(0.3) and lrs[-1] < 0.05
    wds = result.series("wd")
    assert wds[0] == pytest.approx(1e-4) and wds[-1] > 9e-4
    # the EMA teacher followed the student (it lags, so it points the same way without being equal)
    assert float(nn.functional.cosine_similarity(model.teacher.weight, model.net.weight.detach())) > 0.9
    assert not torch.equal(model.teacher.weight, model.net.weight)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == result.steps == 24


def test_resume_equals_uninterrupted_run(tmp_path):
    full_model, full = train(tmp_path / "a")
    train(tmp_path / "b", stop=7)                      # interrupted after step 7
    assert [p.name for p in list_checkpoints(tmp_path / "b")][-1] == "ckpt-00000007.pt"
    resumed_model, resumed = train(tmp_path / "b")     # the same command again
    assert resumed.resumed_from == 7
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.history == full.history             # the log was truncated and continued, not duplicated


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    train(tmp_path, keep_checkpoints=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000020.pt", "ckpt-00000024.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_foreign_or_damaged_checkpoint_is_refused(tmp_path):
    _, result = train(tmp_path)
    with pytest.raises(CheckpointError, match="chapter: expected 'dino_mm', checkpoint has 'toy'"):
        load_checkpoint(result.checkpoint, {"chapter": "dino_mm"})
    damaged = tmp_path / "ckpt-00000099.pt"
    damaged.write_bytes(result.checkpoint.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(damaged)


def test_nan_loss_stops_with_a_clear_error():
    class Broken(Regressor):
        def forward(self, batch, ctx):
            return {"loss": super().forward(batch, ctx)["loss"] * float("nan")}

    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        fit(Broken(), LinearData(), config(), log=lambda _: None)


def test_sampler_shards_a_global_batch_over_ranks():
    one = list(ResumableBatchSampler(32, 8, seed=3))
    ranks = [list(ResumableBatchSampler(32, 8, seed=3, dist=DistInfo(r, 2, r))) for r in (0, 1)]
    for b, batch in enumerate(one):
        assert ranks[0][b] + ranks[1][b] == batch
    late = ResumableBatchSampler(32, 8, seed=3)
    late.set_epoch(0, start_batch=2)
    assert list(late) == one[2:]
    with pytest.raises(ValueError, match="not divisible by the world size"):
        ResumableBatchSampler(32, 7, seed=0, dist=DistInfo(0, 2, 0))


def test_chunk_aligned_sampler_visits_every_index_once_seeded_and_resumable():
    """Blocks of 16 (a packed store's samples per chunk), 203 samples (a partial last block): every index once
    per epoch, the same order for the same seed and epoch, another for the next epoch, a resume mid-epoch
    continues the same order, and each batch draws from the few chunks of its window."""
    def epoch_batches(epoch, start=0, seed=5):
        sampler = ResumableBatchSampler(203, 8, seed=seed, drop_last=False, block=16, window_batches=2)
        sampler.set_epoch(epoch, start)
        return list(sampler)

    first = epoch_batches(0)
    assert sorted(i for batch in first for i in batch) == list(range(203))
    assert first == epoch_batches(0) and first != epoch_batches(1) and first != epoch_batches(0, seed=6)
    assert epoch_batches(0, start=7) == first[7:]
    assert max(len({i // 16 for i in batch}) for batch in first) <= 2  # a window: 16 samples, one chunk
    assert first != [sorted(b) for b in first]  # shuffled within the window too
    full = ResumableBatchSampler(203, 8, seed=5, block=1)
    assert list(full) == list(ResumableBatchSampler(203, 8, seed=5))  # block 1: the full permutation as before
    with pytest.raises(ValueError, match="block, window_batches"):
        ResumableBatchSampler(203, 8, seed=5, block=0)


def test_samples_per_block_follows_batched_readers_only(tmp_path):
    """The loop aligns its sampler to a packed store's chunks only where whole batches reach the reader."""
    from torch.utils.data import Subset

    from eobook.data import BigEarthNetMM, ensure_sample_world
    from eobook.data.pack import prepare
    from eobook.train.loop import samples_per_block

    world = ensure_sample_world("tiny", 0)
    packed = BigEarthNetMM(prepare("BigEarthNetMM", world / "BigEarthNet-MM", tmp_path / "ben.zarr"), split="train")
    k = packed.store.samples_per_chunk
    assert k > 1 and samples_per_block(packed) == samples_per_block(Subset(packed, range(10))) == k
    assert samples_per_block(Subset(packed, [3, 1])) == 1  # shuffled indices: no chunk alignment left
    assert samples_per_block(BigEarthNetMM(world / "BigEarthNet-MM", split="train")) == 1  # the folder

    class PerSample(torch.utils.data.Dataset):  # a wrapper that reads one sample at a time
        def __init__(self, base):
            self.base = base

    assert samples_per_block(PerSample(packed)) == 1


def test_plateau_schedule_reduces_lr_when_loss_stalls():
    class Flat(Regressor):
        def forward(self, batch, ctx):
            return {"loss": self.net.bias.sum() * 0 + 1.0}

    cfg = config(lr_schedule="plateau", warmup_epochs=0, epochs=6, plateau_patience=1, plateau_factor=0.5)
    result = fit(Flat(), LinearData(), cfg, log=lambda _: None)
    per_epoch = [result.series("lr")[i * 8] for i in range(6)]
    assert per_epoch[0] == pytest.approx(0.3) and per_epoch[-1] < per_epoch[0]


def test_fit_tells_the_dataset_each_epoch():
    class EpochAware(LinearData):
        seen = []

        def set_epoch(self, epoch):
            self.seen.append(epoch)

    data = EpochAware()
    fit(Regressor(), data, config(epochs=3), log=lambda _: None)
    assert data.seen == [0, 1, 2]


def test_checkpoint_refused_when_the_disk_is_full(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(OSError, match="needs .* GiB free, the disk has 0.00 GiB"):
        train(tmp_path)
    assert list_checkpoints(tmp_path) == []


class _Payload:
    """An object whose unpickling would run code: a checkpoint must never be unpickled blindly."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoints_load_weights_only(tmp_path, capsys):
    _, result = train(tmp_path / "run")
    state = load_checkpoint(result.checkpoint)              # a real checkpoint: tensors and plain values only
    assert state["step"] == 24 and isinstance(state["rng"]["numpy"][1], torch.Tensor)
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": {}, "payload": _Payload()}, hostile)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(hostile)
    assert "unpickled!" not in capsys.readouterr().out


def test_samples_per_second_counts_the_samples_of_any_batch_layout():
    from eobook.train.loop import _batch_size

    assert _batch_size({"id": ["a", "b", "c"], "x": torch.zeros(3, 2)}) == 3
    assert _batch_size({"id": ["a", "b"]}) == 2 and _batch_size([torch.zeros(5, 1), torch.zeros(5)]) == 5
    assert _batch_size({"views": {"a": torch.zeros(4, 1)}}) == 4


def test_a_smoke_run_trains_two_steps_on_whatever_few_samples_it_has():
    small = torch.utils.data.Subset(LinearData(), range(6))          # fewer samples than one batch of 8
    result = fit(Regressor(), small, config(smoke=True, epochs=50, batch_size=8), log=lambda _: None)
    assert result.steps == 2 and result.samples_per_second > 0
    stage = config(smoke=True).stage(epochs=100, batch_size=256)
    assert stage.smoke                                                # every evaluation stage is smoked too
    assert fit(Regressor(), LinearData(), stage, log=lambda _: None).steps == 2


def test_a_finished_run_keeps_the_model_only_and_resumes_to_its_end(tmp_path):
    model, result = train(tmp_path)
    final = load_checkpoint(result.checkpoint)
    assert final["step"] == 24 and final["optimizer"] is None                    # no Adam state after the end
    interrupted = load_checkpoint(list_checkpoints(tmp_path)[-2])
    assert interrupted["optimizer"] is not None                                  # mid-run checkpoints keep it
    again, rerun = train(tmp_path)
    assert rerun.resumed_from == 24 and rerun.steps == 24
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_gradient_accumulation_follows_the_curve_of_the_larger_batch(tmp_path):
    """grad_accum=4 at batch 4 takes the optimiser steps of batch 16: the same samples per step (the sampler's
    order is the same), the mean of four micro-batch gradients, the same schedules."""
    def run(**kw):
        seed_everything(0)
        model = nn.Linear(5, 1)

        class Fit(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = model

            def forward(self, batch, ctx):
                return {"loss": ((self.net(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()}

        result = fit(Fit(), LinearData(), config(epochs=2, lr=0.05, checkpoint_every=0, **kw), log=lambda _: None)
        return model, result

    big, big_run = run(batch_size=16)
    small, small_run = run(batch_size=4, grad_accum=4)
    assert small_run.steps == big_run.steps == 8
    assert small_run.series("loss") == pytest.approx(big_run.series("loss"), rel=1e-5)
    assert torch.allclose(small.weight, big.weight, atol=1e-5)
    plain, plain_run = run(batch_size=4)                     # without accumulation: 4x the steps, another curve
    assert plain_run.steps == 32


def test_gradient_accumulation_resumes_mid_epoch(tmp_path):
    full_model, full = train(tmp_path / "a", batch_size=4, grad_accum=2)
    train(tmp_path / "b", stop=5, batch_size=4, grad_accum=2)
    resumed_model, resumed = train(tmp_path / "b", batch_size=4, grad_accum=2)
    assert resumed.resumed_from == 5 and resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()))
