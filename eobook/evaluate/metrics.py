"""The papers' metrics, over a whole test set at once, in percent (torchmetrics where it has them).

DINO-MM's code averaged per-batch mAP, which is not the mAP of the test set; the book does not copy that.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torchmetrics.functional.classification as tmc


def multilabel_map(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean average precision of multi-label scores [N,K] against multi-hot targets [N,K], in percent.

    ``mAP_macro`` averages the per-class AP over classes present in the targets; ``mAP_micro`` pools all
    (sample, class) decisions. Papers that say "mAP" differ: each chapter names the one its paper's code computes
    (DINO-MM's: micro).
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
                         ignore_index: int | None = None, classes: Sequence[int] | None = None) -> dict[str, float]:
    """Pixel metrics in percent over the whole set: OA, AA, mIoU and mF1; ``ignore_index`` pixels left out.

    ``preds`` are class ids [N,H,W] (or logits [N,C,H,W]). The class means (AA, mIoU, mF1) run over the
    ``classes`` a paper evaluates that occur in the test labels (DFC2020: 8 of its 10 ids; a class absent from a
    test set never enters a mean as a zero), or, without ``classes``, over those that occur in the targets or
    predictions. OA counts every labelled pixel; ``classes`` in the result is how many classes the means
    averaged. For a test set too large to hold, feed :class:`SegmentationScores` batch by batch.
    """
    scores = SegmentationScores(num_classes, ignore_index, classes)
    scores.update(preds, targets)
    return scores.compute()


class SegmentationScores:
    """:func:`segmentation_metrics` accumulated batch by batch in torchmetrics' confusion matrix: it holds K x K
    counts, not the test set's predictions (5,128 DFC2020 patches of 256 x 256 pixels would be gigabytes)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, classes: Sequence[int] | None = None):
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.num_classes, self.ignore_index, self.classes = num_classes, ignore_index, classes
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)
        self.pixels = 0

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        if preds.ndim == targets.ndim + 1:
            preds = preds.argmax(1)
        if preds.shape != targets.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ in shape")
        targets = targets.long()
        labelled = targets[targets != self.ignore_index] if self.ignore_index is not None else targets
        if labelled.numel() and (int(labelled.max()) >= self.num_classes or int(labelled.min()) < 0):
            raise ValueError(f"targets: class ids must lie in [0, {self.num_classes}) apart from "
                             f"ignore_index={self.ignore_index}")
        self.pixels += labelled.numel()
        self.confusion.update(preds.long().clamp(0, self.num_classes - 1), targets)

    def compute(self) -> dict[str, float]:
        if self.pixels == 0:
            raise ValueError("targets: every pixel is ignored; nothing to score")
        confusion = self.confusion.compute().double()            # [K,K], rows: targets, columns: predictions
        tp = confusion.diag()
        support, predicted = confusion.sum(1), confusion.sum(0)
        scored, recalled = (support + predicted) > 0, support > 0
        if self.classes is not None:
            evaluated = torch.zeros(self.num_classes, dtype=torch.bool)
            evaluated[list(self.classes)] = True
            scored = recalled = evaluated & (support > 0)
            if not scored.any():
                raise ValueError(f"targets: none of the evaluated classes {list(self.classes)} occurs in the test labels")
        iou = tp / (support + predicted - tp).clamp_min(1)
        f1 = 2 * tp / (support + predicted).clamp_min(1)
        recall = tp / support.clamp_min(1)
        return {"OA": 100 * float(tp.sum() / support.sum()),
                "AA": 100 * float(recall[recalled].mean()),
                "mIoU": 100 * float(iou[scored].mean()),
                "mF1": 100 * float(f1[scored].mean()),
                "classes": int(scored.sum())}


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
