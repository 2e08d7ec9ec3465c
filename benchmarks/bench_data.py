"""Input pipeline per chapter: samples/s of one data-loading worker (folder vs packed) against the step rate.

For each chapter it builds the pretraining dataset of the ``full`` profile (its dataset options and the
per-sample CPU work, e.g. seasons, resizing) on the synthetic sample world, once from the native folder and
once from a packed zarr store made with ``eobook.data.pack.prepare``, and times ONE worker: ``dataset[i]``
plus the chapter's collate over batches, in a single process on one torch thread, as a DataLoader worker does.

It then counts the FLOPs per sample of the full-size pretraining step (``bench_train.bench_one``, once on the
CPU at batch 2) and turns an assumed GPU throughput (default: an H100's 989 TFLOP/s dense bf16 at 35% MFU)
into the samples/s one GPU consumes, and so into the workers needed to feed it.

The sample world's patches are smaller than the real datasets' (tiny world: 48 px BigEarthNet vs 120 px), so
each rate is printed as measured and scaled by the pixel-count ratio to the real patch size. The scaled
value is a pessimistic estimate: per-file and per-item overheads do not grow with the pixels.

    python -m eobook bench data                                   # every chapter, tiny sample world
    python -m eobook bench data --size small --chapters dino_mm cromss --samples 16

Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import default_collate

from eobook.chapters import chapter_names, get_chapter, get_profile
from eobook.data import ensure_sample_world
from eobook.data.pack import prepare
from eobook.data.world import SIZES

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
    augmentation: str  #: where the per-sample augmentation runs (read from the chapter's code)


CHAPTER_DATA = {
    "dino_mm": ChapterData("BigEarthNetMM", "BigEarthNet-MM", "ben_px", 120,
                           "GPU: multi-crop 2x112 + 8x48 and sensor drop batched in forward"),
    "fus_mae": ChapterData("BigEarthNetMM", "BigEarthNet-MM", "ben_px", 120,
                           "GPU: antialiased resize to 128 px batched in forward; no augmentation, masking in forward"),
    "multimae_eo": ChapterData("MMEarth", "MMEarth/{mmearth_file}", "mmearth_px", 64,
                               "GPU: resize to 56 px and flip in forward"),
    "softcon": ChapterData("SSL4EOS12", "SSL4EO-S12", "ssl4eo_px", 264,
                           "CPU: one random season; GPU: 2 random-resized 224 crops + jitter in forward"),
    "cromss": ChapterData("SSL4EOS12", "SSL4EO-S12", "ssl4eo_px", 264,
                          "CPU: all 4 seasons read; GPU: season pick, smoothing, 256 crop/flip/rot in forward"),
}

#: Profile fields that cannot be used offline and change neither the data nor the FLOPs.
OFFLINE_OVERRIDES = {"softcon": {"weights": ""}}


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
    return dataset, collate or default_collate


def worker_samples_per_second(dataset, collate, samples: int, batch: int) -> float:
    """Samples/s of one worker: ``dataset[i]`` for ``samples`` indices, collated ``batch`` at a time."""
    threads = torch.get_num_threads()
    # DataLoader workers run torch on one thread; with more, per-sample ops (e.g. Fus-MAE's former
    # per-sample resize) were 15x slower here, paying thread start-up on cores other jobs keep busy.
    torch.set_num_threads(1)
    try:
        collate([dataset[0]])  # opens files / zarr groups once, as a worker does before its first batch
        n = min(samples, len(dataset))
        start = time.perf_counter()
        for first in range(0, n, batch):
            collate([dataset[i] for i in range(first, min(first + batch, n))])
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def image_side(batch: dict) -> int:
    """The largest square spatial side among the batch's tensors."""
    return max((v.shape[-1] for v in batch.values()
                if isinstance(v, torch.Tensor) and v.ndim >= 3 and v.shape[-1] == v.shape[-2]), default=0)


def flops_per_sample(chapter: str, world_size: str, real_px: int, input_side: int) -> float:
    """FLOPs of one sample in the full-size pretraining step (forward + backward), counted on the CPU at batch 2.

    Batches smaller than the real patches are upsampled to ``real_px`` first (``input_side``, the side the
    dataset delivers, decides), because CromSS crops 256 px from its input."""
    overrides = {"world_size": world_size, **OFFLINE_OVERRIDES.get(chapter, {})}
    side = real_px if input_side < real_px else 0
    row = bench_one(chapter, "full", batch=2, steps=1, device="cpu", amp="off", compile_=False,
                    overrides=overrides, side=side)
    return row["gflop_per_step"] * 1e9 / row["batch"]


def packed_root(chapter: str, cfg, world: Path, stores: Path) -> Path:
    """A data root under ``stores`` holding the chapter's dataset packed at its usual path (packed once per run)."""
    data = CHAPTER_DATA[chapter]
    relative = data.path.format_map(vars(cfg))
    out = stores / relative
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        prepare(data.reader, world / relative, out)
        print(f"  packed {relative} in {time.perf_counter() - start:.1f} s")
    return stores


def bench_chapter(chapter: str, world_size: str, stores: Path, samples: int, gpu_flops: float) -> list[dict]:
    """Rows (folder, packed) of one chapter: measured and scaled samples/s, needed samples/s, workers."""
    data = CHAPTER_DATA[chapter]
    world = ensure_sample_world(world_size, 0)
    folder_cfg = full_profile(chapter, world_size)
    batch = min(folder_cfg.batch_size, samples)
    sample_px = getattr(SIZES[world_size], data.sample_px_field)
    pixel_ratio = (sample_px / data.real_px) ** 2

    folder_set, collate = pretraining_data(chapter, folder_cfg)
    side = image_side(collate([folder_set[0]]))
    rates = {"folder": worker_samples_per_second(folder_set, collate, samples, batch)}
    packed_cfg = full_profile(chapter, world_size, str(packed_root(chapter, folder_cfg, world, stores)))
    packed_set, collate = pretraining_data(chapter, packed_cfg)
    rates["packed"] = worker_samples_per_second(packed_set, collate, samples, batch)

    needed = gpu_flops / flops_per_sample(chapter, world_size, data.real_px, side)
    rows = []
    for store, rate in rates.items():
        scaled = rate * pixel_ratio
        workers = math.ceil(needed / scaled)
        rows.append({"chapter": chapter, "store": store, "px": f"{sample_px}->{data.real_px}", "measured": rate,
                     "scaled": scaled, "needed": needed, "workers": workers, "num_workers": folder_cfg.num_workers,
                     "keeps_up": workers <= folder_cfg.num_workers, "augmentation": data.augmentation})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'chapter':<12} {'store':<7} {'px':>8} {'measured':>9} {'scaled':>8} {'needed':>8} {'workers':>8} "
          f"{'profile':>8} {'keeps up':>8}  augmentation")
    for r in rows:
        print(f"{r['chapter']:<12} {r['store']:<7} {r['px']:>8} {r['measured']:>9.3g} {r['scaled']:>8.3g} "
              f"{r['needed']:>8.0f} {r['workers']:>8} {r['num_workers']:>8} {'yes' if r['keeps_up'] else 'no':>8}  "
              f"{r['augmentation']}")
    print("measured: samples/s of one worker on the sample world's patches; scaled: the same times "
          "(sample px / real px)^2, the estimate for real patches; needed: samples/s one GPU consumes; "
          "workers: ceil(needed / scaled); profile: the full profile's num_workers.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=("tiny", "small"), help="sample world read")
    parser.add_argument("--chapters", nargs="+", default=None, choices=chapter_names(), help="default: every chapter")
    parser.add_argument("--samples", type=int, default=32, help="samples timed per chapter and store")
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="GPU peak (H100 dense bf16: 989)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed fraction of the peak the step reaches")
    args = parser.parse_args()

    gpu_flops = args.gpu_tflops * 1e12 * args.mfu
    print(f"{args.size} sample world, {args.samples} samples per store, one worker (1 torch thread); "
          f"GPU assumed at {args.gpu_tflops:g} TFLOP/s x {args.mfu:.0%} MFU")
    rows = []
    with tempfile.TemporaryDirectory() as stores:
        for chapter in args.chapters or chapter_names():
            print(f"{chapter} ...", flush=True)
            rows += bench_chapter(chapter, args.size, Path(stores), args.samples, gpu_flops)
    print_table(rows)


if __name__ == "__main__":
    main()
