"""CromSS's data and evaluation recipe (Sec. IV-A, Tables II-V): the transfer of the pretrained encoders to three
segmentation tasks (DFC2020 with PSPNet, SSL4EO-S12@DW with DeepLabV3+, SSL4EO-S12@OSM with FPN) with frozen
and fine-tuned encoders, the paper's numbers beside this run's, and the analyses of the figures (selection
masks, weight drift, batch-norm statistics, PCA variance curves)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ... import analysis, augment
from ...data import chapter_dataset, ensure_sample_world, open_dataset, smoke_subset, whole_dataset
from ...data.bands import DFC_CLASSES, DW_CLASSES, IGNORE_INDEX, OSM_CLASSES
from ...evaluate import Task, fine_tune, seeded
from ...rng import as_random
from ...train import TrainResult, stage_dir
from ...weights import source_label
from .config import TRANSFER_TASKS, CromSSConfig
from .model import CromSS, build_module, drop_unused_stages, s1_unit_range, s2_band_index, selection_masks_of

METRICS = ("OA", "AA", "mIoU", "mF1")
#: The inputs of the transfer tables and the batch entry each reads.
INPUTS = {"S2": "s2", "S1": "s1"}
ENCODER_SETTINGS = ("frozen", "fine-tuned")


# --------------------------------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------------------------------
# Mean of 3 runs, in percent, keyed (inputs, weights, encoder) -> (OA, AA, mIoU, mF1): the task's table (II, III
# or IV) for random init and CromSS, and for the pretraining ablations it does not list, the task's columns of
# Table V (no mF1). Weights as the paper names them, "(9B)" for 9-band S2 inputs (S1 encoders come from 13-band
# pretraining). Where a row is in both tables, the task's own table is quoted (they differ in two cells: Table V
# has CromSS-lateF S2 on DFC2020 at 68.93 / 41.35 frozen and 68.37 / 41.83 fine-tuned, and CromSS-midF S2 on
# SSL4EO-S12@OSM fine-tuned at mIoU 51.11 where Table IV has 50.11).
#: DFC2020 with PSPNet: Tables II and V.
PAPER_DFC2020 = {
    ("S1", "random", "frozen"): (53.89, 40.65, 28.96, 38.74),
    ("S1", "random", "fine-tuned"): (52.03, 42.02, 28.02, 37.45),
    ("S1", "single-modal", "frozen"): (61.15, 46.14, 34.17, None),
    ("S1", "single-modal", "fine-tuned"): (59.91, 45.68, 33.46, None),
    ("S1", "midF", "frozen"): (60.00, 44.16, 33.29, None),
    ("S1", "midF", "fine-tuned"): (59.99, 45.69, 33.13, None),
    ("S1", "lateF", "frozen"): (61.52, 45.98, 34.12, None),
    ("S1", "lateF", "fine-tuned"): (61.06, 46.83, 33.66, None),
    ("S1", "CromSS-midF", "frozen"): (60.75, 45.66, 34.12, 44.47),
    ("S1", "CromSS-midF", "fine-tuned"): (60.07, 46.44, 33.48, 44.05),
    ("S1", "CromSS-lateF", "frozen"): (61.65, 44.80, 34.20, 44.14),
    ("S1", "CromSS-lateF", "fine-tuned"): (60.69, 45.75, 33.63, 43.86),
    ("S2", "random", "frozen"): (56.11, 44.63, 31.26, 41.89),
    ("S2", "random", "fine-tuned"): (58.83, 45.89, 33.63, 44.14),
    ("S2", "single-modal", "frozen"): (66.36, 52.52, 40.27, None),
    ("S2", "single-modal", "fine-tuned"): (67.47, 53.22, 41.15, None),
    ("S2", "midF", "frozen"): (68.57, 52.49, 41.31, None),
    ("S2", "midF", "fine-tuned"): (68.70, 52.94, 41.46, None),
    ("S2", "lateF", "frozen"): (68.88, 53.58, 41.30, None),
    ("S2", "lateF", "fine-tuned"): (68.42, 53.24, 41.40, None),
    ("S2", "CromSS-midF", "frozen"): (69.56, 54.61, 42.52, 54.12),
    ("S2", "CromSS-midF", "fine-tuned"): (70.41, 55.11, 43.21, 54.91),
    ("S2", "CromSS-lateF", "frozen"): (67.96, 52.62, 41.38, 53.25),
    ("S2", "CromSS-lateF", "fine-tuned"): (68.49, 53.19, 41.91, 53.59),
    ("S2", "random (9B)", "frozen"): (61.16, 46.76, 34.00, 44.76),
    ("S2", "random (9B)", "fine-tuned"): (63.63, 50.28, 36.57, 47.58),
    ("S2", "CromSS-midF (9B)", "frozen"): (66.00, 55.81, 40.31, 52.59),
    ("S2", "CromSS-midF (9B)", "fine-tuned"): (69.00, 57.07, 42.17, 54.02),
    ("S2", "CromSS-lateF (9B)", "frozen"): (68.95, 56.01, 41.69, 53.61),
    ("S2", "CromSS-lateF (9B)", "fine-tuned"): (68.82, 55.75, 41.51, 53.34),
}
#: SSL4EO-S12@DW with DeepLabV3+: Tables III and V.
PAPER_DW = {
    ("S1", "random", "frozen"): (56.84, 44.67, 29.85, 41.10),
    ("S1", "random", "fine-tuned"): (65.77, 54.98, 39.80, 53.04),
    ("S1", "single-modal", "frozen"): (65.80, 56.15, 39.98, None),
    ("S1", "single-modal", "fine-tuned"): (68.09, 59.88, 43.26, None),
    ("S1", "midF", "frozen"): (67.04, 54.73, 40.30, None),
    ("S1", "midF", "fine-tuned"): (67.89, 57.68, 42.39, None),
    ("S1", "lateF", "frozen"): (67.04, 56.51, 40.16, None),
    ("S1", "lateF", "fine-tuned"): (68.45, 61.10, 43.49, None),
    ("S1", "CromSS-midF", "frozen"): (66.25, 54.29, 39.63, 52.17),
    ("S1", "CromSS-midF", "fine-tuned"): (68.04, 59.75, 43.71, 57.21),
    ("S1", "CromSS-lateF", "frozen"): (66.03, 53.05, 39.63, 52.22),
    ("S1", "CromSS-lateF", "fine-tuned"): (69.00, 60.47, 44.00, 57.29),
    ("S2", "random", "frozen"): (64.80, 60.30, 46.21, 59.11),
    ("S2", "random", "fine-tuned"): (73.36, 68.58, 54.72, 67.76),
    ("S2", "single-modal", "frozen"): (78.46, 72.54, 59.30, None),
    ("S2", "single-modal", "fine-tuned"): (78.36, 72.37, 59.56, None),
    ("S2", "midF", "frozen"): (78.82, 73.28, 60.91, None),
    ("S2", "midF", "fine-tuned"): (78.60, 73.12, 60.32, None),
    ("S2", "lateF", "frozen"): (78.69, 72.93, 60.29, None),
    ("S2", "lateF", "fine-tuned"): (78.71, 73.80, 61.39, None),
    ("S2", "CromSS-midF", "frozen"): (78.60, 73.04, 60.56, 73.01),
    ("S2", "CromSS-midF", "fine-tuned"): (78.64, 73.16, 60.79, 73.20),
    ("S2", "CromSS-lateF", "frozen"): (78.48, 72.24, 60.50, 72.86),
    ("S2", "CromSS-lateF", "fine-tuned"): (79.33, 73.46, 61.10, 73.33),
    ("S2", "random (9B)", "frozen"): (66.79, 62.68, 48.22, 61.22),
    ("S2", "random (9B)", "fine-tuned"): (74.64, 70.91, 56.51, 69.56),
    ("S2", "CromSS-midF (9B)", "frozen"): (78.85, 73.77, 61.39, 73.79),
    ("S2", "CromSS-midF (9B)", "fine-tuned"): (79.19, 73.89, 61.12, 73.64),
    ("S2", "CromSS-lateF (9B)", "frozen"): (78.98, 73.39, 60.93, 73.37),
    ("S2", "CromSS-lateF (9B)", "fine-tuned"): (79.93, 74.03, 62.05, 74.18),
}
#: SSL4EO-S12@OSM with FPN: Tables IV and V.
PAPER_OSM = {
    ("S1", "random", "frozen"): (63.94, 57.75, 18.21, 24.76),
    ("S1", "random", "fine-tuned"): (66.44, 48.70, 24.01, 32.58),
    ("S1", "single-modal", "frozen"): (77.12, 49.04, 33.96, None),
    ("S1", "single-modal", "fine-tuned"): (78.30, 49.85, 36.20, None),
    ("S1", "midF", "frozen"): (77.21, 49.53, 34.10, None),
    ("S1", "midF", "fine-tuned"): (78.44, 51.94, 36.88, None),
    ("S1", "lateF", "frozen"): (77.33, 48.70, 34.54, None),
    ("S1", "lateF", "fine-tuned"): (78.18, 49.64, 36.01, None),
    ("S1", "CromSS-midF", "frozen"): (76.69, 48.11, 33.61, 43.83),
    ("S1", "CromSS-midF", "fine-tuned"): (77.72, 51.46, 36.15, 46.65),
    ("S1", "CromSS-lateF", "frozen"): (76.57, 47.89, 32.92, 42.80),
    ("S1", "CromSS-lateF", "fine-tuned"): (77.89, 48.53, 35.13, 45.04),
    ("S2", "random", "frozen"): (71.26, 60.68, 28.42, 36.72),
    ("S2", "random", "fine-tuned"): (68.77, 54.23, 27.64, 36.03),
    ("S2", "single-modal", "frozen"): (83.94, 64.87, 45.29, None),
    ("S2", "single-modal", "fine-tuned"): (83.72, 64.72, 46.68, None),
    ("S2", "midF", "frozen"): (84.05, 65.26, 47.37, None),
    ("S2", "midF", "fine-tuned"): (83.50, 63.98, 47.96, None),
    ("S2", "lateF", "frozen"): (84.73, 64.42, 47.62, None),
    ("S2", "lateF", "fine-tuned"): (84.43, 66.50, 48.89, None),
    ("S2", "CromSS-midF", "frozen"): (84.84, 65.99, 49.06, 60.28),
    ("S2", "CromSS-midF", "fine-tuned"): (86.04, 70.05, 50.11, 62.59),
    ("S2", "CromSS-lateF", "frozen"): (84.75, 66.63, 47.38, 58.49),
    ("S2", "CromSS-lateF", "fine-tuned"): (85.36, 65.84, 49.38, 60.67),
    ("S2", "random (9B)", "frozen"): (70.89, 60.04, 28.35, 36.71),
    ("S2", "random (9B)", "fine-tuned"): (67.38, 50.80, 27.98, 36.39),
    ("S2", "CromSS-midF (9B)", "frozen"): (83.98, 62.27, 46.58, 57.31),
    ("S2", "CromSS-midF (9B)", "fine-tuned"): (84.57, 64.01, 47.69, 58.76),
    ("S2", "CromSS-lateF (9B)", "frozen"): (83.64, 60.55, 45.72, 56.61),
    ("S2", "CromSS-lateF (9B)", "fine-tuned"): (85.25, 64.45, 49.38, 60.62),
}

# --------------------------------------------------------------------------------------------------
# The three tasks
# --------------------------------------------------------------------------------------------------
#: The authors' 8 DFC2020 classes (``get_args_finetune.py``, CLS_DICT[8]), in their order.
DFC2020_PAPER_CLASSES = ("water", "forest", "grassland", "wetland", "cropland", "shrubland", "urban / built-up",
                         "barren")
#: DFC2020 id (``DFC_CLASSES``, 0-based simplified IGBP) -> the authors' class (``write_data_to_lmdb.py``: DFC
#: values 1, 2, 4, 5, 6, 7, 9, 10 -> 1, 5, 2, 3, 4, 6, 7, 0); savanna and snow / ice, absent from DFC2020, -> -1.
DFC2020_TO_PAPER = (1, 5, IGNORE_INDEX, 2, 3, 4, 6, IGNORE_INDEX, 7, 0)
#: The DFC2020 ids of the 8 classes the paper evaluates (all but savanna and snow / ice).
DFC2020_EVAL_IDS = tuple(i for i, c in enumerate(DFC2020_TO_PAPER) if c >= 0)


class DownstreamTask(NamedTuple):
    """One transfer task of Sec. IV-A: its key, dataset name, table, decoder (smp architecture) and the paper's
    numbers (keyed as :data:`PAPER_DFC2020`)."""

    key: str
    name: str
    table: str
    arch: str
    paper: dict[tuple[str, str, str], tuple[float | None, ...]]


TASKS = {
    "dfc2020": DownstreamTask("dfc2020", "DFC2020", "Table II", "pspnet", PAPER_DFC2020),
    "dw": DownstreamTask("dw", "SSL4EO-S12@DW", "Table III", "deeplabv3plus", PAPER_DW),
    "osm": DownstreamTask("osm", "SSL4EO-S12@OSM", "Table IV", "fpn", PAPER_OSM),
}
assert tuple(TASKS) == TRANSFER_TASKS


class TaskSetup(NamedTuple):
    """What a profile trains for one task: the network (arch, encoder stages, decoder width), the head's classes
    and those the means run over, batch size and the training crop (0: none)."""

    task: DownstreamTask
    encoder_depth: int
    decoder_channels: int
    classes: tuple[str, ...]
    eval_classes: tuple[int, ...]
    batch_size: int
    crop_size: int


def task_setup(cfg: CromSSConfig, key: str) -> TaskSetup:
    """The profile's settings of transfer task ``key`` ("dfc2020", "dw" or "osm")."""
    if key not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {key!r}")
    task = TASKS[key]
    if key == "dfc2020":
        classes = DFC_CLASSES if cfg.dfc2020_classes == 10 else DFC2020_PAPER_CLASSES
        evaluated = DFC2020_EVAL_IDS if cfg.dfc2020_classes == 10 else tuple(range(len(classes)))
        return TaskSetup(task, cfg.pspnet_encoder_depth, cfg.pspnet_channels, classes, evaluated,
                         cfg.dfc2020_batch_size, 0)
    if key == "dw":
        return TaskSetup(task, cfg.encoder_depth, cfg.deeplab_channels, DW_CLASSES, tuple(range(len(DW_CLASSES))),
                         cfg.dw_batch_size, cfg.dw_crop_size)
    return TaskSetup(task, cfg.encoder_depth, cfg.fpn_channels, OSM_CLASSES, tuple(range(len(OSM_CLASSES))),
                     cfg.osm_batch_size, cfg.osm_crop_size)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def noisy_label_dataset(cfg: CromSSConfig) -> Dataset:
    """SSL4EO-S12@NoL: S1 + S2 L1C of all four seasons with the Dynamic World noisy masks. From a packed store
    the pretraining's batches carry the images of one random season per location only (``native_season``:
    the season the step trains on; the masks of all four for the temporal smoothing)."""
    return chapter_dataset(cfg, "SSL4EOS12", "SSL4EO-S12", modalities=("s1", "s2c"), seasons="all", dw_labels=True,
                           seed=cfg.seed, native_season="random")


def pretraining_summary(cfg: CromSSConfig, dataset: Dataset) -> str:
    """One line naming the pretraining set this run reads and its size as the reader counts it."""
    source = f"data_root {cfg.data_root}" if cfg.data_root else "the synthetic sample world"
    whole = len(whole_dataset(dataset))
    kept = f" (this smoke run keeps the first {len(dataset)})" if len(dataset) != whole else ""
    return (f"SSL4EO-S12@NoL ({source}): {whole} locations{kept}, four seasons of S1, S2 L1C and Dynamic World "
            f"masks each, tiles of {tile_size(dataset, 'dw')} px")


class Relabelled(Dataset):
    """``dataset`` with its ``label`` map passed through ``lut`` (class id -> new id; negative ids stay)."""

    def __init__(self, dataset: Any, lut: tuple[int, ...]):
        self.dataset, self.lut = dataset, torch.as_tensor(lut, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        label = torch.as_tensor(sample["label"])
        sample["label"] = torch.where(label >= 0, self.lut[label.clamp(min=0)], label)
        return sample


def downstream_datasets(cfg: CromSSConfig, task: str = "dfc2020") -> tuple[Dataset, Dataset]:
    """(training set, test set) of a transfer task (clean labels), read from ``<root>/DFC2020`` or
    ``<root>/NoLDO-S12`` (a smoke run keeps the first few samples of each).

    DFC2020 (Sec. IV-A): its validation set (986 patches in the paper) trains, its test set (5,128) tests;
    with ``dfc2020_classes=8`` the labels are the authors' 8 classes. SSL4EO-S12@DW / @OSM: the published
    ``{dw,osm}_train`` and ``{dw,osm}_test`` folders (S1 and S2 of each tile)."""
    if task == "dfc2020":
        train, test = (chapter_dataset(cfg, "DFC2020", "DFC2020", split=split) for split in ("train", "test"))
        if cfg.dfc2020_classes == 8:
            train, test = Relabelled(train, DFC2020_TO_PAPER), Relabelled(test, DFC2020_TO_PAPER)
        return train, test
    task_setup(cfg, task)  # refuses unknown names
    return tuple(chapter_dataset(cfg, "NoLDOS12", "NoLDO-S12", task=task, split=split)  # type: ignore[return-value]
                 for split in ("train", "test"))


def tile_size(dataset: Any, key: str = "label") -> int:
    """The side in px of the first sample's ``key`` map (the shorter side), read from the dataset."""
    return int(min(torch.as_tensor(dataset[0][key]).shape[-2:]))


def effective_crop(crop_size: int, tile: int) -> int:
    """The training crop a task gets: ``crop_size`` (0: none, the whole tile), at most the tile."""
    return min(crop_size, tile) if crop_size else tile


def split_summary(cfg: CromSSConfig, key: str, train: Dataset, test: Dataset) -> str:
    """One line naming the splits of task ``key`` this run reads, their sizes as the readers count them (and
    what a smoke run keeps), tile sides, the training crop and the classes."""
    setup = task_setup(cfg, key)
    source = f"data_root {cfg.data_root}" if cfg.data_root else "the synthetic sample world"
    splits = (("validation", "test") if key == "dfc2020" else (f"{key}_train", f"{key}_test"))
    unit = "patches" if key == "dfc2020" else "tiles"
    parts = []
    for split, data in zip(splits, (train, test)):
        whole = len(whole_dataset(data))
        kept = f" (this smoke run keeps the first {len(data)})" if len(data) != whole else ""
        parts.append(f"'{split}' {whole} {unit} of {tile_size(data)} px{kept}")
    tile = tile_size(train)
    if not setup.crop_size:
        crop_note = "whole training patches"
    elif setup.crop_size > tile:
        crop_note = f"whole training tiles (the profile's {setup.crop_size} px crops exceed the {tile} px tiles)"
    else:
        crop_note = f"random {setup.crop_size} px training crops"
    return (f"{setup.task.name} ({source}): {parts[0]} train, {parts[1]} test; {crop_note}; "
            f"{setup.task.arch}, {len(setup.classes)} output classes, the means over {len(setup.eval_classes)} "
            f"classes the paper evaluates (those present in the test labels)")


# --------------------------------------------------------------------------------------------------
# Pretrained networks and their names in the paper's tables
# --------------------------------------------------------------------------------------------------
def weights_name(cfg: CromSSConfig) -> str:
    """The paper's name of what a profile pretrains: CromSS-midF / CromSS-lateF (sample selection),
    midF / lateF (without, Table V) or single-modal."""
    if cfg.fusion == "single":
        return "single-modal"
    fusion = "midF" if cfg.fusion == "middle" else "lateF"
    return f"CromSS-{fusion}" if cfg.sample_selection else fusion


def single_modal_config(cfg: CromSSConfig) -> CromSSConfig:
    """The single-modal S2 baseline of Table V with the profile's other settings."""
    return dataclasses.replace(cfg, fusion="single", single_modality="s2")


# --------------------------------------------------------------------------------------------------
# Transfer to segmentation (Sec. IV-A)
# --------------------------------------------------------------------------------------------------
def build_segmentation_model(arch: str, in_channels: int, num_classes: int, encoder: str = "resnet50",
                             encoder_depth: int = 5, decoder_channels: int = 256,
                             encoder_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """An smp segmentation network whose encoder starts from ``encoder_state`` (None = random init).

    The pretrained encoder may have more stages than the network uses (PSPNet runs only the first
    ``encoder_depth``): the stages it uses are loaded, every one of them must be in ``encoder_state``."""
    import segmentation_models_pytorch as smp

    # PSPNet upsamples its 1/2^depth map by a fixed factor (smp default 8, right only for depth 3).
    archs = {"pspnet": dict(psp_out_channels=decoder_channels, upsampling=2 ** encoder_depth),
             "deeplabv3plus": dict(decoder_channels=decoder_channels),
             "fpn": dict(decoder_pyramid_channels=decoder_channels,
                         decoder_segmentation_channels=max(32, decoder_channels // 2),
                         upsampling=2 ** (encoder_depth - 3))}
    if arch not in archs:
        raise ValueError(f"arch: expected one of {sorted(archs)}, got {arch!r}")
    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, encoder_depth=encoder_depth,
                             in_channels=in_channels, classes=num_classes, **archs[arch])
    drop_unused_stages(model.encoder, encoder_depth)
    if encoder_state is not None:
        own = model.encoder.state_dict()
        missing = [k for k in own if k not in encoder_state]
        if missing:
            raise ValueError(f"encoder_state: lacks {len(missing)} entries of the {arch} encoder, e.g. {missing[:3]}")
        model.encoder.load_state_dict({k: encoder_state[k] for k in own})
    return model


class CrossEntropyDice(nn.Module):
    """The transfer loss of Sec. IV-A: cross-entropy + Dice over the labelled pixels (``ignore_index`` left out of
    both). The Dice term is segmentation-models-pytorch's multiclass ``DiceLoss``, as in the authors' code: per
    class over the batch, classes without a labelled pixel in the batch contribute 0, mean over classes."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.ignore_index = ignore_index
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # [B, K, H, W]
        if not (labels != self.ignore_index).any():  # nothing labelled: no signal (CE would be 0 / 0)
            return logits.sum() * 0.0
        return self.ce(logits, labels) + self.dice(logits, labels)


def transfer_augment(crop_size: int, flip_prob: float, rotate_prob: float) -> Callable[[dict, Any], dict]:
    """The training-batch augmentation of Sec. IV-A: a random ``crop_size`` crop (0 or the whole tile: none),
    a flip (p ``flip_prob``) and a 90/180/270-degree rotation (p ``rotate_prob``), drawn per sample from the
    step (``ctx``), the same for the images (``s1``, ``s2``) and the ``label`` map of a sample."""
    def augment_batch(batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        rng = as_random(ctx)
        keys = [k for k in INPUTS.values() if k in batch]
        label = batch["label"]
        stacked = torch.cat([*(batch[k].float() for k in keys), label.unsqueeze(1).float()], 1)  # [B, C+1, H, W]
        if crop_size and crop_size < min(stacked.shape[-2:]):
            stacked = augment.random_crop(stacked, crop_size, rng)
        stacked = augment.random_flip_rotate(stacked, flip_prob, rotate_prob, rng)
        parts = stacked.split([*(batch[k].shape[1] for k in keys), 1], 1)
        out = {**batch, **dict(zip(keys, parts))}
        out["label"] = parts[-1].squeeze(1).round().to(label.dtype)
        return out

    return augment_batch


def segmentation_predict(modality: str, bands: list[int] | None, stride: int,
                         update_frozen_bn: bool = False) -> Callable[[nn.Module, dict], torch.Tensor]:
    """``predict(net, batch) -> logits [B, K, H, W]`` of one modality: S1 scaled as the authors feed it
    (:func:`~.model.s1_unit_range`), S2 restricted to ``bands``, zero-padded at the bottom and right to a
    multiple of the network's output ``stride`` (smp refuses other sizes) and the logits cut back to H x W.

    With ``update_frozen_bn``, the encoder's batch-norm layers run in train mode while the network trains, so
    that a frozen encoder's running statistics follow the training data as in the authors' code."""
    def predict(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch[modality]
        x = s1_unit_range(x) if modality == "s1" else (x[:, bands] if bands is not None else x)
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % stride, -w % stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if update_frozen_bn and net.training:
            for m in net.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        return net(x)[..., :h, :w]

    return predict


class Transfer(NamedTuple):
    """One transfer run: test metrics (OA, AA, mIoU, mF1 in percent, and ``classes`` averaged), the trained
    network, its state before training (for the weight drift of Fig. 12) and the loop's record."""

    metrics: dict[str, float]
    model: nn.Module
    initial_state: dict[str, torch.Tensor]
    result: TrainResult


def transfer_to_segmentation(encoder_state: dict[str, torch.Tensor] | None, train_set: Dataset, test_set: Dataset,
                             cfg: CromSSConfig, *, task: str = "dfc2020", modality: str, frozen: bool, seed: int,
                             crop_size: int | None = None,
                             checkpoint_dir: str | os.PathLike | None = None) -> Transfer:
    """Train the task's network (PSPNet, DeepLabV3+ or FPN) on clean labels with a frozen or fine-tuned encoder
    (Sec. IV-A) and score it on ``test_set``.

    The network is built with torch seeded ``seed`` (:func:`eobook.evaluate.seeded`), so the encoder is random
    when ``encoder_state`` is None and the decoder starts alike for every encoder. Adam (``downstream_lr``,
    cosine to ``downstream_min_lr``, weight decay ``downstream_weight_decay``), cross-entropy + Dice without the
    unlabelled pixels, random crop (``crop_size``: the task's crop limited to the tiles when None), flip and
    rotation on the training batches; ``seed`` also orders the batches. With ``frozen`` the encoder's weights
    stay as pretrained (its batch-norm statistics too unless ``frozen_bn_update``). An epoch trains at most
    ``downstream_max_steps`` steps (0: the whole training set).
    """
    setup = task_setup(cfg, task)
    bands = list(s2_band_index(cfg)) if modality == "s2" else None
    in_channels = 2 if modality == "s1" else len(bands)
    model = seeded(lambda: build_segmentation_model(
        setup.task.arch, in_channels, len(setup.classes), cfg.encoder, setup.encoder_depth, setup.decoder_channels,
        encoder_state), seed)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    crop = effective_crop(setup.crop_size, tile_size(train_set)) if crop_size is None else crop_size
    predict = segmentation_predict(modality, bands, int(getattr(model.encoder, "output_stride", 1)),
                                   update_frozen_bn=frozen and cfg.frozen_bn_update)
    loop = cfg.stage(epochs=cfg.downstream_epochs, batch_size=setup.batch_size, optimizer="adam", lr=cfg.downstream_lr,
                     min_lr=cfg.downstream_min_lr, weight_decay=cfg.downstream_weight_decay, seed=seed,
                     max_steps_per_epoch=cfg.downstream_max_steps)
    scoring = Task("segmentation", len(setup.classes), ignore_index=IGNORE_INDEX,
                               eval_classes=setup.eval_classes)
    frozen_params = list(model.encoder.parameters()) if frozen else []
    metrics, result = fine_tune(model, train_set, test_set, predict, scoring, loop, frozen=frozen_params,
                                loss_fn=CrossEntropyDice(IGNORE_INDEX),
                                augment=transfer_augment(crop, cfg.downstream_flip_prob, cfg.downstream_rotate_prob),
                                checkpoint_dir=checkpoint_dir)
    return Transfer(metrics, model, initial_state, result)


def transfer_seeds(cfg: CromSSConfig) -> list[int]:
    """The seeds of each transfer setting: ``seed``, ``seed + 1``, ... (``downstream_seeds``); a smoke run, which
    only shows that every setting runs, trains each once."""
    return list(range(cfg.seed, cfg.seed + (1 if cfg.smoke else cfg.downstream_seeds)))


def downstream_evaluation(pretrained: dict[str, CromSS], train_set: Dataset, test_set: Dataset, cfg: CromSSConfig,
                          checkpoint_dir: str | os.PathLike | None = None, task: str = "dfc2020"
                          ) -> tuple[list[dict[str, object]], dict[str, Transfer]]:
    """One of Tables II-V on one task: every encoder (a random one, then ``pretrained`` {name: module}) on every
    input it has (S2, S1), frozen and fine-tuned, once per seed of :func:`transfer_seeds` (the random rows get
    one random encoder per seed).

    Each run checkpoints into ``checkpoint_dir/<inputs>-<weights>-<encoder>-seed<n>`` and resumes there.

    Returns:
        (rows {"task", "inputs", "weights", "encoder", OA, AA, mIoU, mF1 (means), "<metric>_std", "runs",
        "classes"}, and for the weight drift of Fig. 12 the last fine-tuned S2 run of each encoder
        {weights: Transfer}).
    """
    setup = task_setup(cfg, task)
    crop = effective_crop(setup.crop_size, tile_size(train_set))
    encoders: dict[str, CromSS | None] = {"random": None, **pretrained}
    rows, finetuned = [], {}
    seeds = transfer_seeds(cfg)
    for inputs, modality in INPUTS.items():
        for name, module in encoders.items():
            if module is not None and modality not in module.modalities:
                continue
            state = None if module is None else module.encoder(modality).state_dict()
            for setting in ENCODER_SETTINGS:
                runs = []
                for seed in seeds:
                    folder = stage_dir(checkpoint_dir, f"{inputs}-{name}-{setting}-seed{seed}")
                    runs.append(transfer_to_segmentation(state, train_set, test_set, cfg, task=task, modality=modality,
                                                         frozen=setting == "frozen", seed=seed, crop_size=crop,
                                                         checkpoint_dir=folder))
                if setting == "fine-tuned" and modality == "s2":
                    finetuned[name] = runs[-1]
                rows.append({"task": task, "inputs": inputs, "weights": name, "encoder": setting,
                             **{k: float(np.mean([r.metrics[k] for r in runs])) for k in METRICS},
                             **{f"{k}_std": float(np.std([r.metrics[k] for r in runs])) for k in METRICS},
                             "runs": len(runs), "classes": int(min(r.metrics["classes"] for r in runs))})
    return rows, finetuned


def miou_columns(rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """{weights: {"<inputs> <encoder>": mIoU}}, the columns :func:`eobook.evaluate.compare_to_baseline` compares."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out.setdefault(str(row["weights"]), {})[f"{row['inputs']} {row['encoder']}"] = float(row["mIoU"])
    return out


def paper_row(inputs: str, weights: str, encoder: str, s2_bands: int = 13,
              task: str = "dfc2020") -> tuple[float | None, ...]:
    """The paper's (OA, AA, mIoU, mF1) on a task for a row of this run (None where the paper has none)."""
    name = f"{weights} (9B)" if inputs == "S2" and s2_bands == 9 else weights
    return TASKS[task].paper.get((inputs, name, encoder), (None,) * len(METRICS))


def results_table(rows: list[dict[str, object]], cfg: CromSSConfig, task: str = "dfc2020"):
    """The task's table (II, III or IV; Table V for the ablations) beside this run: one row per (inputs,
    weights, encoder), "<metric> paper" beside "<metric> this run" (or "... authors' weights, this book's
    protocol" where the run evaluates a released file: :func:`eobook.weights.source_label`)."""
    import pandas as pd

    this_run = source_label(cfg.init)
    table = []
    for row in rows:
        ref = paper_row(str(row["inputs"]), str(row["weights"]), str(row["encoder"]), cfg.s2_bands, task)
        entry = {"inputs": row["inputs"], "weights": row["weights"], "encoder": row["encoder"]}
        for metric, value in zip(METRICS, ref):
            entry[f"{metric} paper"] = value
            entry[f"{metric} {this_run}"] = round(float(row[metric]), 2)
        table.append(entry)
    return pd.DataFrame(table)


# --------------------------------------------------------------------------------------------------
# Analyses of the figures
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def scene_selection_masks(module: CromSS, batch: dict[str, torch.Tensor], labels: torch.Tensor, alpha: float,
                          gamma: float, modality: str = "s2") -> dict[str, torch.Tensor]:
    """Fig. 11: the selection masks of ``modality`` from its own confidences F and the enhanced F' (eq. 10).

    Args:
        batch: one season's ``s1`` [B,2,H,W] and ``s2`` [B,13,H,W]; labels: noisy labels int [B,H,W]
            (the per-class thresholds of eq. 11 are taken over this batch).
    Returns:
        {"W_l from F", "W_l from F'", "W_e from F", "W_e from F'"}: [B, H, W] each.
    """
    module.eval()
    p = {m: module.predict(module.inputs(batch, m), m).float().softmax(1) for m in ("s1", "s2")}
    own = selection_masks_of(p, labels, alpha, gamma, module.num_classes, enhance=False)
    enhanced = selection_masks_of(p, labels, alpha, gamma, module.num_classes, enhance=True)
    return {"W_l from F": own[0][modality], "W_l from F'": enhanced[0][modality],
            "W_e from F": own[1][modality], "W_e from F'": enhanced[1][modality]}


def weight_drift(finetuned: dict[str, Transfer]) -> dict[str, dict[str, float]]:
    """Fig. 12: KL(before || after) of the 100-bin weight histograms of the encoder and of the decoder of each
    fine-tuned network ({weights: {"encoder": kl, "decoder": kl}})."""
    def weights(state: dict[str, torch.Tensor], part: str) -> list[torch.Tensor]:
        return [v for k, v in state.items() if k.startswith(part) and v.is_floating_point()]

    return {name: {part: analysis.weight_kl_divergence(weights(run.initial_state, part),
                                                       weights(run.model.state_dict(), part))
                   for part in ("encoder", "decoder")} for name, run in finetuned.items()}


def batchnorm_statistics_kl(multimodal: CromSS, single_modal: CromSS, modality: str = "s2") -> dict[str, float]:
    """Fig. 8 (c, d): KL of the batch-norm feature statistics of one modality's encoder and decoder between
    multimodal and single-modal pretraining ({"encoder": kl, "decoder": kl})."""
    a, b = multimodal.unets[modality], single_modal.unets[modality]
    return {part: analysis.batchnorm_kl_divergence(getattr(a, part), getattr(b, part))
            for part in ("encoder", "decoder")}


def pca_subset(dataset: Dataset, cfg: CromSSConfig) -> Dataset:
    """At most ``pca_images`` samples of ``dataset`` (a seeded choice, in order), in a smoke run its first few."""
    n = len(dataset)
    if n > cfg.pca_images:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.pca_images, replace=False))
        dataset = Subset(dataset, keep.tolist())
    return smoke_subset(dataset, cfg)


def eurosat_images(cfg: CromSSConfig) -> tuple[Dataset, str]:
    """Fig. 13's image-level set: EuroSAT-MS (all splits) from ``<data_root>/EuroSAT-MS``, or the sample world's
    when the data root has none; at most ``pca_images`` images. Returns (dataset, a line saying which)."""
    if cfg.data_root and (Path(cfg.data_root) / "EuroSAT-MS").is_dir():
        data = chapter_dataset(cfg, "EuroSATMS", "EuroSAT-MS", split=None)
        source = f"EuroSAT-MS of data_root {cfg.data_root}"
    else:
        root = ensure_sample_world(cfg.world_size, cfg.world_seed) / "EuroSAT-MS"
        data = smoke_subset(open_dataset("EuroSATMS", root, cfg.cache_data and not cfg.smoke, split=None), cfg)
        source = ("the sample world's synthetic EuroSAT-MS (data_root has no EuroSAT-MS)" if cfg.data_root
                  else "the sample world's synthetic EuroSAT-MS")
    picked = pca_subset(data, cfg)
    return picked, f"Fig. 13 image level: {len(picked)} of {len(whole_dataset(data))} images of {source}"


def dw_test_images(cfg: CromSSConfig) -> tuple[Dataset, str]:
    """Fig. 13's pixel-level set: the SSL4EO-S12@DW test tiles (S2 only), at most ``pca_images``."""
    data = chapter_dataset(cfg, "NoLDOS12", "NoLDO-S12", task="dw", split="test", modalities=("s2",))
    picked = pca_subset(data, cfg)
    return picked, (f"Fig. 13 pixel level: {len(picked)} of {len(whole_dataset(data))} SSL4EO-S12@DW test tiles, "
                    f"{cfg.pca_pixels_per_image} pixels each")


@torch.no_grad()
def encoder_module_features(encoder: nn.Module, images: torch.Tensor | Dataset, level: str, pixels_per_image: int = 64,
                            seed: int = 0, bands: list[int] | None = None, batch_size: int = 16,
                            device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Fig. 13 inputs: feature sets [N, C_k] (image level) or [N * pixels_per_image, C_k] (pixel level) of
    ResNet modules 1..depth, computed ``batch_size`` images at a time (a tensor [N, C, H, W] or a dataset of
    ``{"s2": [13, H, W]}`` samples, S2 restricted to ``bands``), so only the pooled features are kept."""
    if device is not None:
        encoder.to(device)
    device = next(encoder.parameters()).device
    encoder.eval()
    generator = torch.Generator().manual_seed(seed)
    batches = (images.split(batch_size) if isinstance(images, torch.Tensor)
               else (b["s2"] for b in DataLoader(images, batch_size=batch_size, shuffle=False)))
    parts: list[list[torch.Tensor]] = []
    for x in batches:
        x = x[:, bands] if bands is not None and x.shape[1] != len(bands) else x
        maps = encoder(x.to(device).float())[1:]  # smp returns the input first, then one map per module
        parts.append([f.cpu() for f in analysis.pooled_features(maps, level, pixels_per_image, generator)])
    return [torch.cat(module) for module in zip(*parts)]


def variance_curves(encoders: dict[str, nn.Module], images: torch.Tensor | Dataset, level: str, cfg: CromSSConfig,
                    device: torch.device | str | None = None) -> dict[str, list[np.ndarray]]:
    """Fig. 13: the accumulated variance ratio of each module's features, per encoder ({name: [curve per module]})."""
    bands = list(s2_band_index(cfg))
    return {name: [analysis.accumulated_variance_ratio(f) for f in encoder_module_features(
                enc, images, level, cfg.pca_pixels_per_image, seed=cfg.seed, bands=bands, device=device)]
            for name, enc in encoders.items()}


def random_s2_encoder(cfg: CromSSConfig) -> nn.Module:
    """A randomly initialised S2 encoder of the profile's U-Net (seeded ``cfg.seed``), the reference of Fig. 13."""
    single = dataclasses.replace(single_modal_config(cfg), device="cpu")
    return seeded(lambda: build_module(single), cfg.seed).encoder("s2")
