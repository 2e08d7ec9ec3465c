"""DINO-MM's data and evaluation recipe (Sec. 3.1, Table 2): linear probes on the frozen teacher, the random
and supervised baselines, the results table, and the attention maps of the figures."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ... import augment
from ...data import chapter_dataset, whole_dataset
from ...evaluate import (Task, extract_features, fine_tune, label_fraction_subset, linear_probe, predict_and_score,
                         random_init_baseline, seeded, subset, train_supervised)
from ...nn.vit import last_blocks_cls
from ...rng import Random
from ...train import stage_dir
from .config import DinoMMConfig
from .model import SENSOR_MODES, build_backbone, select_sensors, stack_sensors

N_CLASSES = 19
#: Table 2 of the paper: linear-probe mAP (%) on BigEarthNet-MM, {method: {(label fraction, input): value}}.
PAPER_TABLE2 = {
    "Random": {("100%", "S1"): 54.6, ("100%", "S2"): 62.0, ("100%", "S1+S2"): 64.5,
               ("1%", "S1"): 52.7, ("1%", "S2"): 59.0, ("1%", "S1+S2"): 62.4},
    "DINO-S1/2": {("100%", "S1"): 76.2, ("100%", "S2"): 86.0, ("100%", "S1+S2"): None,
                  ("1%", "S1"): 68.7, ("1%", "S2"): 82.0, ("1%", "S1+S2"): None},
    "DINO-MM": {("100%", "S1"): 79.5, ("100%", "S2"): 87.1, ("100%", "S1+S2"): 87.1,
                ("1%", "S1"): 75.3, ("1%", "S2"): 82.9, ("1%", "S1+S2"): 82.8},
    "Supervised": {("100%", "S1"): 77.1, ("100%", "S2"): 86.7, ("100%", "S1+S2"): 88.6,
                   ("1%", "S1"): 63.7, ("1%", "S2"): 73.6, ("1%", "S1+S2"): 75.0},
}
#: Table 2's cells are keyed (label fraction, input).
Cell = tuple[str, str]
#: RandomResizedCrop's area-scale range in the authors' probe and supervised scripts (torchvision's default).
TRAIN_CROP_SCALE = (0.08, 1.0)
SPLIT_SCHEMES = {"official": "the official split lists", "seco": "the SeCo lists of the authors' loader"}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def bigearthnet(cfg: DinoMMConfig, split: str) -> Dataset:
    """BigEarthNet-MM ``split`` of the lists ``cfg.split_scheme`` names, without the patches of the official snow
    and cloud lists (Sec. 3.1: "Patches got dropped where the scene is fully covered in seasonal snow, or those
    including artifacts of clouds"); with ``cfg.cache_data`` read once per process and kept in memory, in a
    smoke run only its first few patches."""
    return chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split=split, remove_snow_cloud=True,
                           split_scheme=cfg.split_scheme)


def eval_datasets(cfg: DinoMMConfig) -> tuple[Dataset, Dataset]:
    """The training split and the scored split (``cfg.eval_split``) of BigEarthNet-MM, capped at
    ``eval_train_samples`` / ``eval_test_samples``."""
    train, test = bigearthnet(cfg, "train"), bigearthnet(cfg, cfg.eval_split)
    cap = lambda ds, n: Subset(ds, range(min(n, len(ds)))) if n else ds  # noqa: E731
    return cap(train, cfg.eval_train_samples), cap(test, cfg.eval_test_samples)


def split_summary(cfg: DinoMMConfig, split: str, dataset: Dataset) -> str:
    """One line saying which split ``dataset`` is and how many patches it holds, counted from the reader (and,
    where a smoke run or a cap keeps fewer, how many this run uses)."""
    whole = whole_dataset(dataset)
    source = f"data_root {cfg.data_root}" if cfg.data_root else "the synthetic sample world"
    line = (f"BigEarthNet-MM '{split}' split ({SPLIT_SCHEMES[cfg.split_scheme]}, snow and cloud patches removed; "
            f"{source}): {len(whole)} patches")
    if len(dataset) != len(whole):
        line += f", of which this run uses the first {len(dataset)}" + (" (smoke run)" if cfg.smoke else "")
    return line


def eval_input(batch: dict[str, torch.Tensor], sensors: str, cfg: DinoMMConfig) -> torch.Tensor:
    """The evaluation view of a batch: 14 channels, ``sensors`` kept, Resize + CenterCrop."""
    x = select_sensors(stack_sensors(batch["s2"], batch["s1"]), sensors)
    return augment.center_crop_resize(x, cfg.eval_crop_size, cfg.eval_crop_size / cfg.img_size).clamp(0.0, 1.0)


def probe_train_view(batch: dict[str, torch.Tensor], sensors: str, size: int, rng: Random) -> torch.Tensor:
    """The training view of the authors' probe and supervised scripts: 14 channels, ``sensors`` kept,
    RandomResizedCrop(``size``, scale 0.08-1, aspect 3/4-4/3, bilinear) + horizontal flip (p 0.5), drawn per
    sample from ``rng`` (the step context in training): [B,14,size,size]."""
    x = select_sensors(stack_sensors(batch["s2"], batch["s1"]), sensors)
    return augment.random_resized_crop(x, size, TRAIN_CROP_SCALE, rng).clamp(0.0, 1.0)


def label_fraction_name(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def map_key(cfg: DinoMMConfig) -> str:
    """The metric of Table 2's cells: ``mAP_micro`` or ``mAP_macro`` (see ``cfg.map_average``)."""
    return f"mAP_{cfg.map_average}"


# --------------------------------------------------------------------------------------------------
# Protocols (Sec. 3.1)
# --------------------------------------------------------------------------------------------------
def linear_evaluation(backbone: nn.Module, train_set: Dataset, test_set: Dataset, cfg: DinoMMConfig,
                      device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                      ) -> dict[Cell, float]:
    """Linear-probe mAP (%) of a frozen backbone for every label fraction and input (Table 2's columns).

    Features: CLS tokens of the last ``probe_blocks`` blocks (1536-d for ViT-S). Probe: SGD momentum 0.9,
    lr ``probe_lr`` cosine, no weight decay, MultiLabelSoftMarginLoss; ``map_average`` mAP over the whole
    scored split, on the evaluation view (Resize + CenterCrop). With ``probe_augment`` the probe trains on
    :func:`probe_train_view` views encoded afresh at every step (the authors' code); without, on the cached
    features of the evaluation view. The label subsets are drawn without replacement (seeded). Each probe
    checkpoints into ``checkpoint_dir/<fraction>-<input>``.
    """
    backbone = backbone.to(device).eval()
    loop = cfg.stage(epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, optimizer="sgd", lr=cfg.probe_lr,
                     momentum=0.9, weight_decay=0.0, device=str(device))
    task = Task("multilabel", N_CLASSES)
    results = {}
    for sensors in SENSOR_MODES[::-1]:  # S1, S2, S1+S2
        if not cfg.probe_augment:
            def encode(batch: dict[str, Any], sensors: str = sensors) -> torch.Tensor:
                return last_blocks_cls(backbone, eval_input(batch, sensors, cfg), cfg.probe_blocks)

            train_x, train_y = extract_features(encode, train_set, batch_size=cfg.probe_batch_size, device=device)
            test_x, test_y = extract_features(encode, test_set, batch_size=cfg.probe_batch_size, device=device)
        for fraction in cfg.label_fractions:
            idx = label_fraction_subset(len(train_set), fraction, cfg.seed, cfg.min_label_samples)
            cell = (label_fraction_name(fraction), sensors)
            ckpt = stage_dir(checkpoint_dir, "-".join(cell))
            if cfg.probe_augment:
                scores = augmented_probe(backbone, subset(train_set, idx), test_set, sensors, cfg, task, loop, ckpt)
            else:
                idx = torch.as_tensor(idx)
                scores = linear_probe(train_x[idx], train_y[idx], test_x, test_y, task, loop,
                                      standardize_features=cfg.probe_standardize, checkpoint_dir=ckpt)
            results[cell] = scores[map_key(cfg)]
    return results


def probe_head(width: int, num_classes: int, seed: int) -> nn.Linear:
    """DINO's linear classifier (``LinearClassifier`` of the authors' ``linear_dino_B14.py``): weights drawn
    from N(0, 0.01^2), zero bias; seeded, so that a resumed probe starts from the same head."""
    def build() -> nn.Linear:
        head = nn.Linear(width, num_classes)
        nn.init.normal_(head.weight, mean=0.0, std=0.01)
        nn.init.zeros_(head.bias)
        return head

    return seeded(build, seed)


class FrozenProbe(nn.Module):
    """A linear classifier on the CLS tokens of the last ``n_blocks`` blocks of a frozen ViT.

    The backbone is held outside the module's parameters and state (only the linear layer trains, is
    checkpointed and is moved by ``.to``), always in eval mode (no stochastic depth) and without gradients.
    """

    def __init__(self, backbone: nn.Module, n_blocks: int, head: nn.Linear):
        super().__init__()
        self.frozen = (backbone.eval(),)  # a tuple: not a registered submodule
        self.n_blocks, self.head = n_blocks, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,14,H,W] -> logits [B,K]."""
        with torch.no_grad():
            features = last_blocks_cls(self.frozen[0].eval(), x, self.n_blocks)
        return self.head(features.float())


def augmented_probe(backbone: nn.Module, train_set: Dataset, test_set: Dataset, sensors: str, cfg: DinoMMConfig,
                    task: Task, loop, checkpoint_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """The authors' probe: trained in the loop on :func:`probe_train_view` views (RandomResizedCrop(img_size) +
    flip) through the frozen ``backbone``, scored on the evaluation view; returns ``task.score``'s metrics."""
    device = next(backbone.parameters()).device
    head = probe_head(cfg.probe_blocks * backbone.embed_dim, task.num_classes, cfg.seed)
    probe = FrozenProbe(backbone, cfg.probe_blocks, head.to(device))

    def train_view(batch: dict[str, Any], ctx) -> dict[str, Any]:
        return {**batch, "view": probe_train_view(batch, sensors, cfg.img_size, ctx)}

    def predict(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return model(batch["view"] if "view" in batch else eval_input(batch, sensors, cfg))

    train_supervised(probe, train_set, predict, task, loop, augment=train_view, checkpoint_dir=checkpoint_dir,
                     desc="probe")
    return predict_and_score(probe, test_set, predict, task, batch_size=loop.batch_size, device=device,
                             num_workers=loop.num_workers)


def random_init_evaluation(train_set: Dataset, test_set: Dataset, cfg: DinoMMConfig,
                           device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                           ) -> tuple[dict[Cell, float], list[dict[Cell, float]]]:
    """The "Random" row: :func:`linear_evaluation` of randomly initialised backbones, one per seed of
    ``cfg.random_init_seed_list``; returns the per-column mean and each seed's scores."""
    def score(backbone: nn.Module, seed: int) -> dict[Cell, float]:
        return linear_evaluation(backbone, train_set, test_set, cfg, device, stage_dir(checkpoint_dir, f"seed{seed}"))

    return random_init_baseline(lambda: build_backbone(cfg), score, cfg.random_init_seed_list)


class SupervisedViT(nn.Module):
    """The supervised baseline: the same ViT with a linear classifier on its CLS token, trained end to end."""

    def __init__(self, cfg: DinoMMConfig):
        super().__init__()
        self.backbone = build_backbone(cfg, cfg.drop_path_rate)
        self.classifier = nn.Linear(cfg.embed_dim, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def supervised_evaluation(train_set: Dataset, test_set: Dataset, cfg: DinoMMConfig,
                          device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                          ) -> dict[Cell, float]:
    """Supervised baseline mAP (%): a randomly initialised ViT trained end to end for every label fraction
    and input with AdamW, lr ``supervised_lr`` cosine, MultiLabelSoftMarginLoss; with ``supervised_augment``
    on :func:`probe_train_view` views of ``eval_crop_size`` px, scored on the evaluation view."""
    loop = cfg.stage(epochs=cfg.supervised_epochs, batch_size=cfg.supervised_batch_size, optimizer="adamw",
                     lr=cfg.supervised_lr, weight_decay=cfg.supervised_weight_decay, device=str(device))
    task = Task("multilabel", N_CLASSES)
    results = {}
    for sensors in SENSOR_MODES[::-1]:
        def predict(model: nn.Module, batch: dict[str, Any], sensors: str = sensors) -> torch.Tensor:
            return model(batch["view"] if "view" in batch else eval_input(batch, sensors, cfg))

        def train_view(batch: dict[str, Any], ctx, sensors: str = sensors) -> dict[str, Any]:
            return {**batch, "view": probe_train_view(batch, sensors, cfg.eval_crop_size, ctx)}

        for fraction in cfg.label_fractions:
            idx = label_fraction_subset(len(train_set), fraction, cfg.seed, cfg.min_label_samples)
            cell = (label_fraction_name(fraction), sensors)
            model = seeded(lambda: SupervisedViT(cfg), cfg.seed)
            scores, _ = fine_tune(model, subset(train_set, idx), test_set, predict, task, loop,
                                  augment=train_view if cfg.supervised_augment else None,
                                  checkpoint_dir=stage_dir(checkpoint_dir, "-".join(cell)))
            results[cell] = scores[map_key(cfg)]
    return results


def results_table(run_rows: dict[str, dict[Cell, float]], this_run: str = "this run", paper: dict = PAPER_TABLE2):
    """Table 2 layout: rows = methods, columns = (label fraction, input, paper | ``this_run``), where
    ``this_run`` says what produced the DINO-MM row (:func:`eobook.weights.source_label`)."""
    import pandas as pd

    columns = [(f, s) for f in ("100%", "1%") for s in ("S1", "S2", "S1+S2")]
    rows = {}
    for method in paper:
        ours = run_rows.get(method, {})
        rows[method] = {(f, s, src): (paper[method][(f, s)] if src == "paper" else ours.get((f, s)))
                        for f, s in columns for src in ("paper", this_run)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["labels", "input", "source"])
    return table


# --------------------------------------------------------------------------------------------------
# Figures: CLS self-attention of the last block (Caron et al. 2021, Fig. 1)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def cls_attention_maps(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention of the CLS token to every patch in the last block, per head: [B,14,H,W] -> [B,heads,H/p,W/p].

    Computed explicitly from the last block's ``qkv`` (softmax(q k^T / sqrt(d_h)) of the CLS row), for
    figures only; training uses fused attention.
    """
    grid = (x.shape[2] // vit.patch_embed.patch_size[0], x.shape[3] // vit.patch_embed.patch_size[1])
    tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for block in vit.blocks[:-1]:
        tokens = block(tokens)
    attn = vit.blocks[-1].attn
    b, n, _ = tokens.shape
    qkv = attn.qkv(vit.blocks[-1].norm1(tokens)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])                    # [B,h,N,dh]
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # [B,h,1,N]
    return weights[:, :, 0, vit.num_prefix_tokens:].reshape(b, attn.num_heads, *grid)
