"""Downstream protocols on a pretrained encoder: features, linear probes, kNN, fine-tuning, segmentation.

Every protocol that trains does so in :func:`eobook.train.fit`, the loop pretraining uses, so probes and
fine-tuning checkpoint, resume after a kill, follow the precision policy and log like pretraining. What is
learnt and how it is scored is a :class:`Task`; how it is trained is a :class:`eobook.train.TrainConfig`
(usually ``cfg.stage(...)`` of the chapter's profile).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..train import TrainConfig, TrainResult, fit
from ..train.loop import available_cpus
from .baselines import seeded
from .metrics import SegmentationScores, classification_metrics, multilabel_map, segmentation_metrics

TASK_KINDS = ("multilabel", "multiclass", "segmentation")
#: A training-batch transform: ``augment(batch, ctx) -> batch``, drawing from ``ctx`` (the step's Random).
Augment = Callable[[dict, Any], dict]


# --------------------------------------------------------------------------------------------------
# What is learnt and how it is scored
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A downstream task: its kind, classes, where its labels are, and its loss.

    Args:
        kind: "multilabel" (multi-hot [B,K], MultiLabelSoftMarginLoss, mAP), "multiclass" (ids [B],
            cross-entropy, top-k / OA / AA / weighted P, R, F1) or "segmentation" (ids [B,H,W],
            cross-entropy, OA / AA / mIoU / mF1).
        num_classes: K.
        label_key: the batch entry holding the labels.
        label_smoothing: of the cross-entropy (Fus-MAE's SEN12MS probe: 0.1).
        ignore_index: label of unlabelled pixels, left out of loss and metrics (segmentation).
        eval_classes: the classes the segmentation means run over (None: those present in targets or
            predictions; see :func:`~eobook.evaluate.metrics.segmentation_metrics`).
    """

    kind: str
    num_classes: int
    label_key: str = "label"
    label_smoothing: float = 0.0
    ignore_index: int = -100
    eval_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"kind: expected one of {TASK_KINDS}, got {self.kind!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")

    def loss(self) -> nn.Module:
        if self.kind == "multilabel":
            return nn.MultiLabelSoftMarginLoss()
        return nn.CrossEntropyLoss(ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.float() if self.kind == "multilabel" else labels.long()

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Metrics in percent of logits [N,K] (or, for segmentation, class ids [N,H,W] or logits)."""
        if self.kind == "multilabel":
            return multilabel_map(torch.sigmoid(outputs), targets)
        if self.kind == "segmentation":
            return segmentation_metrics(outputs, targets, self.num_classes, ignore_index=self.ignore_index,
                                        classes=self.eval_classes)
        return classification_metrics(outputs, targets, self.num_classes, top_k=(1, 3))


# --------------------------------------------------------------------------------------------------
# Label fractions and subsets
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


def subset(dataset: Dataset, indices: Iterable[int]) -> Subset:
    return Subset(dataset, list(map(int, indices)))


class TensorBatches(Dataset):
    """Rows of equally long tensors as samples ``{name: tensor[i]}``; a batch of indices is read in one
    indexing (``__getitems__``) and needs no collation, so a probe's step costs what its matmul costs."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors: expected equal lengths, got { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: t[index] for k, t in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        return {k: t[index] for k, t in self.tensors.items()}

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch


# --------------------------------------------------------------------------------------------------
# Features of a frozen encoder
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
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=min(num_workers, available_cpus())):
        label = batch[label_key]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        f = encoder(batch)
        if f.ndim != 2:
            raise ValueError(f"encoder: expected features [B,D], got shape {tuple(f.shape)}")
        feats.append(f.float().cpu())
        labels.append(label)
    return torch.cat(feats), torch.cat(labels)


def drop_unlabelled(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose class id is >= 0 (scene labels are -1 where a patch has no labelled pixel)."""
    keep = labels >= 0
    return features[keep], labels[keep]


# --------------------------------------------------------------------------------------------------
# Training a model on a task, in the one loop
# --------------------------------------------------------------------------------------------------
class Supervised(nn.Module):
    """``model`` trained on a :class:`Task` in :func:`eobook.train.fit`: ``forward(batch, ctx)`` returns
    ``{"loss": loss(predict(model, batch), labels)}``.

    BatchNorm layers whose parameters are all frozen stay in eval mode in training too, so a frozen
    encoder keeps its pretrained statistics (a frozen encoder is frozen, not re-normalised).
    """

    def __init__(self, model: nn.Module, predict: Callable[[nn.Module, dict], torch.Tensor], task: Task,
                 loss_fn: nn.Module | None = None, augment: Augment | None = None):
        super().__init__()
        self.model, self.predict, self.task, self.augment = model, predict, task, augment
        self.loss_fn = loss_fn if loss_fn is not None else task.loss()

    def frozen_norms(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]

    def train(self, mode: bool = True) -> Supervised:
        super().train(mode)
        for norm in self.frozen_norms():
            norm.eval()
        return self

    def forward(self, batch: dict[str, Any], ctx: Any = None) -> dict[str, torch.Tensor]:
        if self.augment is not None:  # training batches only; draws from the step (the RNG contract)
            batch = self.augment(batch, ctx)
        return {"loss": self.loss_fn(self.predict(self.model, batch), self.task.target(batch[self.task.label_key]))}


def train_supervised(model: nn.Module, dataset: Dataset, predict: Callable[[nn.Module, dict], torch.Tensor],
                     task: Task, loop: TrainConfig, *, loss_fn: nn.Module | None = None, augment: Augment | None = None,
                     checkpoint_dir: str | os.PathLike | None = None, **fit_kwargs: Any) -> TrainResult:
    """Train the parameters of ``model`` that require gradients on ``task`` with the loop settings ``loop``.

    An incomplete last batch is kept (probes on a few hundred samples need every one); a checkpoint
    directory makes the stage resumable like pretraining, with a meta that refuses another model's state.
    ``augment(batch, ctx)`` transforms each training batch (images and labels together), drawing from ``ctx``.
    """
    objective = Supervised(model, predict, task, loss_fn, augment)
    # a stage folder belongs to one model, one dataset and one schedule: another is refused, not resumed
    meta = {"task": task.kind, "num_classes": task.num_classes, "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()), "samples": len(dataset),
            "epochs": loop.epochs, "batch_size": loop.batch_size, "optimizer": loop.optimizer, "lr": loop.lr}
    fit_kwargs = {"drop_last": False, "log": lambda _: None, "checkpoint_meta": meta, **fit_kwargs}
    return fit(objective, dataset, loop, checkpoint_dir=checkpoint_dir, **fit_kwargs)


@torch.no_grad()
def predict_and_score(model: nn.Module, dataset: Dataset, predict: Callable[[nn.Module, dict], torch.Tensor],
                      task: Task, *, batch_size: int = 64, device: torch.device | str = "cpu",
                      num_workers: int = 0, collate_fn: Callable | None = None) -> dict[str, float]:
    """``task.score`` of ``predict(model, batch)`` over the whole ``dataset`` (model in eval mode); segmentation
    scores accumulate batch by batch, so no test set is ever held whole. ``collate_fn``: the loader's (e.g.
    :meth:`TensorBatches.collate`, whose batches come collated)."""
    model.eval()
    device = torch.device(device)
    segmentation = task.kind == "segmentation"
    pixels = SegmentationScores(task.num_classes, task.ignore_index, task.eval_classes) if segmentation else None
    outputs, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=min(num_workers, available_cpus()),
                            collate_fn=collate_fn):
        target = batch[task.label_key]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        logits = predict(model, batch).float().cpu()
        if segmentation:
            pixels.update(logits.argmax(1), target)
        else:
            outputs.append(logits)
            targets.append(target)
    if segmentation:
        return pixels.compute()
    return task.score(torch.cat(outputs), torch.cat(targets))


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------
def standardize(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets scaled with the training set's mean and std per dimension (the head stays linear)."""
    # the population std for a single row (the sample std of one value is undefined)
    mean, std = train_x.mean(0), train_x.std(0, correction=1 if len(train_x) > 1 else 0).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 task: Task, loop: TrainConfig, *, standardize_features: bool = False,
                 checkpoint_dir: str | os.PathLike | None = None, **fit_kwargs: Any) -> dict[str, float]:
    """Train ``nn.Linear`` on frozen features [N,D] in the loop and score the test set.

    The features are held in memory and batched by indexing (no worker processes). With
    ``standardize_features`` they are first scaled with the training set's statistics (not in the
    papers' protocols: chapters that do it say so in their Deviations).
    """
    if standardize_features:
        train_x, test_x = standardize(train_x, test_x)
    head = seeded(lambda: nn.Linear(train_x.shape[1], task.num_classes), loop.seed)  # the same head after a resume
    data = TensorBatches(x=train_x, **{task.label_key: train_y})
    train_supervised(head, data, _linear_predict, task, _features_loop(loop), collate_fn=TensorBatches.collate,
                     checkpoint_dir=checkpoint_dir, desc="probe", **fit_kwargs)
    head.cpu().eval()
    with torch.no_grad():
        return task.score(head(test_x), test_y)


def _linear_predict(head: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return head(batch["x"])


def _features_loop(loop: TrainConfig) -> TrainConfig:
    return dataclasses.replace(loop, num_workers=0)  # in-memory tensors: workers would only add start-up


def fine_tune(model: nn.Module, train_set: Dataset, test_set: Dataset,
              predict: Callable[[nn.Module, dict], torch.Tensor], task: Task, loop: TrainConfig, *,
              frozen: Iterable[nn.Parameter] = (), loss_fn: nn.Module | None = None, augment: Augment | None = None,
              checkpoint_dir: str | os.PathLike | None = None, **fit_kwargs: Any) -> tuple[dict[str, float], TrainResult]:
    """Train ``model`` end to end, except the ``frozen`` parameters, and score it on ``test_set``.

    Args:
        model: encoder + head; ``predict(model, batch) -> logits`` ([B,K] or [B,K,H,W] for segmentation).
        frozen: parameters kept as they are (e.g. a frozen encoder's); BatchNorm layers whose parameters
            are all frozen keep their running statistics too.
        loss_fn: replaces the task's loss (e.g. CromSS's cross-entropy + Dice).
        augment: ``augment(batch, ctx) -> batch`` on training batches (e.g. CromSS's flips and rotations).
    Returns:
        (test metrics in percent, the training result with its per-step history).
    """
    frozen_ids = set(map(id, frozen))
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen_ids)
    # a training set smaller than a batch is one batch
    loop = dataclasses.replace(loop, batch_size=min(loop.batch_size, len(train_set)))
    result = train_supervised(model, train_set, predict, task, loop, loss_fn=loss_fn, augment=augment,
                              checkpoint_dir=checkpoint_dir, drop_last=True, desc="fine-tune", **fit_kwargs)
    device = next(model.parameters()).device
    return predict_and_score(model, test_set, predict, task, batch_size=loop.batch_size, device=device,
                             num_workers=loop.num_workers), result


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
