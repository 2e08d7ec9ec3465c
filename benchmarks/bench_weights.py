"""What evaluating the authors' released weights with the book's ``full`` protocol costs on one GPU.

For every released file (``python -m eobook weights list``) it builds the chapter's encoder with the entry's
fields (no weights are read: the cost depends on the architecture only), counts the FLOPs of one forward pass
at the protocol's input size on the CPU (``torch.utils.flop_counter``, batch 1), and multiplies by the encoder
passes of the chapter's ``full`` evaluation on the real datasets:

* DINO-MM (Table 2): a linear probe per input (S1, S2, S1+S2) and label fraction (100%, 1%) trained for
  ``probe_epochs`` on augmented views encoded afresh at every step (the authors' protocol), then the test split
  once per probe. BigEarthNet-MM without snow and clouds: 269,695 training and 125,866 test patches, 112 px crops.
* SoftCon (README): features of BigEarthNet-10% (26,970 training patches) and its 125,866 test patches, and of
  EuroSAT's 27,000 images, encoded once (cached probes); fine-tuning on BigEarthNet-10% for ``finetune_epochs``
  with the encoder trained (a training step counts 3 forward passes); 224 px.
* CromSS (Tables II-IV): per transfer task, input (S1, S2), encoder mode (frozen: 1 pass per training image,
  fine-tuned: 3) and seed, ``downstream_epochs`` over the training tiles, then the test tiles; DFC2020 986 / 5,128
  tiles of 256 px, SSL4EO-S12@DW 3,574 / 340 and @OSM 1,375 / 400 tiles of about 510 px (4 encoder passes of
  256 px each). The decoders' cost is not counted (PSPNet, DeepLabV3+ and FPN heads are a fraction of a ResNet-50).

The random-init and supervised baselines cost as much again (random init) or more (the supervised ViT of
DINO-MM trains end to end); they are not included.

    python -m eobook bench weights                        # every released file
    python -m eobook bench weights --gpu-tflops 989 --mfu 0.35

Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import math

import torch

from eobook.chapters import get_chapter
from eobook.nn.vit import last_blocks_cls
from eobook.weights import forward_gflops, gpu_minutes

BIGEARTHNET = {"train": 269_695, "test": 125_866}
EUROSAT = 27_000
#: (training tiles, test tiles, 256-px encoder passes per tile) of CromSS's transfer tasks.
CROMSS_TASKS = {"dfc2020": (986, 5_128, 1), "dw": (3_574, 340, 4), "osm": (1_375, 400, 4)}


class Encode(torch.nn.Module):
    """A forward function as a module, for the FLOP counter."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def dino_mm(entry, cfg) -> list[tuple[str, float, float]]:
    from eobook.methods.dino_mm import build_backbone

    vit = build_backbone(cfg, drop_path_rate=0.0).eval()
    gflop = forward_gflops(Encode(lambda x: last_blocks_cls(vit, x, cfg.probe_blocks)),
                           torch.zeros(1, 14, cfg.eval_crop_size, cfg.eval_crop_size))
    passes = sum(cfg.probe_epochs * math.ceil(BIGEARTHNET["train"] * f) + BIGEARTHNET["test"]
                 for f in cfg.label_fractions) * 3
    return [(f"linear probes, 3 inputs x {len(cfg.label_fractions)} label fractions, {cfg.probe_epochs} epochs",
             gflop, passes)]


def softcon(entry, cfg) -> list[tuple[str, float, float]]:
    from eobook.methods.softcon import create_backbone

    backbone = create_backbone(cfg).eval()
    channels = 13 if cfg.modality == "s2c" else 2
    gflop = forward_gflops(Encode(lambda x: backbone.features(x, cfg.probe_blocks)),
                           torch.zeros(1, channels, cfg.img_size, cfg.img_size))
    train = math.ceil(BIGEARTHNET["train"] * cfg.probe_fraction)
    rows = [("linear probes (features once): BigEarthNet-10% + EuroSAT", gflop,
             train + BIGEARTHNET["test"] + EUROSAT)]
    if cfg.finetune_epochs:
        rows.append((f"fine-tuning BigEarthNet-10%, {cfg.finetune_epochs} epochs", gflop,
                     3 * cfg.finetune_epochs * train + BIGEARTHNET["test"]))
    return rows


def cromss(entry, cfg) -> list[tuple[str, float, float]]:
    from eobook.methods.cromss import build_module

    module = build_module(cfg).eval()
    rows = []
    for modality, channels in (("s1", 2), ("s2", cfg.s2_bands)):
        encoder = module.encoder(modality)
        gflop = forward_gflops(encoder, torch.zeros(1, channels, 256, 256))
        passes = 0
        for task in cfg.transfer_tasks:
            n_train, n_test, tiles = CROMSS_TASKS[task]
            per_seed = (1 + 3) * cfg.downstream_epochs * n_train * tiles + 2 * n_test * tiles  # frozen + fine-tuned
            passes += cfg.downstream_seeds * per_seed
        rows.append((f"{modality.upper()} encoder: {len(cfg.transfer_tasks)} tasks x frozen/fine-tuned x "
                     f"{cfg.downstream_seeds} seeds x {cfg.downstream_epochs} epochs", gflop, passes))
    return rows


PROTOCOLS = {"dino_mm": dino_mm, "softcon": softcon, "cromss": cromss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--mfu", type=float, default=0.35, help="fraction of the peak reached")
    parser.add_argument("--names", nargs="*", default=None, help="released names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"GPU: {args.gpu_tflops:g} TFLOP/s x {args.mfu:.0%} MFU; encoder forward passes only\n")
    print("| weights | evaluation | GFLOP/pass | passes (M) | GPU-minutes |")
    print("|---|---|---:|---:|---:|")
    for name in ("dino_mm", "softcon", "cromss"):
        chapter = get_chapter(name)
        for entry in chapter.released:
            if args.names and entry.name not in args.names:
                continue
            cfg = chapter.profile("full", init=entry.init)
            for what, gflop, passes in PROTOCOLS[name](entry, cfg):
                minutes = gpu_minutes(gflop, passes, args.gpu_tflops, args.mfu)
                print(f"| {entry.name} | {what} | {gflop:.1f} | {passes / 1e6:.2f} | {minutes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
