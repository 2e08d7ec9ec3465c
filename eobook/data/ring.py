"""A DataLoader worker's ring of reusable shared-memory batch buffers, and the release the main process drives.

Why: a worker hands each batch to the main process in shared memory. Allocated fresh for every batch (as
``default_collate`` does), every page of it is faulted in and zeroed by the kernel before the chunk bytes are
copied in: on a 2-core VM that was about 88% of a packed-store worker's time (1.03 s of system time per GiB,
about 410k minor page faults). A buffer reused from batch to batch is already mapped, in the worker and in the
main process, so reading into it costs the copy alone.

How: inside a worker, :func:`reading` (around one batch read, :class:`eobook.train.loop.NativeBatches`) lends
the arrays of the batch from a free one of the worker's ``slots`` shared buffers
(:func:`eobook.data.store.empty_batch` asks :func:`lend`). The batch leaves the worker as a :class:`RingBatch`,
which pickles (in the worker's queue thread) into the batch plus its slot's identity and hand-over number.
Unpickled in the main process (the DataLoader's pin-memory thread or the main thread), :func:`_received`
records the slot; at each arrival :func:`_release_finished` releases every slot whose buffer nobody but its
record references any more (the pinned copy was made, or the CPU step dropped the batch, and no caller kept
it, a view, a numpy array or the storage of it). A worker rewrites a slot only once the main process has
released the last batch it sent in it (:attr:`BatchRing.released`, a shared counter per slot, written with
the hand-over number so that a late release cannot free a batch still in transit); when none is free it
reads the batch into fresh shared memory, as before, so it never waits and never overwrites a batch in use.
Under DDP every rank's main process releases its own workers' slots; a resumed epoch only starts its sampler
later. The loop's workers end with each pass (``persistent_workers=False``), and their rings with them.

The record keeps each slot's buffer alive in the main process, so that the next batch in the same slot is
rebuilt from torch's cache of shared storages (``torch.multiprocessing.reductions.shared_cache``, keyed by
the shared file) instead of being mapped again. :func:`forget` drops the records of workers that ended (the
loop's loader does at the end of each pass, :func:`eobook.train.loop.make_loader`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

#: Slots per worker: a worker holds up to ``prefetch_factor`` (2) batches in flight, the main process one in
#: its step; one more lets a slot be released a batch late without the worker falling back to fresh memory.
SLOTS = 4
#: Byte alignment of each array within a slot (a cache line; any element size divides it).
ALIGN = 64


class BatchRing:
    """A worker process's ``slots`` buffers and the shared counters of their hand-overs.

    ``released[i]`` (shared memory, written by the main process) is the hand-over number of slot i's last
    batch the main process is done with; ``issued[i]`` (this process only) the number of its last batch sent.
    Slot i is free when they are equal.
    """

    def __init__(self, slots: int = SLOTS):
        self.storages: list[torch.UntypedStorage | None] = [None] * slots  # made once a batch told the size
        self.issued = [0] * slots
        self.released = torch.zeros(slots, dtype=torch.int64).share_memory_()
        self.token = (os.getpid(), id(self))  # names this ring's records in the main process
        self.wanted = 0  # bytes of the largest batch read so far: the size of a new or grown slot
        self.active: int | None = None  # the slot lending the arrays of the batch being read
        self.used = 0  # bytes lent from the active slot (aligned)

    def _free_slot(self) -> int | None:
        released = self.released.tolist()
        return next((i for i, n in enumerate(self.issued) if released[i] == n), None)

    @contextlib.contextmanager
    def slot(self) -> Iterator[Callable[[Any], Any]]:
        """Read one batch into a free slot (where none is free, into fresh shared memory); yields the
        function that hands the batch over (:meth:`_hand_over`). A slot lent from but not handed over (the
        read failed, or its arrays went elsewhere) gets a new buffer: views of the old one may live on."""
        index = self._free_slot()
        if index is None:
            yield lambda batch: batch
            return
        storage = self.storages[index]
        if storage is None or storage.nbytes() < self.wanted:
            self.storages[index] = torch.UntypedStorage._new_shared(self.wanted) if self.wanted else None
        self.active, self.used, handed = index, 0, []

        def hand_over(batch: Any) -> Any:
            handed.append(True)
            return self._hand_over(batch, index)

        try:
            yield hand_over
        finally:
            if self.used and not handed:
                self.storages[index] = None
            self.active = None

    def lend(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """An uninitialised tensor in the active slot; None when there is none or it is full (the ring then
        grows its slots to the batch's size)."""
        if self.active is None:
            return None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        offset = -(-self.used // ALIGN) * ALIGN
        end = offset + int(np.prod(shape, dtype=np.int64)) * itemsize
        self.wanted = max(self.wanted, end)
        storage = self.storages[self.active]
        if storage is None or end > storage.nbytes():
            return None
        self.used = end
        return torch.empty(0, dtype=dtype).set_(storage, offset // itemsize, shape)

    def _hand_over(self, batch: Any, index: int) -> Any:
        """``batch``, read in slot ``index``, as it leaves the worker: a :class:`RingBatch` when any of it
        was lent from the slot (the main process then releases the slot), else the batch as it is (the
        worker's first batch, which tells the slots' size)."""
        if not self.used:
            return batch
        self.issued[index] += 1
        return RingBatch(batch, self.token, self.released, index, self.issued[index], self.storages[index])


_ring: BatchRing | None = None


def worker_ring(slots: int = SLOTS) -> BatchRing | None:
    """This DataLoader worker's ring (made on first use), None outside a worker: there a batch is not handed
    to another process, and plain memory serves."""
    global _ring
    if torch.utils.data.get_worker_info() is None:
        return None
    if _ring is None:
        _ring = BatchRing(slots)
    return _ring


def lend(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """An uninitialised tensor in the active slot of this worker's ring; None when no batch is being read
    into a slot (outside a worker, or no slot was free)."""
    return _ring.lend(shape, dtype) if _ring is not None else None


@contextlib.contextmanager
def reading(slots: int = SLOTS) -> Iterator[Callable[[Any], Any]]:
    """Read one batch in this worker's ring (of ``slots`` slots; 0: none, fresh memory per batch); yields the
    function to apply to the batch as it leaves the worker (the identity where no slot lends)."""
    ring = worker_ring(slots) if slots else None
    if ring is None:
        yield lambda batch: batch
        return
    with ring.slot() as hand_over:
        yield hand_over


class RingBatch:
    """A collated batch whose arrays lie (wholly or partly) in a worker's slot. It pickles into
    :func:`_received`'s arguments: the batch itself and what identifies the slot and the hand-over (the
    slot's storage travels as its shared file, like the batch's tensors)."""

    def __init__(self, batch: Any, token: tuple[int, int], released: torch.Tensor, index: int, number: int,
                 storage: torch.UntypedStorage):
        self.batch, self.ring = batch, (token, released, index, number, storage)

    def __reduce__(self):
        return _received, (self.batch, *self.ring)


class _Record:
    """The main process's record of one slot: its buffer (kept mapped), the worker's released counters, and
    the hand-over number of the batch not released yet (None once released)."""

    def __init__(self, storage: torch.UntypedStorage, released: torch.Tensor, index: int, number: int):
        self.storage, self.released, self.index, self.pending = storage, released, index, number


_records: dict[tuple[tuple[int, int], int], _Record] = {}
_records_lock = threading.Lock()


def _received(batch: Any, token: tuple[int, int], released: torch.Tensor, index: int, number: int,
              storage: torch.UntypedStorage) -> Any:
    """Unpickling a :class:`RingBatch` in the main process: release the slots whose batches are done with,
    record this one's slot, and return the batch itself."""
    with _records_lock:
        _release_finished()
        _records[(token, index)] = _Record(storage, released, index, number)
    return batch


def _release_finished() -> None:
    """Release every recorded slot whose buffer only its record references: no tensor, view, numpy array or
    storage object of the caller's holds it (the C++ count of the storage is the record's own reference, and
    its Python object is referenced by the record alone)."""
    for record in _records.values():
        if record.pending is None:
            continue
        # getrefcount: the record's reference and its own argument
        if torch._C._storage_Use_Count(record.storage._cdata) == 1 and sys.getrefcount(record.storage) == 2:
            record.released[record.index] = record.pending
            record.pending = None


def forget(pids: Iterable[int]) -> None:
    """Drop the records of the rings of the worker processes ``pids`` (they ended: their slots are never
    written again; a batch the caller still holds keeps its buffer alive by itself)."""
    pids = set(pids)
    with _records_lock:
        for key in [key for key in _records if key[0][0] in pids]:
            del _records[key]


def records() -> int:
    """Slots recorded in this process (for tests: the loop forgets its workers' slots after each pass)."""
    return len(_records)
