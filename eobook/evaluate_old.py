"""Evaluation core: features, linear probes, kNN, fine-tuning, and the papers' metrics (via torchmetrics).

Metrics are computed over the **whole** test set at once (DINO-MM's code averaged per-batch mAP, which
is not the mAP of the test set; the book does not copy that).

All functions take plain tensors so that every chapter, whatever its backbone, shares them:
``extract_features`` turns any encoder callable into a feature matrix, ``linear_probe`` trains a linear
layer on those features, ``fine_tune`` trains encoder and head end to end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torchmetrics.functional.classification as tmc
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .train import cosine_schedule

TASKS = ("multilabel", "multiclass")


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def multilabel_map(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean average precision of multi-label scores [N,K] against multi-hot targets [N,K], in percent.

    ``mAP_macro`` averages the per-class AP over classes present in the targets (BigEarthNet papers
    report this one as mAP); ``mAP_micro`` pools all (sample, class) decisions.
    """
    scores, targets = _check_pair(scores, targets, "scores", "targets")
    targets = targets.long()
    present = targets.sum(0) > 0
    if not present.any():
        raise ValueError("targets: no positive label in the whole set; mAP is undefined")
    # classes without a positive have no defined AP: score only the present ones
    macro = tmc.multilabel_average_precision(scores[:, present].float(), targets[:, present],
                                             num_labels=int(present.sum()), average="macro")
    micro = tmc.multilabel_average_precision(scores.float(), targets, num_labels=targets.shape[1], average="micro")
    return {"mAP_macro": 100 * float(macro), "mAP_micro": 100 * float(micro)}


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int,
                           top_k: Iterable[int] = (1,)) -> dict[str, float]:
    """Single-label metrics in percent: top-k accuracy, OA, AA (mean per-class recall) and weighted
    precision / recall / F1 (as in Fus-MAE's SEN12MS table)."""
    logits, targets = _check_pair(logits, targets, "logits", "targets", same_shape=False)
    targets = targets.long()
    out = {}
    for k in top_k:
        if k <= num_classes:
            out[f"top{k}"] = 100 * float(tmc.multiclass_accuracy(logits, targets, num_classes, average="micro", top_k=k))
    out["OA"] = 100 * float(tmc.multiclass_accuracy(logits, targets, num_classes, average="micro"))
    out["AA"] = 100 * float(_mean_present(tmc.multiclass_recall(logits, targets, num_classes, average="none"), targets, num_classes))
    for name, fn in (("precision_w", tmc.multiclass_precision), ("recall_w", tmc.multiclass_recall),
                     ("f1_w", tmc.multiclass_f1_score)):
        out[name] = 100 * float(fn(logits, targets, num_classes, average="weighted"))
    return out


def segmentation_metrics(preds: torch.Tensor, targets: torch.Tensor, num_classes: int,
                         ignore_index: int | None = None) -> dict[str, float]:
    """Pixel metrics in percent over the whole set: OA, AA, mIoU and mF1; ``ignore_index`` pixels left out.

    ``preds`` are class ids [N,H,W] (or logits [N,C,H,W]); class means run over the classes that occur
    in the targets or predictions (a class absent from both has no defined IoU).
    """
    if preds.ndim == targets.ndim + 1:
        preds = preds.argmax(1)
    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ in shape")
    preds, targets = preds.reshape(-1).long(), targets.reshape(-1).long()
    if ignore_index is not None:
        keep = targets != ignore_index
        preds, targets = preds[keep], targets[keep]
    if targets.numel() == 0:
        raise ValueError("targets: every pixel is ignored; nothing to score")
    if int(targets.max()) >= num_classes or int(targets.min()) < 0:
        raise ValueError(f"targets: class ids must lie in [0, {num_classes}) apart from ignore_index={ignore_index}")
    confusion = torch.bincount(targets * num_classes + preds.clamp(0, num_classes - 1),
                               minlength=num_classes ** 2).reshape(num_classes, num_classes).double()
    tp = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    seen = (support + predicted) > 0
    iou = tp / (support + predicted - tp).clamp_min(1)
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    recall = tp / support.clamp_min(1)
    return {"OA": 100 * float(tp.sum() / support.sum()),
            "AA": 100 * float(recall[support > 0].mean()),
            "mIoU": 100 * float(iou[seen].mean()),
            "mF1": 100 * float(f1[seen].mean())}


def _mean_present(per_class: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    present = torch.bincount(targets, minlength=num_classes) > 0
    return per_class[present].mean()


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, same_shape: bool = True):
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}")
    if same_shape and a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} differ in shape")
    if not torch.isfinite(a.float()).all():
        raise ValueError(f"{name_a}: contains NaN or infinite values")
    return a.detach().cpu(), b.detach().cpu()


# --------------------------------------------------------------------------------------------------
# Label fractions
# --------------------------------------------------------------------------------------------------
def label_fraction_subset(n: int, fraction: float, seed: int, minimum: int = 1) -> np.ndarray:
    """Indices of a ``fraction`` of ``n`` samples drawn **without replacement** (seeded), sorted.

    The DINO-MM code drew its 1% subset with replacement (duplicates, fewer distinct samples); the book
    draws without replacement.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction: expected a value in (0, 1], got {fraction}")
    count = max(minimum, int(round(fraction * n)))
    if count > n:
        raise ValueError(f"label fraction {fraction} of {n} samples asks for {count} (> {n})")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=count, replace=False))


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: Callable[[dict], torch.Tensor], dataset: Dataset, *, label_key: str = "label",
                     batch_size: int = 64, device: torch.device | str = "cpu",
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder(batch) -> [B,D]`` over ``dataset`` in order; return features [N,D] and labels [N,...].

    ``encoder`` receives the collated batch dict already on ``device`` so it can pick and combine the
    modalities it needs (e.g. zero one sensor for single-modality evaluation).
    """
    device = torch.device(device)
    feats, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        label = batch[label_key]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        f = encoder(batch)
        if f.ndim != 2:
            raise ValueError(f"encoder: expected features [B,D], got shape {tuple(f.shape)}")
        feats.append(f.float().cpu())
        labels.append(label)
    return torch.cat(feats), torch.cat(labels)


# --------------------------------------------------------------------------------------------------
# Linear probe on frozen features
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeConfig:
    """A linear classifier on frozen features (DINO-MM: SGD momentum 0.9, lr 0.01 cosine, wd 0)."""
    task: str = "multilabel"
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 0.0
    momentum: float = 0.9
    #: Standardise features with the training set's mean/std before the probe (the head stays linear).
    standardize: bool = True
    #: Label smoothing for multiclass (Fus-MAE uses timm's LabelSmoothingCrossEntropy, 0.1).
    label_smoothing: float = 0.0
    seed: int = 0


def probe_loss(task: str, label_smoothing: float = 0.0) -> nn.Module:
    if task == "multilabel":
        return nn.MultiLabelSoftMarginLoss()
    if task == "multiclass":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    raise ValueError(f"task: expected one of {TASKS}, got {task!r}")


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 cfg: ProbeConfig = ProbeConfig(), num_classes: int | None = None) -> dict[str, float]:
    """Train ``nn.Linear`` on frozen features and score the test set (mAP or accuracy metrics)."""
    if cfg.task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {cfg.task!r}")
    if num_classes is None:
        num_classes = train_y.shape[1] if cfg.task == "multilabel" else int(max(train_y.max(), test_y.max())) + 1
    if cfg.standardize:
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    head = nn.Linear(train_x.shape[1], num_classes)
    train_head(head, train_x, train_y, cfg)
    with torch.no_grad():
        logits = head(test_x)
    return score(logits, test_y, cfg.task, num_classes)


def train_head(head: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ProbeConfig) -> list[float]:
    """Mini-batch training of ``head`` on tensors with a per-step cosine lr; returns per-epoch losses."""
    g = torch.Generator().manual_seed(cfg.seed)
    loss_fn = probe_loss(cfg.task, cfg.label_smoothing)
    opt = _optimizer(head.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    lrs = cosine_schedule(cfg.lr, 0.0, steps_per_epoch * cfg.epochs)
    target = y.float() if cfg.task == "multilabel" else y.long()
    losses, step = [], 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for idx in order.split(cfg.batch_size):
            for group in opt.param_groups:
                group["lr"] = float(lrs[step])
            loss = loss_fn(head(x[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            step += 1
        losses.append(total / len(x))
    return losses


def score(logits: torch.Tensor, targets: torch.Tensor, task: str, num_classes: int) -> dict[str, float]:
    if task == "multilabel":
        return multilabel_map(torch.sigmoid(logits), targets)
    return classification_metrics(logits, targets, num_classes, top_k=(1, 3))


def _optimizer(params, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: expected 'sgd', 'adamw' or 'adam', got {name!r}")


# --------------------------------------------------------------------------------------------------
# kNN
# --------------------------------------------------------------------------------------------------
def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 20,
                 temperature: float = 0.07, num_classes: int | None = None) -> torch.Tensor:
    """Weighted kNN on cosine similarity (Wu et al. 2018, as in DINO): class scores [M,C] for each test row.

    ``train_y`` is class ids [N] or multi-hot [N,C]; votes are weighted by ``exp(sim / temperature)``.
    """
    if k < 1 or k > len(train_x):
        raise ValueError(f"k: expected 1 <= k <= {len(train_x)} training samples, got {k}")
    train_x = nn.functional.normalize(train_x.float(), dim=1)
    test_x = nn.functional.normalize(test_x.float(), dim=1)
    sims, idx = (test_x @ train_x.T).topk(k, dim=1)
    weights = (sims / temperature).exp()
    if train_y.ndim == 1:
        num_classes = num_classes or int(train_y.max()) + 1
        votes = nn.functional.one_hot(train_y[idx].long(), num_classes).float()
    else:
        votes = train_y[idx].float()
    return (votes * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)


# --------------------------------------------------------------------------------------------------
# End-to-end fine-tuning
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FineTuneConfig:
    task: str = "multilabel"          # "multilabel", "multiclass" or "segmentation"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    label_smoothing: float = 0.0
    ignore_index: int = -100
    #: Train only the head (linear probing through the whole network, with augmentation-free inputs).
    freeze_encoder: bool = False
    seed: int = 0


def fine_tune(model: nn.Module, train_set: Dataset, test_set: Dataset, forward: Callable[[nn.Module, dict], torch.Tensor],
              cfg: FineTuneConfig, num_classes: int, *, label_key: str = "label", device: torch.device | str = "cpu",
              encoder_params: Iterable[nn.Parameter] = (), loss_fn: nn.Module | None = None
              ) -> tuple[dict[str, float], list[float]]:
    """Train ``model`` end to end (or only its head) and score it on ``test_set``.

    Args:
        model: encoder + head; ``forward(model, batch) -> logits`` ([B,K] or [B,K,H,W] for segmentation).
        encoder_params: parameters frozen when ``cfg.freeze_encoder`` is true; BatchNorm layers whose
            parameters are all frozen also keep their running statistics (they stay in eval mode).
        loss_fn: replaces the task's default loss (e.g. cross-entropy + Dice).
    Returns:
        (metrics in percent, per-epoch training losses).
    """
    device = torch.device(device)
    model.to(device)
    frozen = set(map(id, encoder_params)) if cfg.freeze_encoder else set()
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=len(train_set) > cfg.batch_size)
    lrs = cosine_schedule(cfg.lr, 0.0, max(len(loader) * cfg.epochs, 1))
    loss_fn = loss_fn or _fine_tune_loss(cfg)
    frozen_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                    and any(True for _ in m.parameters()) and all(id(p) in frozen for p in m.parameters())]
    losses, step = [], 0
    for _ in range(cfg.epochs):
        model.train()
        for norm in frozen_norms:  # a frozen encoder keeps its BatchNorm statistics too
            norm.eval()
        total, count = 0.0, 0
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for group in opt.param_groups:
                group["lr"] = float(lrs[step])
            target = batch[label_key].float() if cfg.task == "multilabel" else batch[label_key].long()
            loss = loss_fn(forward(model, batch), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count, step = total + float(loss.detach()) * len(target), count + len(target), step + 1
        losses.append(total / max(count, 1))
    return predict_and_score(model, test_set, forward, cfg, num_classes, label_key=label_key, device=device), losses


@torch.no_grad()
def predict_and_score(model: nn.Module, dataset: Dataset, forward: Callable[[nn.Module, dict], torch.Tensor],
                      cfg: FineTuneConfig, num_classes: int, *, label_key: str = "label",
                      device: torch.device | str = "cpu") -> dict[str, float]:
    model.eval()
    outputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False):
        targets.append(batch[label_key])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        logits = forward(model, batch).float().cpu()
        outputs.append(logits.argmax(1) if cfg.task == "segmentation" else logits)
    out, tgt = torch.cat(outputs), torch.cat(targets)
    if cfg.task == "segmentation":
        return segmentation_metrics(out, tgt, num_classes, ignore_index=cfg.ignore_index)
    return score(out, tgt, cfg.task, num_classes)


def _fine_tune_loss(cfg: FineTuneConfig) -> nn.Module:
    if cfg.task == "segmentation":
        return nn.CrossEntropyLoss(ignore_index=cfg.ignore_index, label_smoothing=cfg.label_smoothing)
    return probe_loss(cfg.task, cfg.label_smoothing)


def average_scores(runs: list[dict]) -> dict:
    """Column-wise mean of several runs' scores (e.g. random initialisations with different seeds); every
    run must have the same columns."""
    if not runs or any(set(run) != set(runs[0]) for run in runs):
        raise ValueError(f"expected one or more runs with the same columns, got {[sorted(run) for run in runs]}")
    return {column: float(np.mean([run[column] for run in runs])) for column in runs[0]}


def score_ranges(runs: list[dict]) -> dict:
    """``{column: "min-max"}`` over several runs, to print the seed-to-seed spread beside their mean."""
    if not runs:
        raise ValueError("expected one or more runs, got none")
    return {column: f"{min(run[column] for run in runs):.1f}-{max(run[column] for run in runs):.1f}"
            for column in runs[0]}


def subset(dataset: Dataset, indices: Iterable[int]) -> Subset:
    return Subset(dataset, list(map(int, indices)))


def compare_to_baseline(scores: dict[str, float], baseline: dict[str, float], name: str = "pretrained",
                        baseline_name: str = "random init") -> tuple[dict[str, float], str]:
    """Per-column gain of ``scores`` over ``baseline`` (higher is better), and a sentence saying who wins.

    Only the columns both share are compared. Returns ``({column: score - baseline}, sentence)``; the
    sentence counts the columns won and gives the mean gain, so that a chapter states its outcome
    instead of leaving the reader to diff two tables.
    """
    columns = [c for c in scores if c in baseline]
    if not columns:
        raise ValueError(f"scores and baseline share no column: {sorted(scores)} vs {sorted(baseline)}")
    gains = {c: float(scores[c]) - float(baseline[c]) for c in columns}
    wins = sum(g > 0 for g in gains.values())
    mean = sum(gains.values()) / len(gains)
    verdict = "beats" if wins > len(gains) / 2 and mean > 0 else "does not beat"
    sentence = (f"{name} {verdict} {baseline_name}: higher in {wins} of {len(gains)} columns, "
                f"mean gain {mean:+.1f} points ({', '.join(f'{c} {g:+.1f}' for c, g in gains.items())}).")
    return gains, sentence
