"""Why SoftCon's `small` profile does not beat random init: its linear probes after pretraining with one
knob changed at a time (augmentation, Siamese masking, lambda, learning rate, schedule length).

Every row pretrains the `small` profile from the same seeded network with ``sc.CHAPTER.pretrain`` (no
checkpoints) and runs the chapter's two linear probes (BigEarthNet-25% macro mAP, EuroSAT OA); the first row
probes that network untrained. It also prints how much the soft term can teach on the pretraining data: the
soft targets' entropy relative to uniform (:func:`eobook.methods.softcon.soft_target_entropy`) per batch.

    python -m eobook bench softcon_small                       # every variant, seed 0 (about 20 CPU-minutes)
    python -m eobook bench softcon_small --variants base jitter=0 --seed 1

A variant is ``base`` or ``field=value[;field=value...]``, values as ``-p`` takes them (``crop_scale=(0.6, 1.0)``).
Scores are printed, never asserted.
"""
from __future__ import annotations

import argparse
import time

import torch

from eobook.methods import softcon as sc

VARIANTS = ("base", "jitter=0", "crop_scale=(0.6, 1.0)", "mask_ratio=0", "lr=0.003", "epochs=150",
            "lam=0", "lam=1.0", "lam=1.0;epochs=150", "jitter=0;lam=0")


def parse_variant(text: str) -> dict[str, str]:
    """``"jitter=0;crop_scale=(0.6, 1.0)"`` -> ``{"jitter": "0", "crop_scale": "(0.6, 1.0)"}``; ``"base"`` -> ``{}``.
    The values stay strings: the profile parses and checks them as it does ``-p`` overrides."""
    if text == "base":
        return {}
    pairs = [item.partition("=") for item in text.split(";")]
    bad = [key for key, sep, _ in pairs if not sep or not key]
    if bad:
        raise SystemExit(f"--variants {text!r}: expected base or field=value[;field=value...]")
    return {key.strip(): value.strip() for key, _, value in pairs}


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
        cfg = sc.CHAPTER.profile("small", seed=args.seed, **parse_variant(variant))
        t0 = time.perf_counter()
        module, _ = sc.CHAPTER.pretrain(cfg, None, log=lambda _: None)
        scores = sc.linear_probe_benchmarks(module.encoder, cfg)
        print(f"| pretrained, {variant} | {scores['ben_mAP']:.1f} | {scores['eurosat_OA']:.1f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
