"""DataLoader workers' reusable batch buffers (eobook.data.ring): the batches are those read without them, a
batch the caller holds is never rewritten, and training through them (and its resume) is unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from eobook.data import BigEarthNetMM, ensure_sample_world, ring
from eobook.data.pack import prepare
from eobook.runtime import seed_everything, set_deterministic
from eobook.train import TrainConfig, fit
from eobook.train.loop import ResumableBatchSampler, make_loader, native_batches, samples_per_block


@pytest.fixture(scope="module")
def ben(tmp_path_factory):
    """BigEarthNet-MM's tiny training split, packed (64 samples, 8 per chunk of S2)."""
    world = ensure_sample_world("tiny", 0)
    store = prepare("BigEarthNetMM", world / "BigEarthNet-MM", tmp_path_factory.mktemp("ring") / "ben.zarr")
    return BigEarthNetMM(store, split="train")


#: (slot, hand-over number) of every batch that reached this process through a slot, while ``hand_overs`` spies
HANDED: list[tuple[int, int]] = []
RECEIVED = ring._received


def _spy(batch, token, released, index, number, storage):
    """ring._received, noting the hand-over (module level: forked workers pickle it by name)."""
    HANDED.append((index, number))
    return RECEIVED(batch, token, released, index, number, storage)


@pytest.fixture
def hand_overs(monkeypatch):
    """The list of the hand-overs (:data:`HANDED`) received during the test."""
    HANDED.clear()
    monkeypatch.setattr(ring, "_received", _spy)  # unpickling looks the function up by name
    return HANDED


def batches(dataset, slots: int, keep: bool, workers: int = 2, start_batch: int = 0) -> list[dict]:
    """One epoch of fit's loader (batches of 4) over ``dataset``'s native batches through ``slots`` slots per
    worker: the batches as received (``keep``), else copies made on arrival (the received ones dropped, as a
    training step drops them)."""
    loaded, _ = native_batches(dataset, slots)
    sampler = ResumableBatchSampler(len(dataset), 4, seed=0, block=samples_per_block(dataset))
    sampler.set_epoch(1, start_batch)
    out = []
    for batch in make_loader(loaded, sampler, workers):
        out.append(batch if keep else {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    return out


def assert_equal(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys() and a["id"] == b["id"]
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_ring_batches_equal_fresh_batches(ben, hand_overs):
    """A whole epoch (16 batches, 2 workers) through the ring equals it read into fresh memory; the slots
    were reused (released by this process), and forgotten once the pass ended."""
    expected = batches(ben, 0, keep=True)
    assert not hand_overs  # slots=0: no slot lent
    got = batches(ben, ring.SLOTS, keep=False)
    assert_equal(got, expected)
    assert max(number for _, number in hand_overs) >= 2  # a slot carried a second batch
    assert len(hand_overs) >= len(got) - 2  # each worker's first batch told the slots' size
    assert ring.records() == 0


def test_batches_held_by_the_caller_are_never_rewritten(ben, hand_overs):
    """Every batch kept (8 per worker, twice its slots), or only a view or a numpy array of one, still holds
    what was read: a worker falls back to fresh memory rather than rewrite a slot in use."""
    expected = batches(ben, 0, keep=True)
    assert_equal(batches(ben, ring.SLOTS, keep=True), expected)
    assert all(number == 1 for _, number in hand_overs)  # no slot was released while its batch was held
    views, arrays = [], []
    loaded, _ = native_batches(ben, ring.SLOTS)
    sampler = ResumableBatchSampler(len(ben), 4, seed=0, block=samples_per_block(ben))
    sampler.set_epoch(1)
    for batch in make_loader(loaded, sampler, 2):
        views.append(batch["s2"][:, 3])
        arrays.append(batch["label"].numpy())
    assert all(torch.equal(v, e["s2"][:, 3]) for v, e in zip(views, expected))
    assert all((a == e["label"].numpy()).all() for a, e in zip(arrays, expected))


def test_resume_mid_epoch_through_the_ring(ben):
    """Starting an epoch at batch 5 (a resumed run) reads through the ring what a full epoch reads there."""
    expected = batches(ben, 0, keep=True)
    assert_equal(batches(ben, ring.SLOTS, keep=False, start_batch=5), expected[5:])


@pytest.mark.parametrize("keep", ["view", "numpy", "storage"])
def test_release_waits_for_every_reference(keep):
    """The main process releases a slot only when its record holds the last reference: not while a view, a
    numpy array or the storage object of the batch lives on."""
    storage = torch.UntypedStorage._new_shared(64)
    released = torch.zeros(2, dtype=torch.int64)
    batch = ring._received({"x": torch.empty(0, dtype=torch.int16).set_(storage, 0, (4, 8))}, (-1, 0), released,
                           1, 7, storage)
    x = batch["x"]
    held = x[2:] if keep == "view" else x.numpy() if keep == "numpy" else x.untyped_storage()
    del storage, x, batch
    try:
        ring._release_finished()
        assert released.tolist() == [0, 0]
        del held
        ring._release_finished()
        assert released.tolist() == [0, 7]
    finally:
        ring.forget([-1])


class Probe(nn.Module):
    """A linear multi-label probe on band means: a step that reads every array of the batch."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(14, 19)

    def forward(self, batch, ctx):
        x = torch.cat([batch["s2"].mean((-2, -1)), batch["s1"].mean((-2, -1))], 1)
        loss = nn.functional.binary_cross_entropy_with_logits(self.head(x), batch["label"].float())
        return {"loss": loss}


def train(ben, workers: int, ckpt_dir=None, stop=None) -> list[dict]:
    seed_everything(0)
    set_deterministic(True)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, log_every=0, device="cpu", num_workers=workers,
                      checkpoint_every=3)
    return fit(Probe(), ben, cfg, checkpoint_dir=ckpt_dir, stop_after_steps=stop, log=lambda _: None).history


def test_fit_through_the_ring_equals_in_process_and_resumes(ben, tmp_path, hand_overs):
    """fit with 2 workers (batches through their slots) trains bitwise as without workers; interrupted at
    step 5 and resumed (mid-epoch, the workers restarted), it ends with the same history."""
    expected = train(ben, 0)
    assert train(ben, 2) == expected
    assert hand_overs and ring.records() == 0
    train(ben, 2, tmp_path, stop=5)
    assert train(ben, 2, tmp_path) == expected
