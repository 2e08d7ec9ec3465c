"""MultiMAE-EO's data and evaluation recipe (appendix Secs. 1 and 3, Figs. 4-6): the MMEarth pretraining set,
the downstream tasks, linear probing / end-to-end fine-tuning of classifiers and the ConvNeXt segmentation head
(encoder frozen or end to end), the random-init baseline, the results table and the figures' data."""
from __future__ import annotations

import copy
import dataclasses
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.convnext import ConvNeXtBlock
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data import (IGNORE_INDEX, EuroSATMS, FMoWSentinel, GeoBench, MMEarth, dataset_root, smoke_subset,
                     whole_dataset)
from ...data.bands import MMEARTH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS
from ...evaluate import (Task, extract_features, fine_tune, label_fraction_subset, linear_probe, random_init_baseline,
                         score_ranges, seeded, subset)
from ...nn import unpatchify
from ...rng import Random, as_random
from ...runtime import atomic_write_json
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
    """The MMEarth rows of ``cfg.mmearth_split`` with the six modalities (``<data root>/MMEarth/<mmearth_file>``);
    in a smoke run its first few rows."""
    split = None if cfg.mmearth_split == "all" else cfg.mmearth_split
    return smoke_subset(MMEarth(dataset_root(cfg, "MMEarth") / cfg.mmearth_file, modalities=MODALITIES, split=split),
                        cfg)


def describe_pretraining(cfg: MultiMAEConfig, dataset: Dataset) -> str:
    """Which MMEarth file, split and how many of its rows this run pretrains on (one line)."""
    whole = whole_dataset(dataset)
    line = (f"MMEarth {cfg.mmearth_file}, split '{cfg.mmearth_split}': pretraining on {len(dataset)} of its "
            f"{len(whole)} rows")
    return line + (" (a smoke run keeps the first few)" if len(dataset) < len(whole) else "")


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
    """A downstream task's splits, how to read them and which of their samples it uses.

    ``train`` / ``test`` are the samples used: ``train_indices`` / ``test_indices`` of the reader's whole
    ``train_split`` / ``test_split`` (``train_of`` / ``test_of`` samples); ``train_fraction`` is the share of the
    training split drawn (seeded by ``seed``) before any cap, 1 where the paper uses all of it.
    """
    name: str
    train: Dataset
    test: Dataset
    band_order: tuple[str, ...]
    kind: str              # "multiclass", "multilabel" or "segmentation"
    num_classes: int
    dataset: str = ""
    train_split: str = "train"
    test_split: str = "test"
    train_of: int = 0
    test_of: int = 0
    train_indices: tuple[int, ...] = ()
    test_indices: tuple[int, ...] = ()
    train_fraction: float = 1.0
    seed: int = 0
    #: Ids of the training samples used (file or sample names; "" where the reader has none), in order.
    train_ids: tuple[str, ...] = ()

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

    @property
    def is_subset(self) -> bool:
        """True when the task trains on part of its training split (a fraction, a cap or a smoke run)."""
        return len(self.train) < self.train_of

    def describe(self) -> str:
        """One line: the dataset, splits and sample counts this task trains and tests on."""
        draw = f", a seeded {self.train_fraction:.0%} draw (seed {self.seed})" if self.train_fraction < 1 else ""
        return (f"{self.name} ({self.dataset}): trains on {len(self.train)} of the {self.train_of} samples of split "
                f"'{self.train_split}'{draw}; tests on {len(self.test)} of the {self.test_of} samples of split "
                f"'{self.test_split}'")

    def record(self) -> dict[str, Any]:
        """The task's data as metrics.json records it."""
        return {"dataset": self.dataset, "train_split": self.train_split, "train": len(self.train),
                "train_of": self.train_of, "train_fraction": self.train_fraction, "test_split": self.test_split,
                "test": len(self.test), "test_of": self.test_of, "seed": self.seed}


def _draw(indices: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """``indices`` capped to a seeded draw of ``cap`` of them (0 = all), sorted."""
    if 0 < cap < len(indices):
        indices = indices[label_fraction_subset(len(indices), cap / len(indices), seed)]
    return indices


def sample_ids(reader: Dataset, indices: Sequence[int]) -> list[str]:
    """The ids of samples ``indices`` of a task reader without reading them: fMoW-Sentinel's
    ``<category>_<location>_<image>``, GEO-Bench's sample names, EuroSAT-MS's ``<class>/<file>``."""
    if isinstance(reader, FMoWSentinel):
        return [str(reader.rows[i]["id"]) for i in indices]
    names = getattr(reader, "samples", None) or getattr(reader, "files", None)
    return [str(names[i]) for i in indices] if names is not None else ["" for _ in indices]


def load_task(root: str | os.PathLike, name: str, max_train: int = 0, max_test: int = 0, seed: int = 0, *,
              fmow_fraction: float = 0.1, fmow_image_size: int = 64, fmow_test_split: str = "val") -> DownstreamTask:
    """A GEO-Bench task (``<root>/GEO-Bench``), EuroSAT-MS (``name="eurosat"``, ``<root>/EuroSAT-MS``) or
    fMoW-Sentinel (``name="fmow"``, ``<root>/fMoW-Sentinel``).

    fMoW trains on a seeded draw of ``fmow_fraction`` of its training split (appendix Sec. 1.3: 10%), its images
    resampled to ``fmow_image_size`` (Table 3: 64 x 64), and is scored on ``fmow_test_split``; every other task
    uses its whole train and test splits. ``max_train`` / ``max_test`` then cap the splits to seeded random
    subsets (0 = all).
    """
    if name not in TASK_CLASSES:
        raise ValueError(f"task: expected one of {sorted(TASK_CLASSES)}, got {name!r}")
    root = Path(root)
    fraction, test_split = 1.0, "test"
    if name == "eurosat":
        train, test = (EuroSATMS(root / "EuroSAT-MS", split=s) for s in ("train", "test"))
        band_order, dataset = S2_L1C_BANDS, "EuroSAT-MS"
    elif name == "fmow":
        fraction, test_split = fmow_fraction, fmow_test_split
        train, test = (FMoWSentinel(root / "fMoW-Sentinel", split=s, resize_to=fmow_image_size)
                       for s in ("train", test_split))
        band_order, dataset = S2_L1C_BANDS, "fMoW-Sentinel"
    else:
        train, test = (GeoBench(root / "GEO-Bench", task=name, split=s) for s in ("train", "test"))
        band_order, dataset = geobench_band_codes(train.bands), f"GEO-Bench {name}"
    label = train[0]["label"]
    kind = ("segmentation" if label.ndim == 2 else "multilabel" if label.is_floating_point() else "multiclass")
    train_idx = np.arange(len(train))
    if fraction < 1:
        train_idx = label_fraction_subset(len(train), fraction, seed)
    train_idx = _draw(train_idx, max_train, seed)
    test_idx = _draw(np.arange(len(test)), max_test, seed)
    whole = lambda ds, idx: ds if len(idx) == len(ds) else subset(ds, idx)  # noqa: E731
    return DownstreamTask(name, whole(train, train_idx), whole(test, test_idx), tuple(band_order), kind,
                          TASK_CLASSES[name], dataset=dataset, train_split="train", test_split=test_split,
                          train_of=len(train), test_of=len(test), train_indices=tuple(map(int, train_idx)),
                          test_indices=tuple(map(int, test_idx)), train_fraction=fraction, seed=seed,
                          train_ids=tuple(sample_ids(train, train_idx)))


def smoke_task(task: DownstreamTask, cfg: MultiMAEConfig) -> DownstreamTask:
    """``task`` with both splits through :func:`eobook.data.smoke_subset` (their first few samples in a smoke run)."""
    train, test = smoke_subset(task.train, cfg), smoke_subset(task.test, cfg)
    if train is task.train and test is task.test:
        return task
    return dataclasses.replace(task, train=train, test=test, train_indices=task.train_indices[:len(train)],
                               test_indices=task.test_indices[:len(test)], train_ids=task.train_ids[:len(train)])


def downstream_tasks(cfg: MultiMAEConfig) -> list[DownstreamTask]:
    """The profile's classification then segmentation tasks, capped at ``eval_max_train`` / ``eval_max_test``
    (fMoW after its ``fmow_train_fraction`` draw); in a smoke run a few samples of each split."""
    root = dataset_root(cfg)
    return [smoke_task(load_task(root, name, cfg.eval_max_train, cfg.eval_max_test, cfg.seed,
                                 fmow_fraction=cfg.fmow_train_fraction, fmow_image_size=cfg.fmow_image_size,
                                 fmow_test_split=cfg.fmow_test_split), cfg)
            for name in (*cfg.classification_tasks, *cfg.segmentation_tasks)]


def record_task_data(tasks: Sequence[DownstreamTask], folder: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """Each task's splits and sample counts, for metrics.json. The training samples of every task that trains on
    part of its split (fMoW's draw, caps, a smoke run) are written to ``<folder>/subsets/<task>.json`` (indices
    into the training split and sample ids) and the record names that file; nothing is written without ``folder``.
    """
    records = {}
    for task in tasks:
        record = task.record()
        if task.is_subset and folder is not None:
            path = Path(folder) / "subsets" / f"{task.name}.json"
            atomic_write_json(path, {"task": task.name, **record, "indices": list(task.train_indices),
                                     "ids": list(task.train_ids)})
            record["subset_file"] = str(path.relative_to(folder))
        records[task.name] = record
    return records


def evaluation_checkpoint_dir(cfg: MultiMAEConfig, parent: str | os.PathLike | None) -> Path | None:
    """Where the evaluation stages checkpoint: ``parent``, or nowhere in a smoke run, which says so in one line
    (with the ``full`` profile's ViT-B, each end-to-end stage's checkpoint holds the encoder and its AdamW state,
    about 1 GB, and the profile has dozens of stages)."""
    if cfg.smoke and parent is not None:
        print("Smoke run: the evaluation stages write no checkpoints (pretraining does); an end-to-end ViT-B stage "
              "would write about 1 GB.")
        return None
    return None if parent is None else Path(parent)


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
    """The paper's two protocols for one task and input set; ``encoder`` is never changed (the probe reads it
    without gradients in eval mode and restores its mode; every trained model starts from a copy).

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
        # read without gradients, in eval mode (restored after); copied only to move it to another device
        on_device = next(encoder.parameters()).device == torch.device(device)
        frozen, was_training = (encoder if on_device else copy.deepcopy(encoder).to(device)), encoder.training
        encode = lambda batch: frozen.features(task_inputs(batch, task.band_order, modalities, cfg.img_size))  # noqa: E731
        try:
            frozen.eval()
            train_x, train_y, test_x, test_y = (
                *extract_features(encode, task.train, batch_size=cfg.finetune_batch_size, device=device,
                                  num_workers=cfg.num_workers),
                *extract_features(encode, task.test, batch_size=cfg.finetune_batch_size, device=device,
                                  num_workers=cfg.num_workers))
        finally:
            frozen.train(was_training)
        probe = cfg.stage(epochs=cfg.probe_epochs, batch_size=min(cfg.probe_batch_size, len(task.train)),
                          optimizer="sgd", lr=cfg.probe_lr, momentum=0.9, weight_decay=0.0, device=str(device))
        metrics = linear_probe(train_x, train_y, test_x, test_y, task.objective, probe,
                               standardize_features=cfg.probe_standardize, checkpoint_dir=stages(frozen_protocol))
    scores[frozen_protocol] = metrics[key]
    model = frozen = encode = None  # release the frozen protocol's copy before the end-to-end one is built
    gc.collect()
    model = task_model()
    metrics, _ = fine_tune(model, task.train, task.test, predict, task.objective, finetune,
                           checkpoint_dir=stages(e2e_protocol))
    scores[e2e_protocol] = metrics[key]
    return scores, model


def evaluate_downstream(encoder: MultiMAEEncoder, tasks: Sequence[DownstreamTask], cfg: MultiMAEConfig,
                        device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None,
                        keep_models: int | None = 1
                        ) -> tuple[dict[Cell, float], dict[tuple[str, str], tuple[MultiMAETaskModel, DownstreamTask]]]:
    """Every task x input set x protocol of the profile for one encoder.

    Returns ({(task, metric, input set, protocol): score in %}, the end-to-end segmentation models of the first
    ``keep_models`` (task, input set) pairs (None: all) for the figures, by (task, input set)); stages
    checkpoint into ``checkpoint_dir/<task>/<input set>/<protocol>``. Every other fine-tuned model is released
    as soon as it is scored: a ViT-B copy with its optimiser state is over 1 GB, and the ``full`` profile
    fine-tunes dozens.
    """
    scores, seg_models = {}, {}
    for task in tasks:
        for input_set in cfg.input_sets:
            result, model = evaluate_task(encoder, task, input_set, cfg, device,
                                          stage_dir(checkpoint_dir, task.name, input_set))
            scores.update({(task.name, task.metric, input_set, protocol): value for protocol, value in result.items()})
            if task.kind == "segmentation" and (keep_models is None or len(seg_models) < keep_models):
                seg_models[(task.name, input_set)] = (model, task)
            del model
            gc.collect()  # the fine-tuning loop's reference cycles hold the copies' tensors until collected
    return scores, seg_models


def random_init_evaluation(tasks: Sequence[DownstreamTask], cfg: MultiMAEConfig, device: torch.device | str = "cpu",
                           checkpoint_dir: str | os.PathLike | None = None
                           ) -> tuple[dict[Cell, float], list[dict[Cell, float]]]:
    """The baseline pretraining must beat: :func:`evaluate_downstream` of randomly initialised encoders, one per
    seed of ``cfg.random_init_seed_list``; returns the per-cell mean and each seed's scores."""
    def score(encoder: nn.Module, seed: int) -> dict[Cell, float]:
        return evaluate_downstream(encoder, tasks, cfg, device, stage_dir(checkpoint_dir, f"seed{seed}"),
                                   keep_models=0)[0]

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
