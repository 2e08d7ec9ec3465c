"""The five papers' objectives (and a supervised one) on the chapter's one backbone.

Each objective is its paper's own pretraining module from ``eobook.methods.<paper>``, built around the shared
backbone (:mod:`.backbone`) instead of the network it builds for its chapter; nothing of an objective is
written again here. What this module adds is the batch each paper module expects (:func:`paper_batch`) and the
objective's own settings: those of its chapter's profile of the same name (``tiny``, ``small`` or ``full``),
with counts of epochs rescaled to this chapter's epochs and sizes to its image size (:func:`paper_settings`,
:func:`dino_settings`, :func:`visible_tokens`).

==============  ============================================  ==========================================
objective       paper module (what it trains the backbone as)  labels
==============  ============================================  ==========================================
dino_mm         ``dino_mm.DINOMM``: student and EMA teacher     none
fus_mae         ``fus_mae.FusMAE`` (XAD): encoder of the MAE    none
multimae_eo     ``multimae_eo.MultiMAE``: encoder, S2 + S1     none
softcon         ``softcon.SoftCon``: both Siamese branches     9-class multi-labels (Dynamic World)
cromss          ``cromss.CromSS``: encoder of both segmenters  noisy Dynamic World masks, 4 seasons
supervised      a linear multi-label head (this chapter)       9-class multi-labels (Dynamic World)
==============  ============================================  ==========================================
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ChapterConfig
from ...data import chapter_dataset
from ...train import StepContext
from .. import cromss, dino_mm, fus_mae, multimae_eo, softcon
from .backbone import (SENSORS, SegmentationDecoder, SensorSegmenter, StackedInput, TokenEncoder, build_backbone,
                       image_features, split_sensors)
from .config import OBJECTIVES, SideBySideConfig

#: What each objective learns from besides the images (the results table's "labels" column).
LABELS = {"dino_mm": "none", "fus_mae": "none", "multimae_eo": "none",
          "softcon": "multi-labels (9 DW classes per image)", "cromss": "noisy DW masks (per pixel, 4 seasons)",
          "supervised": "multi-labels (9 DW classes per image)"}
#: The chapters whose profiles give each paper objective its settings.
CHAPTER_OF = {"dino_mm": dino_mm.CHAPTER, "fus_mae": fus_mae.CHAPTER, "multimae_eo": multimae_eo.CHAPTER,
              "softcon": softcon.CHAPTER, "cromss": cromss.CHAPTER}
#: Dynamic World classes (SoftCon's multi-labels and CromSS's masks).
DW_CLASSES = 9


def sensor_batch(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A reader's ``s2`` (12 L2A bands in [0, 1]) and ``s1`` (VV, VH standardised dB) -> the backbone's inputs
    ``{"s2", "s1"}``: S1 clipped to +/- 2 std, scaled to [0, 1] and ordered (VH, VV), as DINO-MM stacks it."""
    return split_sensors(dino_mm.stack_sensors(batch["s2"], batch["s1"]))


def paper_batch(objective: str, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch the paper module of ``objective`` reads, from an SSL4EO-S12 batch (s2, s1, labels).

    DINO-MM stacks the sensors itself; SoftCon reads the stacked 14 channels under ``"x14"``; the MAEs read
    the backbone's inputs; CromSS reads the readers' S1 (it scales it itself) and keeps its seasons and masks.
    """
    if objective in ("dino_mm", "cromss"):
        return batch
    if objective == "softcon":
        return {"x14": dino_mm.stack_sensors(batch["s2"], batch["s1"]), "multilabel": batch["multilabel"]}
    if objective in ("fus_mae", "multimae_eo"):
        return sensor_batch(batch)
    raise ValueError(f"objective: expected one of {OBJECTIVES[:-1]}, got {objective!r}")


def scaled_epochs(value: float, cfg: ChapterConfig, paper_cfg: ChapterConfig) -> float:
    """A count of epochs of the paper chapter's profile (a warm-up, a ramp) rescaled to this chapter's epochs."""
    return value * cfg.epochs / paper_cfg.epochs


def patch_multiple(size: float, patch: int) -> int:
    """``size`` rounded to the nearest multiple of ``patch`` (at least one patch)."""
    return max(patch, int(round(size / patch)) * patch)


def paper_settings(objective: str, cfg: SideBySideConfig) -> ChapterConfig:
    """The profile of ``objective``'s chapter with the name of ``cfg``'s (``tiny``, ``small``, ``full``): the
    settings of the paper's objective (temperatures, mask ratios, heads, crops) at that scale."""
    return CHAPTER_OF[objective].profiles[cfg.profile or "tiny"]


def dino_settings(cfg: SideBySideConfig) -> ChapterConfig:
    """DINO-MM's profile shaped for the shared backbone (its module reads its config whole): the backbone's
    width and image size, global crops of the whole image and local crops in the paper's proportion, this
    chapter's epochs, the teacher-temperature warm-up, frozen-last-layer and augmentation warm-up rescaled."""
    paper = paper_settings("dino_mm", cfg)
    local = patch_multiple(cfg.img_size * paper.local_crop_size / paper.global_crop_size, cfg.patch_size)
    rescale = lambda value: round(scaled_epochs(value, cfg, paper))  # noqa: E731
    return dataclasses.replace(
        paper, epochs=cfg.epochs, seed=cfg.seed, warmup_epochs=min(paper.warmup_epochs, cfg.epochs),
        embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, img_size=cfg.img_size,
        patch_size=cfg.patch_size, global_crop_size=cfg.img_size, local_crop_size=local, eval_crop_size=cfg.img_size,
        warmup_teacher_temp_epochs=rescale(paper.warmup_teacher_temp_epochs),
        # DINO freezes the head's last layer in the first epoch at least, however short the training
        freeze_last_layer_epochs=max(1, rescale(paper.freeze_last_layer_epochs)) if paper.freeze_last_layer_epochs else 0,
        augmentation_warmup_epochs=rescale(paper.augmentation_warmup_epochs))


def visible_tokens(cfg: SideBySideConfig) -> int:
    """MultiMAE's visible tokens for both sensors, the same share of all tokens as its chapter's profile shows
    its encoder (e.g. 98 of 6 x 49): at most one sensor's tokens, as MultiMAE requires."""
    paper = paper_settings("multimae_eo", cfg)
    share = paper.num_visible / (len(multimae_eo.MODALITIES) * (paper.img_size // paper.patch_size) ** 2)
    per_sensor = (cfg.img_size // cfg.patch_size) ** 2
    return max(1, min(per_sensor, round(share * len(SENSORS) * per_sensor)))


def paper_module(objective: str, cfg: SideBySideConfig, encoder: fus_mae.FusMAEEncoder,
                 tile: int | None = None) -> nn.Module:
    """The paper's pretraining module of ``objective`` built around ``encoder`` (which it trains in place);
    ``tile``: the side of the pretraining images, which bounds CromSS's random crop (whole tiles where they are
    smaller than the backbone's input, as in its chapter; the segmenter resizes them)."""
    if objective == "dino_mm":
        # the teacher's backbone is a second one: DINOMM loads the student's state into it
        backbones = iter([encoder, build_backbone(cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth,
                                                  cfg.num_heads)])
        return dino_mm.DINOMM(dino_settings(cfg), backbone=lambda rate: StackedInput(next(backbones)))
    s = paper_settings(objective, cfg)
    if objective == "fus_mae":
        return fus_mae.FusMAE(variant="XAD", masking=s.masking, mask_ratio=s.mask_ratio, norm_pix_loss=s.norm_pix_loss,
                              decoder_dim=s.decoder_dim, decoder_depth=s.decoder_depth, decoder_heads=s.decoder_heads,
                              num_heads=cfg.num_heads, mlp_ratio=s.mlp_ratio, encoder=encoder)
    if objective == "multimae_eo":
        return multimae_eo.MultiMAE(num_visible=visible_tokens(cfg), dirichlet_alpha=s.dirichlet_alpha,
                                    decoder_dim=s.decoder_dim, decoder_depth=s.decoder_depth,
                                    decoder_heads=s.decoder_heads, hflip_p=s.hflip_p, encoder=TokenEncoder(encoder),
                                    modalities=dict(SENSORS))
    if objective == "softcon":
        return softcon.SoftCon(StackedInput(encoder), input_key="x14", proj_hidden=s.proj_hidden, proj_dim=s.proj_dim,
                               pred_hidden=s.pred_hidden, temperature=s.temperature, lam=s.lam,
                               momentum=s.momentum_start, mask_ratio=s.mask_ratio, img_size=cfg.img_size,
                               crop_scale=s.crop_scale, jitter=s.jitter)
    if objective == "cromss":
        decoder = SegmentationDecoder(cfg.embed_dim, DW_CLASSES, cfg.patch_size, cfg.decoder_dim)
        return cromss.CromSS(fusion="late", sample_selection=s.sample_selection, s2_band_index=tuple(range(12)),
                             num_classes=DW_CLASSES, alpha_0=s.alpha_0,
                             rampup_epochs=scaled_epochs(s.rampup_epochs, cfg, s), beta=s.beta, mu=s.mu,
                             sigma=s.smoothing_sigma, crop_size=min(cfg.img_size, tile or cfg.img_size),
                             flip_prob=s.flip_prob,
                             rotate_prob=s.rotate_prob,
                             networks={m: SensorSegmenter(encoder, decoder, m) for m in ("s1", "s2")})
    raise ValueError(f"objective: expected one of {OBJECTIVES[:-1]}, got {objective!r}")


class SupervisedMultiLabel(nn.Module):
    """The supervised baseline: the backbone and a linear head on its image features, trained on the same images
    with the 9-class Dynamic World multi-labels (binary cross-entropy; images without a label are left out)."""

    def __init__(self, encoder: fus_mae.FusMAEEncoder, num_classes: int = DW_CLASSES):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(2 * encoder.embed_dim, num_classes)

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        images = fus_mae.resize_to_input(sensor_batch(batch), self.encoder.img_size)
        logits = self.head(image_features(self.encoder, images))
        labelled = batch["has_multilabel"].float()
        per_image = F.binary_cross_entropy_with_logits(logits, batch["multilabel"].float(), reduction="none").mean(1)
        return {"loss": (per_image * labelled).sum() / labelled.sum().clamp_min(1)}


class Objective(nn.Module):
    """One objective on the shared backbone: ``forward(batch, ctx)`` hands the paper module its batch; the
    loop's hooks (DINO's frozen last layer, the EMA updates) reach the paper module.

    Attributes:
        name: the objective (``OBJECTIVES``).
        method: the paper's pretraining module (or the supervised one), which holds ``backbone``.
        backbone: the shared encoder, the part every objective is evaluated by.
    """

    def __init__(self, name: str, method: nn.Module, backbone: fus_mae.FusMAEEncoder):
        super().__init__()
        self.name, self.method = name, method
        self._backbone = [backbone]  # a reference, not a second registration of the same parameters

    @property
    def backbone(self) -> fus_mae.FusMAEEncoder:
        return self._backbone[0]

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        return self.method(batch if self.name == "supervised" else paper_batch(self.name, batch), ctx)

    def on_after_backward(self, ctx: StepContext) -> None:
        self._hook("on_after_backward", ctx)

    def on_step_end(self, ctx: StepContext) -> None:
        self._hook("on_step_end", ctx)

    def _hook(self, name: str, ctx: StepContext) -> None:
        hook: Callable | None = getattr(self.method, name, None)
        if hook is not None:
            hook(ctx)


def new_backbone(cfg: SideBySideConfig) -> fus_mae.FusMAEEncoder:
    """The backbone every objective of seed ``cfg.seed`` starts from: the same weights for all of them."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return build_backbone(cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads)


def build_objective(cfg: SideBySideConfig, objective: str | None = None, tile: int | None = None) -> Objective:
    """``objective`` (default ``cfg.objective``) around a fresh backbone of seed ``cfg.seed``; the objective's
    own parts are drawn from a generator seeded with the seed and the objective's place. ``tile``: see
    :func:`paper_module`."""
    objective = objective or cfg.objective
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}")
    backbone = new_backbone(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(1000 * cfg.seed + OBJECTIVES.index(objective))
        method = (SupervisedMultiLabel(backbone) if objective == "supervised"
                  else paper_module(objective, cfg, backbone, tile))
    return Objective(objective, method, backbone)


def pretraining_dataset(cfg: SideBySideConfig, objective: str | None = None):
    """SSL4EO-S12 (S2 L2A, S1; one random season per location and epoch) with the labels the objective uses:
    CromSS reads all four seasons and their Dynamic World masks (its temporal smoothing needs them)."""
    objective = objective or cfg.objective
    if objective == "cromss":
        return chapter_dataset(cfg, "SSL4EOS12", "SSL4EO-S12", modalities=("s2a", "s1"), seasons="all",
                               dw_labels=True, seed=cfg.seed, native_season="random")
    return chapter_dataset(cfg, "SSL4EOS12", "SSL4EO-S12", modalities=("s2a", "s1"), seasons="random",
                           multilabels=True, seed=cfg.seed)


def tile_size(dataset) -> int:
    """The side (px) of a pretraining dataset's images."""
    return int(dataset[0]["s2"].shape[-1])
