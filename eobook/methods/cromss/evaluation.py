"""CromSS's data and evaluation recipe (Sec. IV-A, Tables II and V): the transfer of the pretrained encoders
to DFC2020 segmentation with frozen and fine-tuned encoders, the paper's numbers beside this run's, and the
analyses of the figures (selection masks, weight drift, batch-norm statistics, PCA variance curves)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ... import analysis
from ...data import chapter_dataset, dataset_root, ensure_sample_world, open_dataset
from ...data.bands import IGNORE_INDEX
from ...evaluate import Task, fine_tune, seeded
from ...train import TrainResult, stage_dir
from .config import CromSSConfig
from .model import CromSS, build_module, drop_unused_stages, s2_band_index, selection_masks_of

METRICS = ("OA", "AA", "mIoU", "mF1")
#: The inputs of the transfer tables and the batch entry each reads.
INPUTS = {"S2": "s2", "S1": "s1"}
ENCODER_SETTINGS = ("frozen", "fine-tuned")
#: DFC2020 with PSPNet and ResNet-50 encoders, mean of 3 runs, in percent: Table II (OA, AA, mIoU, mF1) and,
#: for the pretraining ablations it does not list, Table V (no mF1). Keys (inputs, weights, encoder); weights
#: as the paper names them, "(9B)" for 9-band S2 inputs (S1 encoders come from 13-band pretraining).
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


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def noisy_label_dataset(cfg: CromSSConfig) -> Dataset:
    """SSL4EO-S12@NoL: S1 + S2 L1C of all four seasons with the Dynamic World noisy masks."""
    return chapter_dataset(cfg, "SSL4EOS12", "SSL4EO-S12", modalities=("s1", "s2c"), seasons="all", dw_labels=True,
                           seed=cfg.seed)


def downstream_datasets(cfg: CromSSConfig) -> tuple[Dataset, Dataset]:
    """DFC2020 (Table II): fine-tune on its validation split, test on its test split (clean labels).

    ``cfg.downstream_root`` is the DFC2020 folder; "" = the one under ``data_root`` (or the sample world's)."""
    root = Path(cfg.downstream_root) if cfg.downstream_root else dataset_root(cfg, "DFC2020")
    train, test = (open_dataset("DFC2020", root, cfg.cache_data, split=split) for split in ("train", "test"))
    return train, test


def s2_images(dataset: Dataset, cfg: CromSSConfig) -> torch.Tensor:
    """The S2 input bands of every sample of ``dataset`` (a season-less reader): [N, 13 or 9, H, W]."""
    return torch.stack([dataset[i]["s2"] for i in range(len(dataset))])[:, list(s2_band_index(cfg))]


def eurosat_images(cfg: CromSSConfig) -> torch.Tensor:
    """The sample world's EuroSAT-MS with the profile's S2 bands, for the image-level curves of Fig. 13
    (always the sample world's, also in runs on real data: the book reads no real EuroSAT for CromSS)."""
    root = ensure_sample_world(cfg.world_size, cfg.world_seed)
    return s2_images(open_dataset("EuroSATMS", root / "EuroSAT-MS"), cfg)


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
# Transfer to segmentation (Sec. IV-A): PSPNet (DFC2020), DeepLabV3+ (SSL4EO-S12@DW), FPN (@OSM)
# --------------------------------------------------------------------------------------------------
def build_segmentation_model(arch: str, in_channels: int, num_classes: int, encoder: str = "resnet50",
                             encoder_depth: int = 5, decoder_channels: int = 256,
                             encoder_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """An smp segmentation network whose encoder starts from ``encoder_state`` (None = random init)."""
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
        model.encoder.load_state_dict(encoder_state)
    return model


class Transfer(NamedTuple):
    """One transfer run: test metrics (OA, AA, mIoU, mF1 in percent), the trained network, its state before
    training (for the weight drift of Fig. 12) and the loop's record (history, resumed_from)."""

    metrics: dict[str, float]
    model: nn.Module
    initial_state: dict[str, torch.Tensor]
    result: TrainResult


def transfer_to_segmentation(encoder_state: dict[str, torch.Tensor] | None, train_set: Dataset, test_set: Dataset,
                             cfg: CromSSConfig, *, modality: str, frozen: bool, seed: int,
                             checkpoint_dir: str | os.PathLike | None = None) -> Transfer:
    """Train the profile's downstream network on clean labels with a frozen or fine-tuned encoder (Sec. IV-A).

    The network is built with torch seeded ``seed`` (:func:`eobook.evaluate.seeded`), so the encoder is
    random when ``encoder_state`` is None and the decoder starts alike for every encoder. Adam, lr
    ``downstream_lr`` cosine to 0, no weight decay, cross-entropy without the unlabelled pixels
    (``IGNORE_INDEX``); ``seed`` also orders the batches and seeds the decoders' dropout. With ``frozen``
    the encoder's weights and its batch-norm statistics stay as pretrained.
    """
    bands = list(s2_band_index(cfg)) if modality == "s2" else None
    model = seeded(lambda: build_segmentation_model(
        cfg.downstream_arch, 2 if modality == "s1" else len(bands), cfg.downstream_classes, cfg.encoder,
        cfg.encoder_depth, cfg.downstream_decoder_channels, encoder_state), seed)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def predict(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch[modality]                                  # [B, C_m, H, W]
        return net(x[:, bands] if bands is not None else x)  # logits [B, K, H, W]

    loop = cfg.stage(epochs=cfg.downstream_epochs, batch_size=cfg.downstream_batch_size, optimizer="adam",
                     lr=cfg.downstream_lr, weight_decay=0.0, seed=seed)
    task = Task("segmentation", cfg.downstream_classes, ignore_index=IGNORE_INDEX)
    frozen_params = list(model.encoder.parameters()) if frozen else []
    metrics, result = fine_tune(model, train_set, test_set, predict, task, loop, frozen=frozen_params,
                                checkpoint_dir=checkpoint_dir)
    return Transfer(metrics, model, initial_state, result)


def downstream_evaluation(pretrained: dict[str, CromSS], train_set: Dataset, test_set: Dataset, cfg: CromSSConfig,
                          checkpoint_dir: str | os.PathLike | None = None
                          ) -> tuple[list[dict[str, object]], dict[str, Transfer]]:
    """Tables II / V on one dataset: every encoder (a random one, then ``pretrained`` {name: module}) on
    every input it has (S2, S1), frozen and fine-tuned, ``downstream_seeds`` runs each (seeds ``cfg.seed``,
    ``cfg.seed + 1``, ...; the random rows get one random encoder per seed).

    Each run checkpoints into ``checkpoint_dir/<inputs>-<weights>-<encoder>-seed<n>`` and resumes there.

    Returns:
        (rows {"inputs", "weights", "encoder", OA, AA, mIoU, mF1 (means), "<metric>_std"}, and for the
        weight drift of Fig. 12 the last fine-tuned S2 run of each encoder {weights: Transfer}).
    """
    encoders: dict[str, CromSS | None] = {"random": None, **pretrained}
    rows, finetuned = [], {}
    for inputs, modality in INPUTS.items():
        for name, module in encoders.items():
            if module is not None and modality not in module.modalities:
                continue
            state = None if module is None else module.encoder(modality).state_dict()
            for setting in ENCODER_SETTINGS:
                runs = []
                for seed in range(cfg.seed, cfg.seed + cfg.downstream_seeds):
                    folder = stage_dir(checkpoint_dir, f"{inputs}-{name}-{setting}-seed{seed}")
                    runs.append(transfer_to_segmentation(state, train_set, test_set, cfg, modality=modality,
                                                         frozen=setting == "frozen", seed=seed, checkpoint_dir=folder))
                if setting == "fine-tuned" and modality == "s2":
                    finetuned[name] = runs[-1]
                rows.append({"inputs": inputs, "weights": name, "encoder": setting,
                             **{k: float(np.mean([r.metrics[k] for r in runs])) for k in METRICS},
                             **{f"{k}_std": float(np.std([r.metrics[k] for r in runs])) for k in METRICS}})
    return rows, finetuned


def miou_columns(rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """{weights: {"<inputs> <encoder>": mIoU}}, the columns :func:`eobook.evaluate.compare_to_baseline` compares."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out.setdefault(str(row["weights"]), {})[f"{row['inputs']} {row['encoder']}"] = float(row["mIoU"])
    return out


def paper_row(inputs: str, weights: str, encoder: str, s2_bands: int = 13) -> tuple[float | None, ...]:
    """The paper's (OA, AA, mIoU, mF1) on DFC2020 for a row of this run (None where the paper has none)."""
    name = f"{weights} (9B)" if inputs == "S2" and s2_bands == 9 else weights
    return PAPER_DFC2020.get((inputs, name, encoder), (None,) * len(METRICS))


def results_table(rows: list[dict[str, object]], cfg: CromSSConfig):
    """Tables II / V layout: one row per (inputs, weights, encoder), "<metric> paper" beside "<metric> this run"."""
    import pandas as pd

    table = []
    for row in rows:
        ref = paper_row(str(row["inputs"]), str(row["weights"]), str(row["encoder"]), cfg.s2_bands)
        entry = {"inputs": row["inputs"], "weights": row["weights"], "encoder": row["encoder"]}
        for metric, value in zip(METRICS, ref):
            entry[f"{metric} paper"] = value
            entry[f"{metric} this run"] = round(float(row[metric]), 2)
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


@torch.no_grad()
def encoder_module_features(encoder: nn.Module, images: torch.Tensor, level: str, pixels_per_image: int = 64,
                            seed: int = 0) -> list[torch.Tensor]:
    """Fig. 13 inputs: feature sets [N, C_k] of ResNet modules 1..depth (image- or pixel-level)."""
    encoder.eval()
    maps = encoder(images)[1:]  # smp returns the input first, then one map per module
    return analysis.pooled_features(maps, level, pixels_per_image, torch.Generator().manual_seed(seed))


def variance_curves(encoders: dict[str, nn.Module], images: torch.Tensor, level: str,
                    cfg: CromSSConfig) -> dict[str, list[np.ndarray]]:
    """Fig. 13: the accumulated variance ratio of each module's features, per encoder ({name: [curve per module]})."""
    return {name: [analysis.accumulated_variance_ratio(f) for f in encoder_module_features(
                enc.cpu(), images, level, cfg.pca_pixels_per_image, seed=cfg.seed)]
            for name, enc in encoders.items()}


def random_s2_encoder(cfg: CromSSConfig) -> nn.Module:
    """A randomly initialised S2 encoder of the profile's U-Net (seeded ``cfg.seed``), the reference of Fig. 13."""
    single = dataclasses.replace(single_modal_config(cfg), device="cpu")
    return seeded(lambda: build_module(single), cfg.seed).encoder("s2")
