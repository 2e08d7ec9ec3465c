"""Pretraining-step throughput of every chapter against this machine's fp32 matmul limit.

For each chapter and model size it prints: samples/s, FLOPs per step (forward + backward, counted by
``torch.utils.flop_counter``), achieved GFLOP/s, its ratio to the fp32 matmul GFLOP/s measured in the same
run (the practical limit of this machine), and the peak resident memory of the step (each configuration
runs in its own subprocess so that peaks do not mix).

    python -m eobook bench train                               # every chapter, tiny and full sizes, CPU
    python -m eobook bench train --chapters dino_mm --sizes full --batch 8
    python -m eobook bench train --device cuda --amp bf16 --compile   # on a GPU: also MFU vs the bf16 peak

Numbers are printed, never asserted: timing on shared machines is noisy (+/-20% here).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

#: Dense bf16 tensor-core peaks (TFLOP/s) used for MFU on GPUs we know.
GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def matmul_gflops(n: int = 2048, repeats: int = 8, device: str = "cpu", dtype=torch.float32) -> float:
    """Best GFLOP/s of an n x n x n matmul: the practical compute limit the training step is compared to."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def upsample(batch: dict, side: int) -> dict:
    """Every image-like tensor of a batch resized to ``side`` x ``side`` (bilinear for values, nearest for
    class ids), so that full-size models see full-size inputs although the sample world's patches are small."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 3 and value.shape[-1] == value.shape[-2] > 1:
            lead, hw = value.shape[:-2], value.shape[-2:]
            flat = value.reshape(-1, 1, *hw)
            if value.is_floating_point():
                flat = torch.nn.functional.interpolate(flat, size=(side, side), mode="bilinear", align_corners=False)
            else:
                flat = torch.nn.functional.interpolate(flat.float(), size=(side, side), mode="nearest").to(value.dtype)
            value = flat.reshape(*lead, side, side)
        out[key] = value
    return out


def bench_one(chapter: str, size: str, batch: int, steps: int, device: str, amp: str, compile_: bool,
              overrides: dict[str, str], side: int = 0) -> dict:
    """One chapter's training step at one size: runs in a fresh process (see ``main``)."""
    from eobook.chapters import get_chapter
    from eobook.runtime import DistInfo, amp_dtype, autocast, choose_device
    from eobook.train import StepContext, build_optimizer, param_groups
    from eobook.train.loop import _to_device

    profile = "tiny" if size == "tiny" else "full"
    chapter_record = get_chapter(chapter)
    cfg = chapter_record.profile(profile, **{"batch_size": batch, "device": device, "amp": amp, "data_root": "",
                                             "num_workers": 0, **overrides})
    dev = choose_device(device)
    dtype = amp_dtype(dev, amp)
    module, dataset, collate, _ = chapter_record.build_pretraining(cfg)
    module.to(dev).train()
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)
    samples = [dataset[i % len(dataset)] for i in range(batch)]
    batch_data = (collate or torch.utils.data.default_collate)(samples)
    batch_data = _to_device(upsample(batch_data, side) if side else batch_data, dev)
    optimizer = build_optimizer(param_groups(module, cfg.weight_decay), cfg.optimizer, cfg.lr, betas=cfg.betas,
                                momentum=cfg.momentum)
    step_fn = torch.compile(module) if compile_ else module
    generator = torch.Generator().manual_seed(0)
    total = max(steps, 1) * 10

    def step(i: int) -> None:
        ctx = StepContext(1, i, i, total, total, dev, generator, dtype, DistInfo())
        with autocast(dev, dtype):
            loss = step_fn(batch_data, ctx)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if hasattr(module, "on_step_end"):
            module.on_step_end(ctx)

    from torch.utils.flop_counter import FlopCounterMode
    step(0)  # warm-up (and compilation)
    with FlopCounterMode(display=False) as counter:
        step(1)
    flops = counter.get_total_flops()
    times = []
    for i in range(steps):
        _sync(str(dev))
        t0 = time.perf_counter()
        step(2 + i)
        _sync(str(dev))
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"chapter": chapter, "size": size, "batch": batch, "device": str(dev), "precision": str(dtype or "fp32"),
            "compiled": compile_, "step_s": seconds, "samples_per_s": batch / seconds, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "peak_mem_mb": peak_mb}


def main() -> None:
    from eobook.chapters import chapter_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="+", default=None, help="default: every chapter")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--batch", type=int, default=8, help="samples per step (full sizes use the full model)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", help="off | bf16 | fp16 (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step (GPU)")
    parser.add_argument("--set", action="append", default=[], metavar="CHAPTER.FIELD=VALUE",
                        help="override a profile field of one chapter, e.g. softcon.weights=none (repeatable)")
    parser.add_argument("--upsample", type=int, default=0, metavar="PX",
                        help="resize the sample world's patches to PX (e.g. 264 for CromSS's 256 crops)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run a single configuration, print JSON
    args = parser.parse_args()

    if args.one:
        chapter, size = args.one.split(":")
        overrides = {}
        for item in args.set:
            target, _, value = item.partition("=")
            name, _, field = target.partition(".")
            if name == chapter:
                overrides[field] = value
        print(json.dumps(bench_one(chapter, size, args.batch, args.steps, args.device, args.amp, args.compile,
                                   overrides, args.upsample)))
        return

    peak_device = "cuda" if args.device.startswith("cuda") else "cpu"
    peak = matmul_gflops(device=peak_device)
    print(f"fp32 matmul peak on {peak_device}: {peak:.1f} GFLOP/s  (torch threads: {torch.get_num_threads()})")
    header = f"{'chapter':<12} {'size':<5} {'batch':>5} {'step s':>8} {'samples/s':>10} {'GFLOP/step':>11} " \
             f"{'GFLOP/s':>8} {'ratio':>6} {'peak MB':>8}"
    print(header)
    rows = []
    for chapter in args.chapters or chapter_names():
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", f"{chapter}:{size}", "--batch", str(args.batch),
                   "--steps", str(args.steps), "--device", args.device, "--amp", args.amp]
            if args.compile:
                cmd.append("--compile")
            for item in args.set:
                cmd += ["--set", item]
            if args.upsample:
                cmd += ["--upsample", str(args.upsample)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if out.returncode != 0:
                print(f"{chapter:<12} {size:<5} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["ratio_to_matmul"] = row["achieved_gflops"] / peak
            rows.append(row)
            print(f"{chapter:<12} {size:<5} {row['batch']:>5} {row['step_s']:>8.3f} {row['samples_per_s']:>10.1f} "
                  f"{row['gflop_per_step']:>11.2f} {row['achieved_gflops']:>8.1f} {row['ratio_to_matmul']:>6.2f} "
                  f"{row['peak_mem_mb']:>8.0f}")
    if peak_device == "cuda" and args.amp == "bf16":
        name = torch.cuda.get_device_name()
        tflops = next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in name), None)
        for row in rows:
            if tflops:
                print(f"MFU {row['chapter']} {row['size']}: {100 * row['achieved_gflops'] / (tflops * 1e3):.1f}% of {tflops} TFLOP/s bf16")


if __name__ == "__main__":
    main()
