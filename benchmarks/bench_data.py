"""Input pipeline per chapter: samples/s of one data-loading worker against the samples/s one GPU consumes.

For each chapter it builds the pretraining dataset of the ``full`` profile (its dataset options and the
per-sample CPU work, e.g. seasons) three times and times ONE DataLoader worker on each, read through ``fit``'s
loader (``make_loader``, one worker, one torch thread): the batches of the loop's sampler (chunk-aligned on
a packed store), each read with the dataset's ``__getitems__`` where it has one (else ``dataset[i]`` per
index) and collated, native where ``fit`` normalises on the device. Where ``fit`` reads native batches into
the workers' reusable buffers (``eobook.data.ring``) it is timed twice in the same process: through the ring
(``path`` ring, what ``fit`` does) and with fresh shared memory per batch (``path`` fresh, the path before
the ring). The rate is per second of the worker's CPU time (its ``/proc`` times: the machine's other jobs
and the main process do not count), with its system share and page faults; the main process copies each
batch out of shared memory into a reused buffer, as the pin-memory thread copies it into pinned memory.

* ``folder``: the synthetic sample world's native files;
* ``packed``: a packed store of it (``eobook.data.pack.prepare``);
* ``real px``: a packed store of real-sized patches (BigEarthNet 120 px, SSL4EO-S12 264 px, MMEarth 64 px),
  each a mosaic of sample-world patches (distinct ones, so that the store compresses like the sample world,
  not like repeated pixels), holding only the arrays the chapter reads.

The sample world's patches are smaller than the real ones, so its two rows are also printed scaled by the
pixel-count ratio (a pessimistic estimate: per-file and per-batch costs do not grow with the pixels); the
``real px`` row needs no scaling. The FLOPs per sample are counted on the real-sized store's batches (the
full-size pretraining step, ``bench_train.bench_one``, once on the CPU at batch 2), and an assumed GPU
throughput (default: an H100's 989 TFLOP/s dense bf16 at 35% MFU) gives the samples/s one GPU consumes,
and so the workers needed to feed it. Bytes per sample: as delivered to the GPU (the collated batch), and
as read from disk (the compressed chunks of the arrays read); their product with the needed samples/s is
the bandwidth one GPU needs from memory and from storage.

    python -m eobook bench data                                   # every chapter, tiny sample world
    python -m eobook bench data --size small --chapters dino_mm cromss --samples 64

Prints a table and, last, one JSON line (``workers_per_gpu`` from the ``real px`` rows of fit's path,
``workers_per_gpu_fresh`` from those read into fresh memory); asserts nothing. Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from torch.utils.data import DataLoader

from eobook.chapters import chapter_names, get_chapter, get_profile
from eobook.data import ensure_sample_world, ring
from eobook.data.pack import COMPRESSIONS, pack, prepare
from eobook.data.store import open_packed
from eobook.data.world import SIZES
from eobook.train.checkpoint import state_bytes
from eobook.train.loop import (NativeBatches, ResumableBatchSampler, batch_reader, make_loader, native_batches,
                               samples_per_block)

# benchmarks/ is a folder of scripts, not a package: make the sibling script importable to reuse its helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bench_one  # noqa: E402


@dataclass(frozen=True)
class ChapterData:
    """What a chapter's pretraining reads, and where its augmentation runs."""

    reader: str  #: eobook.data reader class, as ``prepare`` names it
    path: str  #: the dataset under the data root; ``{field}`` is filled from the profile
    sample_px_field: str  #: the WorldSize field with the sample world's patch side
    real_px: int  #: patch side of the real dataset (BigEarthNet 120, SSL4EO-S12 264, MMEarth64 64)
    arrays: tuple[str, ...]  #: the store's arrays the chapter's pretraining reads
    augmentation: str  #: where the per-sample augmentation runs (read from the chapter's code)


CHAPTER_DATA = {
    "dino_mm": ChapterData("BigEarthNetMM", "BigEarthNet-MM", "ben_px", 120, ("s2", "s1", "label", "label43"),
                           "GPU: multi-crop 2x112 + 8x48 and sensor drop batched in forward"),
    "fus_mae": ChapterData("BigEarthNetMM", "BigEarthNet-MM", "ben_px", 120, ("s2", "s1", "label", "label43"),
                           "GPU: antialiased resize to 128 px batched in forward; no augmentation, masking in forward"),
    "multimae_eo": ChapterData("MMEarth", "MMEarth/{mmearth_file}", "mmearth_px", 64,
                               ("s2", "elevation", "worldcover", "s2_level"),
                               "GPU: resize to 56 px and flip in forward"),
    "softcon": ChapterData("SSL4EOS12", "SSL4EO-S12", "ssl4eo_px", 264, ("s2c", "multilabel", "has_multilabel"),
                           "reader: one random season; GPU: 2 random-resized 224 crops + jitter in forward"),
    "cromss": ChapterData("SSL4EOS12", "SSL4EO-S12", "ssl4eo_px", 264, ("s1", "s2c", "dw"),
                          "reader: the drawn season's S1 + S2 (packed) and all 4 DW masks; GPU: smoothing, 256 "
                          "crop/flip/rot in forward"),
    "side_by_side": ChapterData("SSL4EOS12", "SSL4EO-S12", "ssl4eo_px", 264,
                                ("s2a", "s1", "multilabel", "has_multilabel"),
                                "reader: one random season of S2 L2A + S1; GPU: MultiMAE's resize to 224 and flip in "
                                "forward (the objective timed: see OFFLINE_OVERRIDES)"),
}

#: Each rate is timed over whole passes over the batches lasting at least this long, and over at least this
#: many batches (a batch of SoftCon's or CromSS's real-sized samples is about 1 GB).
MIN_SECONDS = 1.0
MIN_BATCHES = 8
#: Bytes of real-sized samples a worker reads per pass: more than the CPU caches (480 MiB of L3 were reported
#: here), so that a pass reads from memory (the page cache), not from a cache warmed by the previous pass.
WORKING_SET = 1 << 30

#: Profile fields that cannot be used offline and change neither the data nor the FLOPs; chapter 6 is timed
#: with its objective of the fewest FLOPs per sample (MultiMAE's: 12 GFLOP at 224 px), the one that needs data
#: fastest (every objective reads the same SSL4EO-S12 images; CromSS's reads CromSS's arrays).
OFFLINE_OVERRIDES = {"softcon": {"weights": ""}, "side_by_side": {"objective": "multimae_eo"}}


def full_profile(chapter: str, world_size: str, data_root: str = ""):
    """The chapter's ``full`` profile reading from disk: the sample world (``data_root=""``) or ``data_root``."""
    overrides = {"data_root": data_root, "world_size": world_size, **OFFLINE_OVERRIDES.get(chapter, {})}
    if hasattr(get_profile(chapter, "full"), "cache_data"):
        # cached data would be read into memory once, and the benchmark would time a list lookup, not the reader
        overrides["cache_data"] = False
    return get_profile(chapter, "full", **overrides)


def pretraining_data(chapter: str, cfg):
    """(dataset, collate) exactly as ``build_pretraining`` returns them; the module is dropped."""
    _, dataset, collate, _ = get_chapter(chapter).build_pretraining(cfg)
    return dataset, collate


def timed_batches(dataset, samples: int, batch: int, seed: int = 0) -> list[list[int]]:
    """The index batches a worker reads: the loop's sampler over the first ``samples`` indices (chunk-aligned
    where the dataset reads a packed store in batches, as in ``fit``)."""
    n = min(samples, len(dataset))
    sampler = ResumableBatchSampler(n, min(batch, n), seed, drop_last=False, block=samples_per_block(dataset))
    return list(sampler)


class Cycle:
    """A DataLoader's batch sampler that repeats ``batches`` without end (the timing loop stops it)."""

    def __init__(self, batches: list[list[int]]):
        self.batches = batches

    def __iter__(self):
        return itertools.cycle(self.batches)

    def __len__(self) -> int:
        return sys.maxsize


def process_times(pid: int) -> tuple[float, float, int]:
    """(user seconds, system seconds, minor page faults) of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])


def thread_faults() -> int:
    """Minor page faults of the calling thread so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def worker_samples_per_second(dataset, collate, samples: int, batch: int, slots: int) -> dict:
    """One DataLoader worker reading the loop's batches of ``samples`` indices through ``fit``'s loader
    (``make_loader``; native batches where ``fit`` normalises on the device, read into a ring of ``slots``
    reusable buffers per worker, or with ``slots=0`` into fresh shared memory per batch, the path before the
    ring), timed over whole passes after warm ones. The main process drops each batch after copying
    it into a reused buffer, as the pin-memory thread copies it into pinned memory on a GPU node. The first
    passes are not timed: a worker lives a whole epoch, and a slot's pages are faulted in once.

    Returns samples per second of the worker's CPU time (what one worker on its own core delivers; the wall
    rate on this shared machine also holds the main process's and other jobs' time), the worker's system
    share of that time and its minor page faults per GiB delivered, bytes per sample delivered, and the main
    process's copy rate (GB/s) and page faults per GiB copied."""
    # the pretraining collate of every chapter is None: the ring needs the reader's batch passed through
    loaded, _ = native_batches(dataset, slots if collate is None else 0)
    batches = timed_batches(dataset, samples, batch)
    loader = make_loader(loaded, Cycle(batches), 1, collate)
    stream = DataLoader.__iter__(loader)  # the iterator itself, for its worker's id (RingLoader.__iter__ hides it)
    worker = stream._workers[0].pid
    copies: dict[tuple, torch.Tensor] = {}  # the copy's destination per array and shape, reused like pinned memory

    def copy_out(received: dict) -> tuple[float, int]:
        """Copy ``received`` out of shared memory, as the pin-memory thread does: (seconds, page faults)."""
        faults, t0 = thread_faults(), time.perf_counter()
        for key, value in received.items():
            if isinstance(value, torch.Tensor):
                copies.setdefault((key, value.shape, value.dtype), torch.empty_like(value)).copy_(value)
        return time.perf_counter() - t0, thread_faults() - faults

    try:
        # warm passes: the worker opens its files, and makes and faults in each slot it uses (up to one per
        # batch in flight; a pass over the real-sized SoftCon store is one batch); the copies' buffers are made
        for _ in range(math.ceil((ring.SLOTS + 1) / len(batches)) * len(batches)):
            copy_out(next(stream))
        passes, n, delivered, copy_seconds, copy_faults = 0, 0, 0, 0.0, 0
        start, before = time.perf_counter(), process_times(worker)
        while passes == 0 or time.perf_counter() - start < MIN_SECONDS or passes * len(batches) < MIN_BATCHES:
            for indices in batches:
                received = next(stream)
                seconds, faults = copy_out(received)
                copy_seconds, copy_faults = copy_seconds + seconds, copy_faults + faults
                delivered += state_bytes(received)
                n += len(indices)
                del received  # as a step drops its batch: the slot can be released
            passes += 1
        wall = time.perf_counter() - start
        user, system, faults = (b - a for a, b in zip(before, process_times(worker)))
    finally:
        ring.forget([worker])
        stream._shutdown_workers()
    gib = delivered / 2**30
    return {"rate": n / max(user + system, 1e-9), "wall_rate": n / wall, "system_share": system / max(user + system, 1e-9),
            "faults_per_gib": faults / gib, "bytes_per_sample": delivered / n,
            "main_copy_gb_s": delivered / 1e9 / max(copy_seconds, 1e-9), "main_faults_per_gib": copy_faults / gib}


def flops_per_sample(chapter: str, world_size: str, data_root: str) -> float:
    """FLOPs of one sample in the full-size pretraining step (forward + backward), counted on the CPU at batch 2
    on the batches of ``data_root`` (the real-sized store: CromSS crops 256 px from its 264 px tiles)."""
    overrides = {"world_size": world_size, "data_root": data_root, **OFFLINE_OVERRIDES.get(chapter, {})}
    row = bench_one(chapter, "full", batch=2, steps=1, device="cpu", amp="off", compile_=False, overrides=overrides)
    return row["gflop_per_step"] * 1e9 / row["batch"]


def packed_root(chapter: str, cfg, world: Path, stores: Path, compression: str) -> Path:
    """A data root under ``stores`` holding the chapter's dataset packed at its usual path (packed once per run)."""
    relative = CHAPTER_DATA[chapter].path.format_map(vars(cfg))
    out = stores / "sample" / relative
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        prepare(CHAPTER_DATA[chapter].reader, world / relative, out, compression=compression)
        print(f"  packed {relative} in {time.perf_counter() - start:.1f} s")
    return stores / "sample"


class Mosaic:
    """``count`` real-sized raw samples made of a packed sample-world store's ``rows``: each spatial array (last
    two axes ``px`` x ``px``) a mosaic of ``ceil(real / px)^2`` sample-world patches cropped to ``real`` px,
    the patches of sample i ``rows[(i + j * (1 + i // len(rows))) % len(rows)]`` for tile j (so that no two
    samples repeat each other while there are fewer rows than samples); the other arrays those of
    ``rows[i % len(rows)]``; ``arrays`` only. A ``raw_sample`` source for :func:`eobook.data.pack.pack`."""

    def __init__(self, group, rows: np.ndarray, count: int, arrays: tuple[str, ...], px: int, real: int,
                 raw_dtypes: dict):
        self.group, self.rows, self.count, self.arrays, self.px, self.real = group, rows, count, arrays, px, real
        self.raw_dtypes = raw_dtypes  # raw_sample's dtypes of the arrays the source stores narrower ...
        self.PACKED_DTYPES = {k: str(group[k].dtype) for k in raw_dtypes}  # ... and stored as narrow again
        self.tiles = -(-real // px)
        self.columns = {key: group[key][:] for key in arrays}  # the sample-world arrays, small

    def __len__(self) -> int:
        return self.count

    def raw_sample(self, i: int) -> dict:
        m = len(self.rows)
        out = {"id": f"mosaic{i}"}
        neighbours = [int(self.rows[(i + j * (1 + i // m)) % m]) for j in range(self.tiles ** 2)]
        for key in self.arrays:
            value = self.columns[key][int(self.rows[i % m])]
            if value.ndim >= 2 and value.shape[-2:] == (self.px, self.px):
                grid = self.columns[key][neighbours].reshape(self.tiles, self.tiles, *value.shape)
                rows = np.concatenate([np.concatenate(list(row), axis=-1) for row in grid], axis=-2)
                value = rows[..., :self.real, :self.real]
            out[key] = value.astype(self.raw_dtypes.get(key, value.dtype))
        return out

    def sample_bytes(self) -> int:
        """Bytes of one sample as stored."""
        sample = self.raw_sample(0)
        return sum(sample[k].size * self.group[k].dtype.itemsize for k in self.arrays)


def read_share(dataset, arrays: tuple[str, ...]) -> float:
    """The share of the bytes of a packed sample's ``arrays`` that the loop's native batch of ``dataset`` reads
    (SoftCon, CromSS: one season of the images)."""
    store = batch_reader(dataset).store
    stored = sum(int(np.prod(store.arrays[k].shape[1:])) * store.arrays[k].dtype.itemsize for k in arrays)
    return min(1.0, disk_bytes_per_sample(dataset, compressed=False) / stored)


def real_sized_root(chapter: str, cfg, sample_root: Path, stores: Path, samples: int, compression: str,
                    share: float) -> Path:
    """A data root under ``stores`` with real-sized samples (:class:`Mosaic`) of the chapter's dataset, per
    split of the sample-world store, packed like any store (once per run and dataset): at least ``samples``
    in the training split, and enough that a worker reads ``WORKING_SET`` bytes of them (``share``: the share
    of a sample's bytes it reads); a few in the others."""
    import zarr

    data = CHAPTER_DATA[chapter]
    relative = data.path.format_map(vars(cfg))
    out = stores / f"real-{chapter}" / relative
    if out.exists():
        return stores / f"real-{chapter}"
    source = sample_root / relative
    group = zarr.open_group(str(source), mode="r")
    store = open_packed(source, data.reader, None)
    px = int(group[data.arrays[0]].shape[-1])
    splits = group["split"][:].astype(str)
    parts = []
    for split in dict.fromkeys(splits):
        rows = np.flatnonzero(splits == split)
        mosaic = Mosaic(group, rows, min(len(rows), 8), data.arrays, px, data.real_px, store.dtypes)
        if split in ("", "train"):  # what the chapters pretrain on
            mosaic.count = max(samples, math.ceil(WORKING_SET / (mosaic.sample_bytes() * share)))
        parts.append((split or None, mosaic))
    keep = {"format", "variables", "seasonal", "dtypes"}
    attrs = {k: v for k, v in store.attrs.items() if k not in keep}
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pack(parts, out, attrs, seasonal=[k for k in data.arrays if k in store.seasonal], compression=compression)
    print(f"  packed {relative} at {data.real_px} px in {time.perf_counter() - start:.1f} s "
          f"({sum(len(m) for _, m in parts)} samples)")
    return stores / f"real-{chapter}"


def disk_bytes_per_sample(dataset, compressed: bool = True) -> float:
    """Bytes of chunk files read per sample: each array's on-disk share of what a native batch of the packed
    reader under ``dataset`` reads (compressed chunks count their compressed size, unless not ``compressed``)."""
    reader = batch_reader(dataset)
    reader.native = True
    try:
        raw = reader.read_raw_batch([0])
    finally:
        reader.native = False
    total = 0.0
    for key, value in raw.items():
        if key in reader.store.arrays:
            array = reader.store.arrays[key]
            ratio = array.chunk_bytes() / (np.prod(array.chunks) * array.dtype.itemsize) if compressed else 1.0
            total += int(np.prod(value.shape)) * array.dtype.itemsize * ratio
    return total


def bench_chapter(chapter: str, world_size: str, stores: Path, samples: int, gpu_flops: float,
                  compression: str) -> list[dict]:
    """Rows (folder, packed, real px) of one chapter: measured and scaled samples/s, needed samples/s, workers,
    bytes per sample."""
    data = CHAPTER_DATA[chapter]
    world = ensure_sample_world(world_size, 0)
    folder_cfg = full_profile(chapter, world_size)
    sample_px = getattr(SIZES[world_size], data.sample_px_field)
    pixel_ratio = (sample_px / data.real_px) ** 2

    sample_root = packed_root(chapter, folder_cfg, world, stores, compression)
    share = read_share(pretraining_data(chapter, full_profile(chapter, world_size, str(sample_root)))[0], data.arrays)
    real_root = real_sized_root(chapter, folder_cfg, sample_root, stores, samples, compression, share)
    roots = {"folder": "", "packed": str(sample_root), "real px": str(real_root)}
    rows = []
    needed = gpu_flops / flops_per_sample(chapter, world_size, str(real_root))
    for store, root in roots.items():
        dataset, collate = pretraining_data(chapter, full_profile(chapter, world_size, root))
        timed = len(dataset) if store == "real px" else samples  # the real-sized store's whole working set
        # fit's path (a ring of reusable buffers where it reads native batches) and, side by side, the path
        # before it (fresh shared memory per batch); a folder is read as before either way
        ring_reads = collate is None and isinstance(native_batches(dataset)[0], NativeBatches)
        for path, slots in ((("ring", ring.SLOTS), ("fresh", 0)) if ring_reads else (("fresh", 0),)):
            run = worker_samples_per_second(dataset, collate, timed, min(folder_cfg.batch_size, timed), slots)
            scaled = run["rate"] if store == "real px" else run["rate"] * pixel_ratio
            disk = disk_bytes_per_sample(dataset) if store == "real px" else float("nan")
            rows.append({"chapter": chapter, "store": store, "path": path,
                         "px": f"{data.real_px}" if store == "real px" else f"{sample_px}->{data.real_px}",
                         **run, "scaled": scaled, "needed": needed, "workers": math.ceil(needed / scaled),
                         "num_workers": folder_cfg.num_workers, "mb_per_sample": run["bytes_per_sample"] / 1e6,
                         "disk_mb_per_sample": disk / 1e6, "gpu_gb_s": needed * run["bytes_per_sample"] / 1e9,
                         "disk_gb_s": needed * disk / 1e9, "augmentation": data.augmentation})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'chapter':<12} {'store':<8} {'path':<6} {'px':>8} {'smp/s':>8} {'wall':>8} {'sys':>4} {'flt/GiB':>8} "
          f"{'scaled':>8} {'needed':>8} {'workers':>7} {'profile':>7} {'MB/smp':>7} {'disk MB':>7} {'GB/s':>6} "
          f"{'disk GB/s':>9} {'copy GB/s':>9} {'cp flt/GiB':>10}  augmentation")
    for r in rows:
        print(f"{r['chapter']:<12} {r['store']:<8} {r['path']:<6} {r['px']:>8} {r['rate']:>8.4g} {r['wall_rate']:>8.4g} "
              f"{r['system_share']:>4.0%} {r['faults_per_gib']:>8.0f} {r['scaled']:>8.4g} {r['needed']:>8.0f} "
              f"{r['workers']:>7} {r['num_workers']:>7} {r['mb_per_sample']:>7.3g} {r['disk_mb_per_sample']:>7.3g} "
              f"{r['gpu_gb_s']:>6.3g} {r['disk_gb_s']:>9.3g} {r['main_copy_gb_s']:>9.3g} "
              f"{r['main_faults_per_gib']:>10.0f}  {r['augmentation']}")
    print("path: ring = fit's loader, native batches read into the worker's reusable buffers; fresh = new shared "
          "memory per batch (the path before the ring; folders and CPU-normalised readers always); smp/s: samples "
          "per second of the worker's CPU time; wall: per second of wall time (shared cores); sys: the worker's "
          "system share; flt/GiB: its minor page faults per GiB delivered; scaled: the sample world's rates times "
          "(sample px / real px)^2, the estimate for real patches (the real px row is measured on real-sized "
          "patches); needed: samples/s one GPU consumes; workers: ceil(needed / scaled); profile: the full "
          "profile's num_workers; MB/smp: bytes per sample delivered (the collated batch); disk MB: compressed "
          "bytes read per sample; GB/s, disk GB/s: what one GPU needs of each; copy GB/s, cp flt/GiB: the main "
          "process copying each batch out of shared memory (as the pin-memory thread does) and its page faults.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"), help="sample world read")
    parser.add_argument("--chapters", nargs="+", default=None, choices=chapter_names(), help="default: every chapter")
    parser.add_argument("--samples", type=int, default=32,
                        help="samples timed per chapter from the sample world (the real-sized store: all of its "
                             "training samples, at least this many and 1 GiB)")
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="GPU peak (H100 dense bf16: 989)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed fraction of the peak the step reaches")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none", help="the packed stores' chunks")
    args = parser.parse_args()

    gpu_flops = args.gpu_tflops * 1e12 * args.mfu
    print(f"{args.size} sample world, {args.samples} samples per store ({args.compression} compression), one worker "
          f"(1 torch thread); GPU assumed at {args.gpu_tflops:g} TFLOP/s x {args.mfu:.0%} MFU")
    rows = []
    with tempfile.TemporaryDirectory() as stores:
        for chapter in args.chapters or chapter_names():
            print(f"{chapter} ...", flush=True)
            rows += bench_chapter(chapter, args.size, Path(stores), args.samples, gpu_flops, args.compression)
    print_table(rows)
    real, fresh = {}, {}  # per chapter: the real px row of fit's path (the ring where it has one, listed first), of fresh
    for r in rows:
        if r["store"] == "real px":
            real.setdefault(r["chapter"], r)
            if r["path"] == "fresh":
                fresh[r["chapter"]] = r
    print(json.dumps({"workers_per_gpu": {c: r["workers"] for c, r in real.items()},
                      "workers_per_gpu_fresh": {c: r["workers"] for c, r in fresh.items()},
                      "gpu_tflops": args.gpu_tflops, "mfu": args.mfu,
                      "mb_per_sample": {c: round(r["mb_per_sample"], 3) for c, r in real.items()},
                      "disk_gb_s_per_gpu": {c: round(r["disk_gb_s"], 2) for c, r in real.items()}}))


if __name__ == "__main__":
    main()
