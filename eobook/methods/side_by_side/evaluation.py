"""One evaluation for every encoder, the cost of each objective, and the chapter's tables.

Every backbone (five objectives, the supervised baseline, random init) is frozen and read through the same three
tasks, each with S1, S2 and both sensors where the dataset has them:

* **BigEarthNet-MM**, 19-class multi-label: a linear probe on image features, micro mAP (%).
* **EuroSAT-MS**, 10 scenes: a linear probe on image features, overall accuracy (%); S2 only (EuroSAT has no S1).
* **DFC2020**, 10-class land cover per pixel: the chapter's segmentation decoder trained on the frozen patch
  tokens, mIoU (%) over the 8 classes DFC2020's test set has (CromSS's evaluation classes).

Image features are the global token and the mean patch token, concatenated and standardised with the training
set's statistics (:func:`~.backbone.image_features`). Images are resized to the backbone's input side.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...data import chapter_dataset
from ...data.bands import S2_L1C_BANDS
from ...evaluate import (Task, TensorBatches, extract_features, linear_probe, predict_and_score,
                         train_supervised)
from ...evaluate.baselines import seeded
from ...train import fit
from ...weights import gpu_minutes
from .. import dino_mm
from ..fus_mae import resize_to_input
from ..cromss.evaluation import DFC2020_EVAL_IDS
from .backbone import INPUTS, SegmentationDecoder, image_features, patch_grid, split_sensors
from .config import OBJECTIVES, SideBySideConfig
from .objectives import LABELS, build_objective, pretraining_dataset

#: Columns of the evaluation: (task, input).
TASKS = {"bigearthnet": ("BigEarthNet mAP", ("S1", "S2", "S1+S2")), "eurosat": ("EuroSAT OA", ("S2",)),
         "dfc2020": ("DFC2020 mIoU", ("S1", "S2", "S1+S2"))}
COLUMNS = tuple((task, inputs) for task, (_, all_inputs) in TASKS.items() for inputs in all_inputs)
#: The rows of the results, in the table's order.
ENCODERS = (*OBJECTIVES, "random init")
#: L1C's B10 (cirrus) is not among the backbone's 12 bands (BigEarthNet's L2A bands).
_L1C_TO_12 = [i for i, band in enumerate(S2_L1C_BANDS) if band != "B10"]

Scores = dict[tuple[str, str], float]


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def eval_datasets(cfg: SideBySideConfig) -> dict[str, tuple[Dataset, Dataset]]:
    """(train, test) of each task, native size; the DFC2020 train split is its validation set (CromSS's)."""
    splits = ("train", "test")
    return {"bigearthnet": tuple(chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split=s) for s in splits),
            "eurosat": tuple(chapter_dataset(cfg, "EuroSATMS", "EuroSAT-MS", split=s) for s in splits),
            "dfc2020": tuple(chapter_dataset(cfg, "DFC2020", "DFC2020", split=s) for s in splits)}


def data_summary(cfg: SideBySideConfig, pretraining: Dataset, evaluation: dict[str, tuple[Dataset, Dataset]]) -> str:
    """What the run reads, one line per dataset with its sizes."""
    lines = [f"pretraining: SSL4EO-S12, {len(pretraining)} locations (S2 L2A, S1, Dynamic World labels), "
             f"{cfg.epochs} epochs for every objective"]
    lines += [f"{TASKS[k][0].split()[0]}: {len(train)} train / {len(test)} test"
              for k, (train, test) in evaluation.items()]
    return "\n".join(lines)


def backbone_inputs(batch: dict[str, Any], inputs: str, size: int) -> dict[str, torch.Tensor]:
    """The sensors ``inputs`` ("S1", "S2", "S1+S2") of an evaluation batch in the backbone's convention, at
    ``size`` px: S2 as its 12 bands (an L1C batch loses B10), S1 scaled to [0, 1] as (VH, VV)."""
    s2 = batch["s2"]
    if s2.shape[1] == len(S2_L1C_BANDS):
        s2 = s2[:, _L1C_TO_12]
    s1 = batch.get("s1")
    if s1 is None:
        if inputs != "S2":
            raise ValueError(f"inputs: {inputs!r} needs S1, which this dataset does not have")
        s1 = s2.new_zeros(s2.shape[0], 2, *s2.shape[2:])
    images = split_sensors(dino_mm.stack_sensors(s2, s1))
    return resize_to_input({m: images[m] for m in INPUTS[inputs]}, size)


# --------------------------------------------------------------------------------------------------
# The three tasks
# --------------------------------------------------------------------------------------------------
def probe_loop(cfg: SideBySideConfig, seed: int, device: str, **settings: Any):
    return cfg.stage(seed=seed, device=device, optimizer="adamw", **settings)


@torch.no_grad()
def features(encoder: nn.Module, dataset: Dataset, inputs: str, cfg: SideBySideConfig, device: str,
             dense: bool = False):
    """Frozen features of ``dataset`` through ``inputs``: image features [N, 2D] or, ``dense``, patch features
    [N, D, g, g]; and the labels."""
    encoder = encoder.to(device).eval()
    read = patch_grid if dense else image_features
    return extract_features(lambda b: read(encoder, backbone_inputs(b, inputs, cfg.img_size)).flatten(1), dataset,
                            device=device, batch_size=64)


def classification_score(encoder: nn.Module, task: str, data: tuple[Dataset, Dataset], inputs: str,
                         cfg: SideBySideConfig, seed: int, device: str) -> float:
    """BigEarthNet micro mAP or EuroSAT OA (%) of a linear probe on the frozen, standardised image features."""
    (train_x, train_y), (test_x, test_y) = (features(encoder, d, inputs, cfg, device) for d in data)
    kind = Task("multilabel", train_y.shape[1]) if task == "bigearthnet" else Task("multiclass", 10)
    loop = probe_loop(cfg, seed, device, epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, lr=cfg.probe_lr)
    scores = linear_probe(train_x, train_y, test_x, test_y, kind, loop, standardize_features=True)
    return scores["mAP_micro"] if task == "bigearthnet" else scores["OA"]


def segmentation_score(encoder: nn.Module, data: tuple[Dataset, Dataset], inputs: str, cfg: SideBySideConfig, seed: int,
                       device: str, return_decoder: bool = False):
    """DFC2020 mIoU (%) of the chapter's decoder trained on the frozen patch tokens (cached once)."""
    grid = cfg.img_size // cfg.patch_size
    sets = []
    for d in data:
        x, y = features(encoder, d, inputs, cfg, device, dense=True)
        sets.append(TensorBatches(x=x.view(len(x), -1, grid, grid), label=y))
    task = Task("segmentation", 10, ignore_index=-1, eval_classes=DFC2020_EVAL_IDS)
    decoder = seeded(lambda: SegmentationDecoder(cfg.embed_dim, 10, cfg.patch_size, cfg.decoder_dim), seed).to(device)

    def predict(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = net(batch["x"])
        return F.interpolate(logits, size=batch["label"].shape[-2:], mode="bilinear", align_corners=False)

    loop = probe_loop(cfg, seed, device, epochs=cfg.seg_epochs, batch_size=cfg.seg_batch_size, lr=cfg.seg_lr)
    train_supervised(decoder, sets[0], predict, task, loop, collate_fn=TensorBatches.collate)
    miou = predict_and_score(decoder, sets[1], predict, task, batch_size=cfg.seg_batch_size, device=device,
                             collate_fn=TensorBatches.collate)["mIoU"]
    return (miou, decoder) if return_decoder else miou


def evaluate_encoder(encoder: nn.Module, data: dict[str, tuple[Dataset, Dataset]], cfg: SideBySideConfig, seed: int,
                     device: str = "cpu") -> Scores:
    """Every column of the evaluation for one frozen backbone: {(task, inputs): score in %}."""
    scores = {}
    for task, inputs in COLUMNS:
        if task == "dfc2020":
            scores[task, inputs] = segmentation_score(encoder, data[task], inputs, cfg, seed, device)
        else:
            scores[task, inputs] = classification_score(encoder, task, data[task], inputs, cfg, seed, device)
    return scores


# --------------------------------------------------------------------------------------------------
# Cost of one pretraining step, from the run itself
# --------------------------------------------------------------------------------------------------
def step_cost(cfg: SideBySideConfig, objective: str, batch_size: int = 4, size: int | None = None) -> dict[str, float]:
    """What one pretraining step of ``objective`` costs per sample: one step of the book's loop (``fit``) on
    ``batch_size`` pretraining samples, with the images resized to ``size`` px when given (the ``full`` cost at
    SSL4EO-S12's 264 px, counted on the sample world):

    * ``gflops_per_sample``: forward and backward, counted by torch's FlopCounterMode (a multiply-add is 2);
    * ``memory_mb``: the step's memory for a batch of 256: weights (frozen copies included), gradients and AdamW's
      two moments of the trained weights, and the activations saved for the backward pass (each storage once,
      measured at ``batch_size`` and scaled to 256), which is what a GPU's peak holds besides the workspace.
    """
    from torch.utils.flop_counter import FlopCounterMode

    dataset = pretraining_dataset(cfg, objective)
    samples = [dataset[i] for i in range(min(batch_size, len(dataset)))]
    if size is not None:
        samples = [resized_sample(sample, size) for sample in samples]
    module = build_objective(cfg, objective, tile=samples[0]["s2"].shape[-1])
    weights = {p.data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    loop = cfg.stage(epochs=1, batch_size=len(samples), lr=cfg.lr, smoke=False, checkpoint_every=0)
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        fit(module, samples, loop, log=lambda _: None, desc=f"{objective} step")
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    trained_bytes = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    activations = sum(saved.values()) / len(samples) * 256
    return {"gflops_per_sample": counter.get_total_flops() / len(samples) / 1e9,
            "memory_mb": (weight_bytes + 3 * trained_bytes + activations) / 2**20}


def resized_sample(sample: dict[str, Any], size: int) -> dict[str, Any]:
    """A pretraining sample with its images (antialiased bilinear) and Dynamic World masks (nearest) at ``size``
    px; the leading axes (seasons) kept."""
    out = dict(sample)
    for key in ("s2", "s1"):
        x = sample[key]
        out[key] = resize_to_input({key: x.reshape(-1, *x.shape[-3:])}, size)[key].view(*x.shape[:-2], size, size)
    if "dw" in sample:
        dw = sample["dw"]
        out["dw"] = F.interpolate(dw.reshape(-1, 1, *dw.shape[-2:]).float(), size=(size, size),
                                  mode="nearest-exact").long().view(*dw.shape[:-2], size, size)
    return out


def pretraining_gpu_hours(gflops_per_sample: float, samples: int, epochs: int, **gpu: Any) -> float:
    """GPU-hours of a pretraining run: the step's FLOPs (forward and backward) for every sample seen over the
    GPU's sustained rate (:func:`eobook.weights.gpu_minutes`: an H100's dense bf16 peak at 35% unless told)."""
    return gpu_minutes(gflops_per_sample, samples * epochs, **gpu) / 60


# --------------------------------------------------------------------------------------------------
# Tables and the verdict
# --------------------------------------------------------------------------------------------------
def mean_and_spread(runs: list[Scores]) -> tuple[Scores, Scores]:
    """Per column, the mean over seeds and the spread (max - min)."""
    cols = runs[0].keys()
    mean = {c: float(np.mean([r[c] for r in runs])) for c in cols}
    spread = {c: float(np.max([r[c] for r in runs]) - np.min([r[c] for r in runs])) for c in cols}
    return mean, spread


def results_table(results: dict[str, list[Scores]]):
    """Mean (and the seeds' range) of every column for every encoder: a pandas DataFrame, one row per encoder,
    with the labels each used."""
    import pandas as pd

    rows = {}
    for name in (e for e in ENCODERS if e in results):
        mean, spread = mean_and_spread(results[name])
        row = {column_name((t, i)): f"{mean[t, i]:.1f} ± {spread[t, i] / 2:.1f}" for t, i in COLUMNS}
        row["labels"] = LABELS.get(name, "none")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def cost_table(costs: dict[str, dict[str, float]], samples: int, epochs: int):
    """Per objective (``costs``: :func:`step_cost` and ``seconds_per_epoch``): GFLOP per sample of a step, the
    TFLOP of one seed's pretraining of ``samples`` x ``epochs``, wall time per epoch of this run, the step's
    memory at batch 256, and the labels it needs."""
    import pandas as pd

    rows = {name: {"GFLOP / sample (step)": c["gflops_per_sample"],
                   "TFLOP / seed (pretraining)": c["gflops_per_sample"] * samples * epochs / 1e3,
                   "s / epoch (this run)": c["seconds_per_epoch"], "memory MB (batch 256)": c["memory_mb"],
                   "labels": LABELS[name]} for name, c in costs.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def mean_over_objectives(results: dict[str, list[Scores]]) -> Scores:
    """Per column, the mean over the five papers' objectives (each the mean of its seeds)."""
    means = [mean_and_spread(results[o])[0] for o in OBJECTIVES[:-1] if o in results]
    return {c: float(np.mean([m[c] for m in means])) for c in COLUMNS}


def column_name(column: tuple[str, str]) -> str:
    """("bigearthnet", "S1") -> "BigEarthNet mAP (S1)", the results table's column."""
    task, inputs = column
    return f"{TASKS[task][0]} ({inputs})"


def named_columns(scores: Scores) -> dict[str, float]:
    """Scores keyed by their table columns' names (what :func:`eobook.evaluate.compare_to_baseline` prints)."""
    return {column_name(c): v for c, v in scores.items()}
