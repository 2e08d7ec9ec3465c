"""Fus-MAE's data and evaluation recipe (Sec. 4, Tables 1-2): BigEarthNet-MM and SEN12MS at their native
size, end-to-end fine-tuning on 100% of the labels, linear probes on 1% of the labels and on SEN12MS, the
random-init baseline, the paper's tables and the results tables, the co-located attention of the figures.

Every stage trains in the book's one loop (:func:`eobook.evaluate.fine_tune`, :func:`eobook.evaluate.linear_probe`)
and checkpoints into its own folder under ``checkpoint_dir``, so an interrupted evaluation resumes.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ...data import (DFC_CLASSES, READERS, S2_L1C_BANDS, S2_L2A_BANDS, chapter_dataset, dataset_root,
                     whole_dataset)
from ...data.base import CollatedBatch
from ...evaluate import (Task, drop_unlabelled, extract_features, fine_tune, label_fraction_subset, linear_probe,
                         random_init_baseline, subset)
from ...train import TrainResult, stage_dir
from .config import FusMAEConfig
from .model import MODALITIES, FusMAEEncoder, build_model

#: BigEarthNet-MM's 19-class nomenclature.
N_CLASSES = 19
#: Evaluation inputs of Table 1 -> the modalities the encoder sees.
INPUTS = {"S1": ("s1",), "S2": ("s2",), "S1+S2": ("s1", "s2")}
#: The rows this run adds to the paper's tables.
PRETRAINED, RANDOM_INIT = "Fus-MAE (this run)", "random init"

#: Table 1 of the paper: BigEarthNet-MM mAP (%), fine-tuned on 100% labels / linear probe on 1% labels.
PAPER_TABLE1 = {
    "ImageNet": {"100% S1": 70.2, "100% S2": 85.5, "100% S1+S2": 83.4, "1% S1": 55.9, "1% S2": 58.5, "1% S1+S2": 60.5},
    "Dino-MM": {"100% S1": 69.7, "100% S2": 83.9, "100% S1+S2": 84.6, "1% S1": 52.7, "1% S2": 58.7, "1% S1+S2": 60.3},
    "SatViT": {"100% S1": 75.4, "100% S2": 85.6, "100% S1+S2": 85.5, "1% S1": 52.4, "1% S2": 58.5, "1% S1+S2": 58.0},
    "Fus-MAE w/ XAD": {"100% S1": 73.5, "100% S2": 87.8, "100% S1+S2": 86.9, "1% S1": 59.3, "1% S2": 60.4,
                       "1% S1+S2": 63.1},
    "Fus-MAE w/ XAE&D": {"100% S1": 75.5, "100% S2": 87.9, "100% S1+S2": 87.9, "1% S1": 57.8, "1% S2": 70.0,
                         "1% S1+S2": 68.7},
}
#: Table 2 of the paper: SEN12MS linear evaluation (%), weighted precision / recall / F1.
PAPER_TABLE2 = {
    "ImageNet": {"top1": 58.6, "top3": 90.7, "precision_w": 75.2, "recall_w": 58.6, "f1_w": 60.1},
    "Dino-MM": {"top1": 58.8, "top3": 91.0, "precision_w": 71.4, "recall_w": 58.8, "f1_w": 59.7},
    "SatViT": {"top1": 59.1, "top3": 91.8, "precision_w": 75.2, "recall_w": 59.1, "f1_w": 59.9},
    "Fus-MAE w/ XAD": {"top1": 59.8, "top3": 92.4, "precision_w": 75.2, "recall_w": 59.8, "f1_w": 62.0},
    "Fus-MAE w/ XAE&D": {"top1": 59.6, "top3": 93.6, "precision_w": 71.5, "recall_w": 59.6, "f1_w": 60.1},
}
#: A row of scores, {column: value in %}.
Scores = dict[str, float]


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
class PairedPatches(Dataset):
    """S1 + S2 samples at their native size: {"s1": [2,H,W], "s2": [12,H,W], "label"} (float32 images).

    Nothing is resized here: the model resizes whole batches on their device (:func:`.model.resize_to_input`),
    which keeps the data-loading workers to reading. A batch therefore needs one size per modality, and
    a sample whose shape differs from the first one this dataset (or worker) returned raises a ValueError
    naming both, instead of default_collate's stacking error.

    Args:
        base: a reader returning "s1", "s2" and ``label_key`` (BigEarthNetMM, SEN12MS).
        s2_bands: indices of the S2 bands to keep (SEN12MS has 13 L1C bands: drop B10 to match
            BigEarthNet); a cheap copy of 12 of 13 bands, and one band less to transfer to the device.
        label_key: the base sample's label entry, returned as "label".
        origin: (reader name, split) that ``base`` was opened with, for :func:`split_summary`.
    """

    def __init__(self, base: Dataset, s2_bands: list[int] | None = None, label_key: str = "label",
                 origin: tuple[str, str] | None = None):
        self.base, self.s2_bands, self.label_key, self.origin = base, s2_bands, label_key, origin
        self.shapes: dict[str, tuple[int, ...]] = {}   # {m: (C,H,W)} of the first sample returned

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._checked(index, self.base[index])

    def __getitems__(self, indices: list[int]):
        """The samples ``indices``; read as one collated batch where the reader reads whole batches (a packed
        store, :meth:`eobook.data.base.EODataset.__getitems__`), else one by one."""
        batch = self.base.__getitems__(indices) if hasattr(self.base, "__getitems__") else None
        if not isinstance(batch, CollatedBatch):
            samples = (self.base[i] for i in indices) if batch is None else batch
            return [self._checked(i, sample) for i, sample in zip(indices, samples)]
        pairs = self._pair(batch.collated, band_axis=1, to_float=False)  # float32, or native for fit to normalise
        self._check_shapes(indices[0], {m: pairs[m][0] for m in ("s1", "s2")})
        return CollatedBatch(pairs, len(indices))

    def _checked(self, index: int, sample: dict) -> dict[str, torch.Tensor]:
        pair = self._pair(sample)
        self._check_shapes(index, pair)
        return pair

    def _pair(self, sample: dict, band_axis: int = 0, to_float: bool = True) -> dict[str, torch.Tensor]:
        """{"s1", "s2", "label"} of one base sample, or of a collated batch of them (``band_axis`` 1)."""
        s1, s2 = sample["s1"], sample["s2"]
        if self.s2_bands is not None:
            s2 = s2.index_select(band_axis, torch.tensor(self.s2_bands))
        if to_float:
            s1, s2 = s1.float(), s2.float()
        return {"s1": s1, "s2": s2, "label": sample[self.label_key]}  # [2,H,W], [12,H,W]

    def _check_shapes(self, index: int, images: dict[str, torch.Tensor]) -> None:
        for m, x in ((m, images[m]) for m in ("s1", "s2")):
            first = self.shapes.setdefault(m, tuple(x.shape))
            if tuple(x.shape) != first:
                raise ValueError(f"PairedPatches: sample {index} has {m} of shape {tuple(x.shape)}, earlier samples "
                                 f"{first}; samples of one dataset must share their size, as the model resizes "
                                 "whole batches (resize the dataset's files to one size first)")


def bigearthnet(cfg: FusMAEConfig, split: str) -> PairedPatches:
    """BigEarthNet-MM ``split`` at its native size (real data: 120 px; labels: 19-class multi-hot), from the
    dataset's official split lists (v1: ``train.csv`` / ``test.csv``; v2: reBEN's ``split`` column). The book
    does not drop the patches of the snow and cloud lists (the paper's 354,196 training images are 60% of all
    590,326, so it apparently kept them; its own split was not published). A smoke run keeps the first few
    patches."""
    return PairedPatches(chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split=split),
                         origin=("BigEarthNetMM", split))


def sen12ms(cfg: FusMAEConfig, split: str) -> PairedPatches:
    """SEN12MS scene classification ``split`` (``train`` / ``test``: the benchmark's ``train_list.txt`` /
    ``test_list.txt``) at its native size (real data: 256 px). Label: the benchmark's single label, the
    majority simplified IGBP class of the patch's ``lc`` band 1 (10 classes; -1 if unlabelled). S2 without
    B10, in BigEarthNet's 12-band order. A smoke run keeps the first few patches."""
    bands = [S2_L1C_BANDS.index(b) for b in S2_L2A_BANDS]
    return PairedPatches(chapter_dataset(cfg, "SEN12MS", "SEN12MS", split=split), s2_bands=bands,
                         label_key="label_scene", origin=("SEN12MS", split))


#: Where each reader's splits come from, as :func:`split_summary` names them.
_SPLIT_SOURCES = {
    ("BigEarthNetMM", "v1"): "official split list {split}.csv",
    ("BigEarthNetMM", "v2"): "reBEN's metadata.parquet, split column",
    ("SEN12MS", None): "the classification benchmark's {split}_list.txt",
}
_FOLDERS = {"BigEarthNetMM": "BigEarthNet-MM", "SEN12MS": "SEN12MS"}


def split_summary(cfg: FusMAEConfig, dataset: PairedPatches) -> str:
    """One line saying which split ``dataset`` (from :func:`bigearthnet` or :func:`sen12ms`) is, where its list
    comes from and how many patches the reader holds (and, where a smoke run keeps fewer, how many this run
    uses). Counts come from the reader; a dataset held in memory (``cache_data``, the sample worlds) is
    counted as read, its layout from a fresh reader of the same folder."""
    if dataset.origin is None:
        raise ValueError("split_summary: expected a dataset from bigearthnet() or sen12ms() (PairedPatches.origin)")
    name, split = dataset.origin
    base = whole_dataset(dataset.base)
    reader = base if isinstance(base, READERS[name]) else READERS[name](dataset_root(cfg, _FOLDERS[name]), split=split)
    layout = getattr(reader, "layout", None)
    source = _SPLIT_SOURCES[(name, layout)].format(split=split)
    if getattr(reader, "store", None) is not None:
        source += ", packed store"
    where = f"data_root {cfg.data_root}" if cfg.data_root else "the synthetic sample world"
    label = _FOLDERS[name] + (f" {layout}" if layout else "")
    line = f"{label} '{split}' split ({source}; {where}): {len(base):,} patches"
    dropped = getattr(reader, "dropped", [])
    if dropped:
        line += f" ({len(dropped)} listed patch(es) dropped by the reader: {', '.join(dropped)})"
    if len(dataset) != len(base):
        line += f", of which this run uses the first {len(dataset):,}" + (" (smoke run)" if cfg.smoke else "")
    return line


def stack_samples(dataset: Dataset, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` samples of ``dataset`` as a native-size batch {"s1": [B,2,H,W], "s2": [B,12,H,W]}
    (figures; :func:`.model.resize_to_input` gives the model's view)."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    return {m: torch.stack([s[m] for s in samples]) for m in MODALITIES}


# --------------------------------------------------------------------------------------------------
# Protocols (Sec. 4)
# --------------------------------------------------------------------------------------------------
def frozen_features(encoder: FusMAEEncoder, dataset: Dataset, inputs: str,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features [N,D] (the mean of all output tokens, :meth:`FusMAEEncoder.features`) of ``dataset``
    seen through ``inputs`` ("S1", "S2" or "S1+S2"), and its labels; batches arrive at native size. The
    encoder is moved to ``device`` (a random-init encoder is built on the CPU)."""
    encoder = encoder.to(device).eval()
    modalities = INPUTS[inputs]
    return extract_features(lambda batch: encoder.features({m: batch[m] for m in modalities}), dataset, device=device)


class FusMAEClassifier(nn.Module):
    """A linear head on the mean-pooled encoder tokens, for end-to-end fine-tuning (Table 1, 100%); takes
    native-size batches (``FusMAEEncoder.features`` resizes them). The encoder is a copy."""

    def __init__(self, encoder: FusMAEEncoder, num_classes: int, modalities: tuple[str, ...]):
        super().__init__()
        self.encoder, self.modalities = copy.deepcopy(encoder), modalities
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.encoder.features({m: batch[m] for m in self.modalities}))     # [B,K]


def fine_tune_multilabel(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                         inputs: str, device: torch.device | str = "cpu",
                         checkpoint_dir: str | os.PathLike | None = None) -> tuple[Scores, TrainResult]:
    """Table 1, 100% labels: linear head + encoder fine-tuned with MultiLabelSoftMarginLoss and AdamW
    (``finetune_*`` fields, cosine lr). Returns (test metrics with ``mAP_macro``, the training result);
    ``encoder`` is left untouched."""
    model = FusMAEClassifier(encoder, N_CLASSES, INPUTS[inputs])
    loop = cfg.stage(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size, optimizer="adamw",
                     lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay, device=str(device))
    return fine_tune(model, train_set, test_set, lambda mdl, batch: mdl(batch), Task("multilabel", N_CLASSES), loop,
                     checkpoint_dir=checkpoint_dir)


def probe_indices(cfg: FusMAEConfig, n: int):
    """Indices of the 1% probe's training patches among ``n``: a seeded ``probe_label_fraction`` drawn without
    replacement, at least ``probe_min_samples``, and at least 2 when the features are standardised (one
    sample has no spread to standardise by; a smoke run or a tiny real root can hold a handful of patches)."""
    minimum = max(cfg.probe_min_samples, 2 if cfg.probe_standardize else 1)
    if minimum > n:
        raise ValueError(f"the 1% probe needs at least {minimum} training patches (probe_min_samples="
                         f"{cfg.probe_min_samples}, probe_standardize={cfg.probe_standardize}); the split has {n}")
    return label_fraction_subset(n, cfg.probe_label_fraction, cfg.seed, minimum=minimum)


def linear_probe_multilabel(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                            inputs: str, device: torch.device | str = "cpu",
                            checkpoint_dir: str | os.PathLike | None = None) -> Scores:
    """Table 1, 1% labels: patch projections and encoder frozen, a linear classifier on a seeded
    ``probe_label_fraction`` of the training split (drawn without replacement, :func:`probe_indices`),
    ``probe_epochs`` epochs, batch ``probe_batch_size``, AdamW, MultiLabelSoftMarginLoss."""
    part = subset(train_set, probe_indices(cfg, len(train_set)))
    (train_x, train_y), (test_x, test_y) = (frozen_features(encoder, data, inputs, device) for data in (part, test_set))
    loop = cfg.stage(epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, optimizer="adamw", lr=cfg.probe_lr,
                     device=str(device))
    return linear_probe(train_x, train_y, test_x, test_y, Task("multilabel", N_CLASSES), loop,
                        standardize_features=cfg.probe_standardize, checkpoint_dir=checkpoint_dir)


def linear_probe_sen12ms(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                         inputs: str | None = None, device: torch.device | str = "cpu",
                         checkpoint_dir: str | os.PathLike | None = None) -> Scores:
    """Table 2: linear evaluation on SEN12MS scenes (the frozen encoder sees ``inputs``, by default
    ``cfg.transfer_inputs``) with label smoothing (timm's LabelSmoothingCrossEntropy equals torch's
    cross-entropy with ``label_smoothing``), ``transfer_epochs`` epochs, batch ``transfer_batch_size``,
    AdamW, over the 10 simplified IGBP classes. Patches without a labelled pixel (label -1) are left out,
    and a line says how many."""
    (train_x, train_y), (test_x, test_y) = (frozen_features(encoder, data, inputs or cfg.transfer_inputs, device)
                                            for data in (train_set, test_set))
    left_out = {name: int((y < 0).sum()) for name, y in (("train", train_y), ("test", test_y))}
    if any(left_out.values()):
        print(f"SEN12MS probe: left out {left_out['train']} of {len(train_y)} train and {left_out['test']} of "
              f"{len(test_y)} test patches without a labelled pixel")
    (train_x, train_y), (test_x, test_y) = drop_unlabelled(train_x, train_y), drop_unlabelled(test_x, test_y)
    if not len(train_y) or not len(test_y):
        raise ValueError(f"SEN12MS probe: no labelled patch left in the {'train' if not len(train_y) else 'test'} "
                         "split (every scene label is -1)")
    loop = cfg.stage(epochs=cfg.transfer_epochs, batch_size=cfg.transfer_batch_size, optimizer="adamw",
                     lr=cfg.transfer_lr, device=str(device))
    task = Task("multiclass", len(DFC_CLASSES), label_smoothing=cfg.label_smoothing)
    return linear_probe(train_x, train_y, test_x, test_y, task, loop, standardize_features=cfg.probe_standardize,
                        checkpoint_dir=checkpoint_dir)


def table1_scores(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                  device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None) -> Scores:
    """Table 1's cells for one encoder: {"100% S1": mAP, ..., "1% S1+S2": mAP} (macro mAP, %); each stage
    checkpoints into ``checkpoint_dir/<cell>``."""
    scores = {}
    for inputs in INPUTS:
        cell = f"100% {inputs}"
        metrics, _ = fine_tune_multilabel(encoder, train_set, test_set, cfg, inputs, device,
                                          stage_dir(checkpoint_dir, cell.replace(" ", "-")))
        scores[cell] = metrics["mAP_macro"]
    for inputs in INPUTS:
        cell = f"1% {inputs}"
        scores[cell] = linear_probe_multilabel(encoder, train_set, test_set, cfg, inputs, device,
                                               stage_dir(checkpoint_dir, cell.replace(" ", "-")))["mAP_macro"]
    return scores


def evaluation_rows(encoder: FusMAEEncoder, score: Callable[[FusMAEEncoder, Path | None], Scores],
                    cfg: FusMAEConfig, checkpoint_dir: str | os.PathLike | None = None
                    ) -> tuple[dict[str, Scores], list[Scores]]:
    """This run's rows of a table: ``score(encoder, stage folder)`` of the pretrained encoder (``PRETRAINED``)
    and the mean over the random-init encoders seeded ``cfg.random_init_seed_list`` (``RANDOM_INIT``, the
    encoder of a freshly built :class:`FusMAE`). Returns the rows and each seed's scores (their spread
    is part of the result: on a few hundred patches one random encoder's probe moves by points)."""
    rows = {PRETRAINED: score(encoder, stage_dir(checkpoint_dir, "fus_mae"))}
    rows[RANDOM_INIT], per_seed = random_init_baseline(
        lambda: build_model(cfg).encoder, lambda enc, seed: score(enc, stage_dir(checkpoint_dir, f"random-seed{seed}")),
        cfg.random_init_seed_list)
    return rows, per_seed


def table1_rows(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                ) -> tuple[dict[str, Scores], list[Scores]]:
    """Table 1 (BigEarthNet-MM) for this run's encoder and the random-init baseline (:func:`evaluation_rows`)."""
    return evaluation_rows(encoder, lambda enc, ckpt: table1_scores(enc, train_set, test_set, cfg, device, ckpt),
                           cfg, checkpoint_dir)


def table2_rows(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg: FusMAEConfig,
                device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None
                ) -> tuple[dict[str, Scores], list[Scores]]:
    """Table 2 (SEN12MS, features of ``cfg.transfer_inputs``) for this run's encoder and the random-init baseline."""
    def score(enc: FusMAEEncoder, ckpt: Path | None) -> Scores:
        return linear_probe_sen12ms(enc, train_set, test_set, cfg, cfg.transfer_inputs, device, ckpt)

    return evaluation_rows(encoder, score, cfg, checkpoint_dir)


# --------------------------------------------------------------------------------------------------
# Results beside the paper's tables, figures
# --------------------------------------------------------------------------------------------------
def results_table(paper: dict[str, Scores], rows: dict[str, Scores], variant: str):
    """The paper's row for ``variant`` and its ImageNet baseline beside this run's ``rows``, on the paper's
    columns (``paper`` is :data:`PAPER_TABLE1` or :data:`PAPER_TABLE2`)."""
    import pandas as pd

    paper_row = f"Fus-MAE w/ {variant}"
    columns = list(paper[paper_row])
    return pd.DataFrame({f"paper: {paper_row}": paper[paper_row], "paper: ImageNet init": paper["ImageNet"],
                         **{f"this run: {name}": {c: scores[c] for c in columns} for name, scores in rows.items()}})


def colocated_attention(maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of each query's cross-attention on the patch at the same location, in % ({direction: value});
    uniform attention would give 100 / N."""
    return {k: 100 * float(w.diagonal(dim1=-2, dim2=-1).mean()) for k, w in maps.items()}
