"""Why SoftCon's `small` profile does not beat random init: its linear probes after pretraining with one
knob changed at a time (augmentation, Siamese masking, lambda, learning rate, schedule length).

Every row pretrains the `small` profile from the same seeded network with ``sc.CHAPTER.pretrain`` (no
checkpoints) and runs the chapter's two linear probes (BigEarthNet-25% macro mAP, EuroSAT OA); the first row
probes that network untrained. It also prints how much the soft term can teach on the pretraining data: the
soft targets' entropy relative to uniform (:func:`eobook.methods.softcon.soft_target_entropy`) per batch.

    python -m eobook bench softcon_small                       # every variant, seed 0 (about 20 CPU-minutes)
    python -m eobook bench softcon_small --variants base jitter=0 --seed 1

A variant is ``base`` or ``field=value[,field=value...]`` with JSON values (``crop_scale=[0.6,1.0]``).
Scores are printed, never asserted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from eobook.methods import softcon as sc

VARIANTS = ("base", "jitter=0", "crop_scale=[0.6,1.0]", "mask_ratio=0", "lr=0.003", "epochs=150",
            "lam=0", "lam=1.0", "lam=1.0,epochs=150", "jitter=0,lam=0")


def parse_variant(text: str) -> dict:
    """``"a=1,b=[0.5,1]"`` -> ``{"a": 1, "b": (0.5, 1)}`` (lists become tuples, as the config's fields)."""
    if text == "base":
        return {}
    fields = {}
    for item in _split(text):
        key, value = item.split("=", 1)
        parsed = json.loads(value)
        fields[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return fields


def _split(text: str) -> list[str]:
    """Split at the commas between ``field=value`` items, not those inside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def soft_target_entropy_per_batch(cfg: sc.SoftConConfig, batches: int = 20) -> float:
    """Mean soft-target entropy (relative to uniform) over random batches of the pretraining labels."""
    labels = sc.pretraining_labels(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    values = []
    for _ in range(batches):
        y = labels[torch.randperm(len(labels), generator=g)[:cfg.batch_size]]
        values.append(float(sc.soft_target_entropy(sc.label_similarity(y, y, allow_empty=True))))
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = sc.CHAPTER.profile("small", seed=args.seed)
    labels = sc.pretraining_labels(base)
    print(f"SoftCon small, seed {args.seed}: {len(labels)} pretraining scenes, {labels.sum(1).mean():.1f} of "
          f"{labels.shape[1]} classes per scene; soft targets at {soft_target_entropy_per_batch(base):.3f} of "
          f"uniform entropy per batch of {base.batch_size} (0 = InfoNCE's identity, 1 = uniform)")
    print("| run | BigEarthNet linear mAP | EuroSAT linear OA | seconds |\n|---|---:|---:|---:|")
    t0 = time.perf_counter()
    init = sc.linear_probe_benchmarks(sc.create_backbone(base), base)
    print(f"| random init (untrained) | {init['ben_mAP']:.1f} | {init['eurosat_OA']:.1f} | "
          f"{time.perf_counter() - t0:.0f} |", flush=True)
    for variant in args.variants:
        cfg = dataclasses.replace(base, **parse_variant(variant))
        t0 = time.perf_counter()
        module, _ = sc.CHAPTER.pretrain(cfg, None, log=lambda _: None)
        scores = sc.linear_probe_benchmarks(module.encoder, cfg)
        print(f"| pretrained, {variant} | {scores['ben_mAP']:.1f} | {scores['eurosat_OA']:.1f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
