"""MultiMAE-EO's data and evaluation recipe (appendix Secs. 1 and 3, Figs. 4-6): the MMEarth pretraining set,
the downstream tasks, linear probing / end-to-end fine-tuning of classifiers and the ConvNeXt segmentation head
(encoder frozen or end to end), the random-init baseline, the results table and the figures' data."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.models.convnext import ConvNeXtBlock
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data import IGNORE_INDEX, EuroSATMS, GeoBench, MMEarth, dataset_root
from ...data.bands import MMEARTH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS
from ...evaluate import (Task, extract_features, fine_tune, label_fraction_subset, linear_probe, random_init_baseline,
                         score_ranges, seeded, subset)
from ...nn import unpatchify
from ...rng import Random, as_random
from ...train import stage_dir
from .config import INPUT_SETS, MultiMAEConfig
from .model import (MODALITIES, SPECTRAL_MODALITIES, MultiMAE, MultiMAEEncoder, build_encoder, geobench_band_codes,
                    modality_band_indices, predictions_to_images, resize_modalities, split_s2)

#: Classes of the downstream tasks (appendix Table 3); ``m-landcover-seg`` is the sample world's
#: GEO-Bench-style segmentation task (9 Dynamic World classes), standing in for the paper's two.
TASK_CLASSES = {"m-eurosat": 10, "m-brick-kiln": 2, "m-so2sat": 17, "m-bigearthnet": 43, "eurosat": 10,
                "fmow": 62, "m-SA-crop-type": 10, "m-cashew-plantation": 7, "m-landcover-seg": 9}
#: Score of each task kind: (key in the metrics, name in the tables); all in percent.
METRICS = {"multiclass": ("OA", "OA"), "multilabel": ("mAP_macro", "mAP"), "segmentation": ("mIoU", "mIoU")}
#: The two protocols of each task kind (appendix Sec. 3, Fig. 4): encoder frozen, then end to end.
PROTOCOLS = {"classification": ("linear probing", "end-to-end"), "segmentation": ("frozen encoder", "end-to-end")}
#: A result cell: (task, metric, input set, protocol).
Cell = tuple[str, str, str, str]
#: The paper's downstream numbers, {cell: value in %}. The book's copy of the paper is its appendix, which
#: reports none (the tables are in the main text): empty, and the results table says so.
PAPER_RESULTS: dict[Cell, float] = {}
PAPER_RESULTS_MISSING = "main text, not in the appendix"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def pretraining_dataset(cfg: MultiMAEConfig) -> Dataset:
    """The MMEarth training split with the six modalities (``<data root>/MMEarth/<mmearth_file>``)."""
    return MMEarth(dataset_root(cfg, "MMEarth") / cfg.mmearth_file, modalities=MODALITIES, split="train")


def modality_table() -> list[dict[str, Any]]:
    """The six modalities, their bands and where they sit in MMEarth's stacks (rows for a table)."""
    index = modality_band_indices(MMEARTH_S2_BANDS)
    return ([{"modality": m.upper(), "bands": ", ".join(MODALITY_BANDS[m]), "MMEarth channels": index[m]}
             for m in SPECTRAL_MODALITIES]
            + [{"modality": "DEPTH", "bands": "ASTER elevation", "MMEarth channels": "aster[0]"},
               {"modality": "SEG", "bands": "ESA WorldCover, 12 classes (11 + no data)",
                "MMEarth channels": "esa_worldcover[0]"}])


@dataclass
class DownstreamTask:
    """A downstream task's splits and how to read them."""
    name: str
    train: Dataset
    test: Dataset
    band_order: tuple[str, ...]
    kind: str              # "multiclass", "multilabel" or "segmentation"
    num_classes: int

    @property
    def objective(self) -> Task:
        """What is learnt and how it is scored (unlabelled pixels of segmentation maps are ignored)."""
        return Task(self.kind, self.num_classes, ignore_index=IGNORE_INDEX)

    @property
    def metric(self) -> str:
        return METRICS[self.kind][1]

    @property
    def protocols(self) -> tuple[str, str]:
        return PROTOCOLS["segmentation" if self.kind == "segmentation" else "classification"]


def load_task(root: str | os.PathLike, name: str, max_train: int = 0, max_test: int = 0, seed: int = 0
              ) -> DownstreamTask:
    """A GEO-Bench task (``<root>/GEO-Bench``) or EuroSAT-MS (``name="eurosat"``), capped to seeded random
    subsets of ``max_train`` / ``max_test`` samples (0 = all)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"task: expected one of {sorted(TASK_CLASSES)}, got {name!r}")
    root = Path(root)
    if name == "eurosat":
        train, test = (EuroSATMS(root / "EuroSAT-MS", split=s) for s in ("train", "test"))
        band_order = S2_L1C_BANDS
    else:
        train, test = (GeoBench(root / "GEO-Bench", task=name, split=s) for s in ("train", "test"))
        band_order = geobench_band_codes(train.bands)
    label = train[0]["label"]
    kind = ("segmentation" if label.ndim == 2 else "multilabel" if label.is_floating_point() else "multiclass")
    capped = []
    for ds, cap in ((train, max_train), (test, max_test)):
        ds = subset(ds, label_fraction_subset(len(ds), cap / len(ds), seed)) if 0 < cap < len(ds) else ds
        capped.append(ds)
    return DownstreamTask(name, capped[0], capped[1], tuple(band_order), kind, TASK_CLASSES[name])


def downstream_tasks(cfg: MultiMAEConfig) -> list[DownstreamTask]:
    """The profile's classification then segmentation tasks, capped at ``eval_max_train`` / ``eval_max_test``."""
    root = dataset_root(cfg)
    return [load_task(root, name, cfg.eval_max_train, cfg.eval_max_test, cfg.seed)
            for name in (*cfg.classification_tasks, *cfg.segmentation_tasks)]


def task_inputs(batch: dict[str, Any], band_order: Sequence[str], modalities: Sequence[str],
                img_size: int) -> dict[str, torch.Tensor]:
    """A downstream batch ({"s2": [B,C,H,W], optionally "depth"}) as the encoder's modality dict."""
    inputs = split_s2(batch["s2"], band_order, [m for m in modalities if m in SPECTRAL_MODALITIES])
    if "depth" in modalities:
        if "depth" not in batch:
            raise ValueError("batch: the input set needs 'depth', which this task does not provide")
        inputs["depth"] = batch["depth"]
    return resize_modalities(inputs, img_size)


# --------------------------------------------------------------------------------------------------
# Task models (appendix Sec. 3): linear classifier, or a head of four ConvNeXt blocks
# --------------------------------------------------------------------------------------------------
class ConvNeXtSegmentationHead(nn.Module):
    """Four ConvNeXt blocks on the encoder's patch tokens (MultiMAE's ConvNeXt adapter).

    The tokens of the input modalities are concatenated per position, projected to ``(P/4)^2`` sub-patch
    vectors of ``dim`` channels (a map at 1/4 of the input side), refined by the ConvNeXt blocks and
    classified per pixel; logits are upsampled bilinearly to the requested size.
    """

    def __init__(self, num_modalities: int, encoder_dim: int, patch_size: int, num_classes: int, dim: int = 384,
                 depth: int = 4):
        super().__init__()
        self.num_modalities, self.sub, self.dim = num_modalities, patch_size // 4, dim
        self.proj = nn.Linear(num_modalities * encoder_dim, dim * self.sub ** 2)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)])
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, tokens: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """tokens [B, M*N, D] (no global token) -> logits [B, K, *out_size]."""
        b, mn, d = tokens.shape
        n = mn // self.num_modalities
        x = tokens.reshape(b, self.num_modalities, n, d).transpose(1, 2).reshape(b, n, self.num_modalities * d)
        x = unpatchify(self.proj(x), self.sub, self.dim)                      # [B,dim,H/4,W/4]
        x = self.classifier(self.blocks(x))
        return F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)


class MultiMAETaskModel(nn.Module):
    """A pretrained encoder with a task head: linear classifier on mean-pooled tokens, or ConvNeXt segmentation."""

    def __init__(self, encoder: MultiMAEEncoder, modalities: Sequence[str], num_classes: int,
                 segmentation: bool = False, seg_head_dim: int = 384):
        super().__init__()
        self.encoder, self.modalities, self.segmentation = encoder, tuple(modalities), segmentation
        self.head = (ConvNeXtSegmentationHead(len(modalities), encoder.dim, encoder.patch_size, num_classes,
                                              seg_head_dim)
                     if segmentation else nn.Linear(encoder.dim, num_classes))

    def forward(self, inputs: dict[str, torch.Tensor], out_size: tuple[int, int] | None = None) -> torch.Tensor:
        tokens = self.encoder(inputs)                                         # [B,1+M*N,D]
        if self.segmentation:
            return self.head(tokens[:, 1:], out_size or inputs["rgb"].shape[-2:])
        return self.head(tokens.mean(1))


# --------------------------------------------------------------------------------------------------
# Protocols (appendix Sec. 3, Fig. 4)
# --------------------------------------------------------------------------------------------------
def evaluate_task(encoder: MultiMAEEncoder, task: DownstreamTask, input_set: str, cfg: MultiMAEConfig,
                  device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                  ) -> tuple[dict[str, float], MultiMAETaskModel]:
    """The paper's two protocols for one task and input set; ``encoder`` is copied, never changed.

    Classification: linear probing (frozen encoder; SGD momentum 0.9, lr ``probe_lr`` cosine, features
    standardised when ``probe_standardize``) and end-to-end fine-tuning of encoder + linear classifier on
    mean-pooled tokens. Segmentation: the ConvNeXt head trained with the encoder frozen, and end to end.
    Fine-tuning: AdamW, lr ``finetune_lr`` cosine, weight decay ``finetune_weight_decay``. Every stage
    trains in the one loop and checkpoints into ``checkpoint_dir/<protocol>``.

    Returns ({protocol: score in percent}, the end-to-end model); the score is OA (multiclass), macro mAP
    (multilabel) or mIoU (segmentation).
    """
    modalities, key = INPUT_SETS[input_set], METRICS[task.kind][0]
    segmentation = task.kind == "segmentation"
    frozen_protocol, e2e_protocol = task.protocols
    stages = lambda protocol: stage_dir(checkpoint_dir, protocol.replace(" ", "-"))  # noqa: E731

    def predict(model: MultiMAETaskModel, batch: dict[str, Any]) -> torch.Tensor:
        return model(task_inputs(batch, task.band_order, modalities, cfg.img_size), batch["s2"].shape[-2:])

    def task_model() -> MultiMAETaskModel:  # a fresh copy of the encoder, the head seeded (the same after a resume)
        return seeded(lambda: MultiMAETaskModel(copy.deepcopy(encoder), modalities, task.num_classes, segmentation,
                                                cfg.seg_head_dim), cfg.seed)

    finetune = cfg.stage(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size, optimizer="adamw",
                         lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay, device=str(device))
    scores = {}
    if segmentation:  # the ConvNeXt head on the frozen encoder
        model = task_model()
        metrics, _ = fine_tune(model, task.train, task.test, predict, task.objective, finetune,
                               frozen=list(model.encoder.parameters()), checkpoint_dir=stages(frozen_protocol))
    else:             # linear probing on the frozen encoder's mean-pooled tokens
        frozen = copy.deepcopy(encoder).to(device).eval()
        encode = lambda batch: frozen.features(task_inputs(batch, task.band_order, modalities, cfg.img_size))  # noqa: E731
        train_x, train_y = extract_features(encode, task.train, batch_size=cfg.finetune_batch_size, device=device)
        test_x, test_y = extract_features(encode, task.test, batch_size=cfg.finetune_batch_size, device=device)
        probe = cfg.stage(epochs=cfg.probe_epochs, batch_size=min(256, len(task.train)), optimizer="sgd",
                          lr=cfg.probe_lr, momentum=0.9, weight_decay=0.0, device=str(device))
        metrics = linear_probe(train_x, train_y, test_x, test_y, task.objective, probe,
                               standardize_features=cfg.probe_standardize, checkpoint_dir=stages(frozen_protocol))
    scores[frozen_protocol] = metrics[key]
    model = task_model()
    metrics, _ = fine_tune(model, task.train, task.test, predict, task.objective, finetune,
                           checkpoint_dir=stages(e2e_protocol))
    scores[e2e_protocol] = metrics[key]
    return scores, model


def evaluate_downstream(encoder: MultiMAEEncoder, tasks: Sequence[DownstreamTask], cfg: MultiMAEConfig,
                        device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                        ) -> tuple[dict[Cell, float], dict[tuple[str, str], tuple[MultiMAETaskModel, DownstreamTask]]]:
    """Every task x input set x protocol of the profile for one encoder.

    Returns ({(task, metric, input set, protocol): score in %}, the end-to-end segmentation models by
    (task, input set) for the figures); stages checkpoint into ``checkpoint_dir/<task>/<input set>/<protocol>``.
    """
    scores, seg_models = {}, {}
    for task in tasks:
        for input_set in cfg.input_sets:
            result, model = evaluate_task(encoder, task, input_set, cfg, device,
                                          stage_dir(checkpoint_dir, task.name, input_set))
            scores.update({(task.name, task.metric, input_set, protocol): value for protocol, value in result.items()})
            if task.kind == "segmentation":
                seg_models[(task.name, input_set)] = (model, task)
    return scores, seg_models


def random_init_evaluation(tasks: Sequence[DownstreamTask], cfg: MultiMAEConfig, device: torch.device | str = "cpu",
                           checkpoint_dir: str | os.PathLike | None = None
                           ) -> tuple[dict[Cell, float], list[dict[Cell, float]]]:
    """The baseline pretraining must beat: :func:`evaluate_downstream` of randomly initialised encoders, one per
    seed of ``cfg.random_init_seed_list``; returns the per-cell mean and each seed's scores."""
    def score(encoder: nn.Module, seed: int) -> dict[Cell, float]:
        return evaluate_downstream(encoder, tasks, cfg, device, stage_dir(checkpoint_dir, f"seed{seed}"))[0]

    return random_init_baseline(lambda: build_encoder(cfg), score, cfg.random_init_seed_list)


def results_table(scores: dict[Cell, float], random_mean: dict[Cell, float] | None = None,
                  random_per_seed: Sequence[dict[Cell, float]] = (), paper: dict[Cell, float] = PAPER_RESULTS):
    """One row per (task, metric, input set, protocol): the paper's number (or why there is none), this run's,
    and the random-init baseline's mean (and its seed range when there are several seeds)."""
    import pandas as pd

    spread = score_ranges(list(random_per_seed)) if len(random_per_seed) > 1 else {}
    rows = []
    for cell, value in scores.items():
        row = dict(zip(("task", "metric", "input set", "protocol"), cell))
        row.update({"paper (%)": paper.get(cell, PAPER_RESULTS_MISSING), "this run (%)": value})
        if random_mean is not None:
            row["random init (%)"] = random_mean[cell]
        if spread:
            row["random init range"] = spread[cell]
        rows.append(row)
    return pd.DataFrame(rows).set_index(["task", "metric", "input set", "protocol"])


# --------------------------------------------------------------------------------------------------
# Figure data (Fig. 5: masked input / reconstruction / ground truth; Fig. 6: segmentation maps)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_examples(model: MultiMAE, batch: dict[str, Any], rng: Random | torch.Generator | int | None,
                            modalities: Sequence[str] = ("rgb", "depth", "seg")) -> dict[str, Any]:
    """Fig. 5 data: per modality ``masked`` input, ``reconstruction`` (the prediction on masked patches, the
    input on visible ones) and ``original``, each [B,C,H,W] (hidden pixels NaN; SEG: class ids [B,1,H,W],
    hidden = -1); plus ``counts`` [B,M], the visible tokens per modality. Masks are drawn from ``rng``.
    """
    model.eval()
    inputs = model.prepare(batch)
    b, p = inputs["rgb"].shape[0], model.encoder.patch_size
    visible, keep = model.sample_masks(b, as_random(rng), inputs["rgb"].device)
    preds = model.reconstruct(inputs, visible, keep)
    out: dict[str, Any] = {"counts": visible.sum(-1)}
    for m in modalities:
        i = MODALITIES.index(m)
        shown = unpatchify(visible[:, i, :, None].float().expand(-1, -1, p * p), p, 1).bool()  # [B,1,H,W]
        original, pred = inputs[m], predictions_to_images(m, preds[m], p)
        if m == "seg":
            original, pred = original[:, None], pred[:, None]
        hidden = -1 if m == "seg" else float("nan")
        out[m] = {"masked": torch.where(shown, original, hidden), "reconstruction": torch.where(shown, original, pred),
                  "original": original}
    return out


@torch.no_grad()
def segmentation_examples(model: MultiMAETaskModel, task: DownstreamTask, count: int = 4
                          ) -> dict[str, torch.Tensor]:
    """First ``count`` test samples of a segmentation task: ``rgb`` [B,3,H,W], ``target`` and ``pred`` [B,H,W]."""
    model.eval()
    batch = next(iter(DataLoader(task.test, batch_size=count, shuffle=False)))
    device = next(model.parameters()).device
    s2 = batch["s2"].to(device)
    inputs = task_inputs({"s2": s2}, task.band_order, model.modalities, model.encoder.img_size)
    pred = model(inputs, s2.shape[-2:]).argmax(1)
    rgb = split_s2(s2, task.band_order, ("rgb",))["rgb"]
    return {"rgb": rgb.cpu(), "target": batch["label"], "pred": pred.cpu()}
