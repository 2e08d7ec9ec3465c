"""SoftCon's labels, losses, backbones, continual-pretraining initialisation and pretraining module.

What the authors did not publish is chosen here, stated, and tested (see :mod:`.config` for the values):

* **Label similarity** (Fig. 3c): cosine similarity of two multi-label vectors, in [0, 1]; for one-hot
  labels it is 1 for the same class and 0 otherwise, so SoftCon covers SupCon (Fig. 3b).
* **Soft contrastive term**: the N x M similarity of the two batches' l2-normalised embeddings, divided
  by a temperature tau, is trained toward the label-similarity matrix with a multi-positive soft
  cross-entropy whose targets are the label similarities normalised per row.
* **Total loss** (Fig. 4): ``lambda * InfoNCE + (1 - lambda) * soft``; both are cross-entropies over the
  same logits, so the sum equals one soft cross-entropy toward ``lambda * I + (1 - lambda) * P``
  (:func:`mixed_target`). Default lambda = 0.5 (equal weight; the chapter ablates it).
* **Framework** (Fig. 4): MoCo v3 (Chen et al., 2021): base encoder + projector + predictor, a momentum
  encoder + projector updated by EMA, symmetric loss over the two views, keys gathered over DDP ranks.
* **Siamese masking** (ViT only): a random ``mask_ratio`` of the trainable branch's patches is dropped
  and only the visible ones are encoded; the momentum branch sees its whole view.
* **Continual pretraining**: RGB weights of a vision foundation model (DINOv2 ViT-S/14, ViT-B/14; the authors'
  ResNet-50 started from DINO's, timm's hub offers a supervised one) initialise both branches; the 13-band
  (or 2-band SAR) patch embedding is built by :func:`adapt_patch_embed` (mean RGB filter per band, scaled by
  3 / in_chans). A smoke run downloads nothing (:func:`start_weights`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ... import augment
from ...evaluate import seeded
from ...masking import random_keep_indices
from ...nn import create_vit, encode_visible, last_blocks_cls
from ...rng import GeneratorRandom, Random, as_random
from ...train import StepContext, ema_momentum, ema_update
from .config import ARCHS, SoftConConfig

#: Input channels per pretraining modality: 13-band S2 L1C or 2-band S1 (VV, VH).
MODALITY_CHANNELS = {"s2c": 13, "s1": 2}


# --------------------------------------------------------------------------------------------------
# Labels (Fig. 2 / Fig. 3c)
# --------------------------------------------------------------------------------------------------
def build_multilabels_from_dw(dw: torch.Tensor, threshold: float = 0.05, num_classes: int = 9,
                              ignore_index: int = -1) -> torch.Tensor:
    """SSL4EO-S12-ML multi-labels from Dynamic World masks (Fig. 2): a class is present when it covers at
    least ``threshold`` of the labelled pixels.

    The authors' threshold is not published; 0.05 (5% of a scene) is the book's choice, the same rule
    the sample world uses to write its ``ssl4eo_s12_ml.json``.

    Args:
        dw: class maps [..., H, W] with ids 0..num_classes-1 and ``ignore_index`` for no data.
        threshold: minimum fraction of labelled pixels, in (0, 1].
    Returns:
        float32 multi-hot [..., num_classes]; all zero where a mask has no labelled pixel.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: expected a fraction in (0, 1], got {threshold}")
    valid = dw != ignore_index
    if ((dw[valid] < 0) | (dw[valid] >= num_classes)).any():
        raise ValueError(f"dw: class ids must lie in 0..{num_classes - 1} or be {ignore_index} (no data)")
    one_hot = F.one_hot(dw.clamp_min(0).long(), num_classes) * valid.unsqueeze(-1)       # [..., H, W, C]
    counts = one_hot.flatten(-3, -2).sum(-2).float()                                     # [..., C]
    fractions = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    return ((fractions >= threshold) & (counts > 0)).float()


def multilabels_to_json(ids: list[str], labels: torch.Tensor) -> dict[str, dict[str, list[str]]]:
    """The authors' JSON layout ``{location_id: {season_id: ["0", "4", ...]}}`` (empty list = no label).

    Args:
        ids: location ids, one per row of ``labels``.
        labels: multi-hot [N, T, C] (T seasons).
    """
    if labels.ndim != 3 or len(ids) != labels.shape[0]:
        raise ValueError(f"labels: expected [N={len(ids)}, T, C], got {tuple(labels.shape)}")
    return {loc: {str(t): [str(c) for c in torch.nonzero(row).flatten().tolist()]
                  for t, row in enumerate(per_season)} for loc, per_season in zip(ids, labels)}


def write_multilabels_json(path: str | os.PathLike, ids: list[str], labels: torch.Tensor) -> Path:
    """Write :func:`multilabels_to_json` to ``path`` (read back by ``eobook.data.SSL4EOS12``)."""
    path = Path(path)
    path.write_text(json.dumps(multilabels_to_json(ids, labels)))
    return path


def label_similarity(y1: torch.Tensor, y2: torch.Tensor, allow_empty: bool = False) -> torch.Tensor:
    """Cosine similarity of multi-label vectors, the soft targets of Fig. 3c.

    Args:
        y1: [N, C] multi-hot vectors or class fractions (non-negative).
        y2: [M, C] likewise.
        allow_empty: accept all-zero label vectors (unlabelled scenes); their rows/columns are 0, and
            :func:`soft_contrastive_loss` leaves them out.
    Returns:
        [N, M] similarities in [0, 1]; identical label sets give 1, disjoint ones 0, and one-hot labels
        give 1 for the same class, else 0.
    """
    for name, y in (("y1", y1), ("y2", y2)):
        if y.ndim != 2:
            raise ValueError(f"{name}: expected label vectors [N, C], got shape {tuple(y.shape)}")
        if not torch.isfinite(y).all() or (y < 0).any():
            raise ValueError(f"{name}: expected finite non-negative label values")
        empty = (y.sum(1) == 0).nonzero().flatten()
        if len(empty) and not allow_empty:
            raise ValueError(f"{name}: rows {empty.tolist()[:5]} have no label; pass allow_empty=True to leave them out")
    if y1.shape[1] != y2.shape[1]:
        raise ValueError(f"y1 has {y1.shape[1]} classes but y2 has {y2.shape[1]}")
    y1, y2 = F.normalize(y1.float(), dim=1), F.normalize(y2.float(), dim=1)  # zero rows stay zero
    return (y1 @ y2.T).clamp(0.0, 1.0)


def soft_target_entropy(label_sim: torch.Tensor) -> torch.Tensor:
    """How much the soft term can teach on a batch: the entropy of each row's soft target
    ``P_i = s_i / sum_j s_ij`` divided by ``log M`` (M = keys with a label), averaged over labelled rows.

    0 means one positive per anchor (InfoNCE's identity target); 1 means uniform targets, which ask every
    pair of scenes to be equally similar and so carry no information about which scenes belong together.
    One-hot labels of K balanced classes give ``log(M / K) / log M``.

    Args:
        label_sim: [N, M] label similarities (:func:`label_similarity`), non-negative.
    Returns:
        a scalar in [0, 1] (0 where no row has a label).
    """
    if label_sim.ndim != 2 or label_sim.shape[1] < 2 or (label_sim < 0).any():
        raise ValueError(f"label_sim: expected non-negative similarities [N, M] with M >= 2, "
                         f"got {tuple(label_sim.shape)}")
    rows = label_sim.sum(1) > 0
    keys = int((label_sim.sum(0) > 0).sum())
    if not rows.any() or keys < 2:
        return label_sim.new_zeros(())
    p = label_sim[rows] / label_sim[rows].sum(1, keepdim=True)                # [N', M] rows sum to 1
    entropy = -torch.where(p > 0, p * p.clamp_min(1e-30).log(), torch.zeros_like(p)).sum(1)
    return (entropy / torch.log(torch.tensor(float(keys)))).mean()


def label_order(y: torch.Tensor) -> torch.Tensor:
    """Indices that sort scenes [N, C] by their label set (lexicographically, class 0 first), so that
    scenes with equal labels sit together in the similarity-matrix figures."""
    weights = 2 ** torch.arange(y.shape[1] - 1, -1, -1, device=y.device)
    return torch.argsort(-((y > 0).long() @ weights), stable=True)


# --------------------------------------------------------------------------------------------------
# Losses (Fig. 4)
# --------------------------------------------------------------------------------------------------
def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_j P_ij log softmax(logits_i)_j`` with ``P_ij = targets_ij / sum_j targets_ij``.

    Rows whose targets sum to zero are left out (0 if none is left). Minimal, at ``entropy(P_i)``,
    where ``softmax(logits_i) = P_i``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    mass = targets.sum(1)
    rows = mass > 0
    if not rows.any():
        return logits.sum() * 0.0
    p = targets[rows] / mass[rows, None]                                     # [N', M] rows sum to 1
    log_q = F.log_softmax(logits[rows].float(), dim=1)
    return -torch.where(p > 0, p * log_q, torch.zeros_like(log_q)).sum(1).mean()  # 0 * log 0 := 0


def embedding_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarities of l2-normalised embeddings over ``temperature``: [N, D] x [M, D] -> [N, M]."""
    if z1.ndim != 2 or z2.ndim != 2 or z1.shape[1] != z2.shape[1]:
        raise ValueError(f"z1, z2: expected embeddings [N, D] and [M, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a value > 0, got {temperature}")
    return F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / temperature


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """InfoNCE (Oord et al., 2018; MoCo v3): row i of ``z1`` has its one positive at row ``offset + i``
    of ``z2`` (``offset`` = this rank's place in the gathered keys), i.e. identity targets."""
    logits = embedding_logits(z1, z2, temperature)
    labels = torch.arange(len(z1), device=z1.device) + offset
    return F.cross_entropy(logits.float(), labels)


def soft_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor,
                          temperature: float, allow_empty: bool = False) -> torch.Tensor:
    """SoftCon's soft term: the embedding similarity matrix trained toward the label similarity matrix.

    ``L_soft = mean_i -sum_j P_ij log softmax_j(cos(z1_i, z2_j) / tau)``, ``P_ij = s_ij / sum_k s_ik``,
    ``s = label_similarity(y1, y2)``. With one-hot labels this is supervised contrastive learning
    (Khosla et al., 2020, L_out) with the other view's batch as contrast set. Unlabelled anchors
    (``allow_empty``) are left out; unlabelled keys are masked out of the softmax (neither positive
    nor negative).

    Args:
        z1: [N, D] anchors (predictor outputs); z2: [M, D] keys (momentum branch, gathered over ranks).
        y1: [N, C], y2: [M, C] multi-label vectors of the same scenes.
        temperature: tau.
    """
    if len(z1) != len(y1) or len(z2) != len(y2):
        raise ValueError(f"embeddings and labels differ in length: z1 {len(z1)}, y1 {len(y1)}, z2 {len(z2)}, y2 {len(y2)}")
    targets = label_similarity(y1, y2, allow_empty)                           # [N, M]
    logits = embedding_logits(z1, z2, temperature)
    logits = logits.masked_fill((y2.sum(1) == 0)[None, :], float("-inf"))
    return soft_target_cross_entropy(logits, targets)


def softcon_loss(z1: torch.Tensor, z2: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor, temperature: float,
                 lam: float = 0.5, offset: int = 0, allow_empty: bool = False) -> dict[str, torch.Tensor]:
    """``lambda * InfoNCE + (1 - lambda) * L_soft`` (Fig. 4): toward the identity and toward the label
    similarities. Returns ``{"loss", "nce", "soft"}``."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam: expected lambda in [0, 1], got {lam}")
    nce = info_nce(z1, z2, temperature, offset)
    soft = soft_contrastive_loss(z1, z2, y1, y2, temperature, allow_empty)
    return {"loss": lam * nce + (1.0 - lam) * soft, "nce": nce, "soft": soft}


def mixed_target(label_sim: torch.Tensor, lam: float) -> torch.Tensor:
    """The one soft target of the lambda mixture: ``lambda I + (1 - lambda) P`` [N, N], where ``P`` is the
    label similarity ``label_sim`` [N, N] normalised per row (a row without a label keeps ``lambda I``).

    When anchors and keys are the same N labelled scenes, ``soft_target_cross_entropy(logits,
    mixed_target(s, lam))`` equals ``softcon_loss(...)["loss"]``: InfoNCE and the soft term are
    cross-entropies over the same logits, so their weighted sum is one cross-entropy.
    """
    if label_sim.ndim != 2 or label_sim.shape[0] != label_sim.shape[1]:
        raise ValueError(f"label_sim: expected a square matrix [N, N], got {tuple(label_sim.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam: expected lambda in [0, 1], got {lam}")
    p = label_sim / label_sim.sum(1, keepdim=True).clamp_min(1e-12)          # [N, N] rows sum to 1 (or 0)
    return lam * torch.eye(len(label_sim), dtype=p.dtype, device=p.device) + (1.0 - lam) * p


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All rows of ``x`` from every DDP rank (the local part keeps its gradient) and this rank's offset.

    Without a process group: ``(x, 0)``.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x, 0
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    parts[rank] = x
    return torch.cat(parts), rank * len(x)


# --------------------------------------------------------------------------------------------------
# Backbones and continual pretraining from vision foundation models
# --------------------------------------------------------------------------------------------------
def adapt_patch_embed(weight_rgb: torch.Tensor, in_chans: int) -> torch.Tensor:
    """The first-layer kernel for ``in_chans`` bands from an RGB kernel: every band gets the mean of
    the three RGB filters, scaled by ``3 / in_chans``.

    Rule: for a grey input (all bands equal) the response equals the RGB model's response to a grey
    image of the same value, so the first activations keep their scale; the bands start symmetric and
    are told apart by training (no band-to-RGB alignment is assumed: SAR has none).

    Args:
        weight_rgb: [D, 3, kh, kw] (ViT patch embedding or ResNet ``conv1``).
    Returns:
        [D, in_chans, kh, kw].
    """
    if weight_rgb.ndim != 4 or weight_rgb.shape[1] != 3:
        raise ValueError(f"weight_rgb: expected an RGB kernel [D, 3, kh, kw], got {tuple(weight_rgb.shape)}")
    if in_chans < 1:
        raise ValueError(f"in_chans: expected >= 1, got {in_chans}")
    mean = weight_rgb.mean(dim=1, keepdim=True)                              # [D, 1, kh, kw]
    return mean.repeat(1, in_chans, 1, 1) * (3.0 / in_chans)


class Backbone(nn.Module):
    """A ViT (CLS token) or ResNet-50 (global average pool) returning one feature vector per image.

    ``forward(x, keep)`` encodes only the patches ``keep`` [B, K] of a ViT (Siamese masking).
    """

    def __init__(self, arch: str, in_chans: int, img_size: int, patch_size: int = 14, vit_dim: int = 384,
                 vit_depth: int = 12, vit_heads: int = 6):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
        self.arch, self.in_chans, self.img_size = arch, in_chans, img_size
        if arch == "vit":
            self.net = create_vit("small", in_chans=in_chans, img_size=img_size, patch_size=patch_size,
                                  depth=vit_depth, embed_dim=vit_dim, num_heads=vit_heads)
        elif arch == "resnet50":
            self.net = timm.create_model("resnet50", pretrained=False, in_chans=in_chans, num_classes=0)
        else:  # DINOv2: LayerScale init 1e-5 comes with timm's definition
            self.net = timm.create_model(arch, pretrained=False, in_chans=in_chans, img_size=img_size,
                                         num_classes=0, dynamic_img_size=True)
        self.embed_dim = self.net.num_features

    @property
    def is_vit(self) -> bool:
        return self.arch != "resnet50"

    @property
    def num_patches(self) -> int:
        return self.net.patch_embed.num_patches if self.is_vit else 0

    @property
    def patch_size(self) -> int:
        return self.net.patch_embed.patch_size[0] if self.is_vit else 0

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"x: expected [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if not self.is_vit:
            return self.net(x)                                               # [B, 2048]
        return encode_visible(self.net, x, keep)[:, 0]                       # CLS [B, D]

    def features(self, x: torch.Tensor, last_blocks: int = 1) -> torch.Tensor:
        """Evaluation features of images resized to ``img_size``: the CLS token (or the concatenated
        CLS tokens of the last ``last_blocks`` blocks, as for the authors' ViT-B), or ResNet's pool."""
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        if self.is_vit and last_blocks > 1:
            return last_blocks_cls(self.net, x, last_blocks)
        return self(x)


#: What ``weights="hub"`` loads per architecture: timm's default pretrained tag and what it is. The paper
#: continued the ViTs from DINOv2 (the same weights) and ResNet-50 from DINO's self-supervised ResNet-50,
#: which timm's hub does not have (see ``DEVIATIONS["weights"]``).
HUB_WEIGHTS = {
    "vit_small_patch14_dinov2": "DINOv2 ViT-S/14 (LVD-142M), as the paper",
    "vit_base_patch14_dinov2": "DINOv2 ViT-B/14 (LVD-142M), as the paper",
    "resnet50": "timm's supervised ImageNet-1k ResNet-50 (a1_in1k); the paper started from DINO's ResNet-50",
}


def hub_weights_file(arch: str) -> str | None:
    """The local file of timm's pretrained ``arch`` weights in the Hugging Face cache, or None when it has
    not been downloaded (nothing is fetched here)."""
    pretrained = timm.models.get_pretrained_cfg(arch)                      # None for names timm lacks ("vit")
    if pretrained is None or not pretrained.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(pretrained.hf_hub_id, filename)
        if isinstance(path, str):
            return path
    return None


def start_weights(cfg: SoftConConfig) -> tuple[SoftConConfig, str]:
    """The weights both branches start from, and one line that says which.

    A smoke run downloads nothing: with ``weights="hub"`` it reads timm's file from the local Hugging Face
    cache when it is there, and otherwise starts from **random weights of the same architecture** (the
    returned config has ``weights=""``; the line says so). Every other run returns ``cfg`` unchanged.

    Returns:
        ``(cfg to build the networks with, the line)``.
    Raises:
        FileNotFoundError: ``weights`` names a local file that does not exist.
    """
    shape = f"{cfg.arch}, {MODALITY_CHANNELS[cfg.modality]} bands, {cfg.img_size} px"
    if not cfg.weights:
        return cfg, f"start weights: random ({shape}; weights=''), no foundation model"
    if cfg.weights != "hub":
        if not Path(cfg.weights).is_file():
            raise FileNotFoundError(f"weights: {cfg.weights} is not a file (expected a state dict of timm {cfg.arch!r})")
        return cfg, f"start weights: the RGB state dict {cfg.weights} ({shape})"
    what = HUB_WEIGHTS.get(cfg.arch, f"timm's pretrained {cfg.arch!r}")
    if not cfg.smoke:
        return cfg, f"start weights: weights='hub', {what}, from the Hugging Face hub ({shape})"
    cached = hub_weights_file(cfg.arch)
    if cached is not None:
        return dataclasses.replace(cfg, weights=cached), \
            f"start weights: weights='hub', {what}, read from the local cache ({shape}); smoke run, nothing downloaded"
    return dataclasses.replace(cfg, weights=""), (
        f"start weights: SMOKE RUN without the hub weights: weights='hub' ({what}) is not in the local cache and a "
        f"smoke run downloads nothing, so both branches start from random weights of the same architecture ({shape})")


def _rgb_state_dict(source: str, arch: str) -> dict[str, torch.Tensor]:
    if source == "hub":
        try:
            rgb = timm.create_model(arch, pretrained=True, num_classes=0)
        except Exception as err:  # offline, no cache, or no weights for this name
            raise RuntimeError(f"weights='hub': cannot fetch pretrained {arch!r} from the hub ({type(err).__name__}: "
                               f"{err}); download it once online or pass a local state-dict file") from None
        return rgb.state_dict()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} is not a file (expected a state dict of timm {arch!r})")
    if path.suffix == ".safetensors":  # timm's hub files
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_foundation_weights(backbone: Backbone, source: str) -> dict[str, list[str]]:
    """Initialise ``backbone`` from RGB weights of a vision foundation model (continual pretraining).

    Args:
        source: ``"hub"`` (timm's pretrained weights of ``backbone.arch``: DINOv2 LVD-142M for the ViTs,
            ResNet-50 a1 ImageNet-1k; needs the internet or a cache) or a local file (``.pth``, or timm's
            ``.safetensors``) holding the state dict of the RGB timm model, e.g. DINO's ResNet-50 backbone,
            the paper's start for ResNet-50.
    Returns:
        ``{"adapted": [...], "skipped": [...]}``: keys rebuilt for the new input (patch embedding,
        positional embedding) and classifier keys dropped.
    Raises:
        ValueError naming the keys when the file does not fit the architecture.
    """
    state = _rgb_state_dict(source, backbone.arch)
    target = backbone.net.state_dict()
    first = "patch_embed.proj.weight" if backbone.is_vit else "conv1.weight"
    adapted, skipped = [], [k for k in state if k not in target and k.startswith(("head.", "fc."))]
    state = {k: v for k, v in state.items() if k not in skipped}
    if first in state and state[first].shape[1] != backbone.in_chans:
        state[first] = adapt_patch_embed(state[first], backbone.in_chans)
        adapted.append(first)
    if "pos_embed" in state and state["pos_embed"].shape != target["pos_embed"].shape:
        grid = backbone.net.patch_embed.grid_size
        state["pos_embed"] = timm.layers.resample_abs_pos_embed(
            state["pos_embed"], new_size=list(grid), num_prefix_tokens=backbone.net.num_prefix_tokens)
        adapted.append("pos_embed")
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    wrong = [k for k in set(state) & set(target) if state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"weights {source!r} do not fit {backbone.arch!r}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {sorted(wrong)[:5]}")
    backbone.net.load_state_dict(state)
    return {"adapted": adapted, "skipped": skipped}


def grey_scene_check(cfg: SoftConConfig, seed: int = 0) -> tuple[dict[str, list[str]], float]:
    """The continual-pretraining path without a download: an RGB model of ``cfg.arch`` with random weights
    (seeded) is saved as a state-dict file and loaded into a ``cfg.modality`` backbone with
    :func:`load_foundation_weights`.

    Returns:
        the load report (``adapted`` and ``skipped`` keys) and the largest feature difference between the
        EO model and the RGB model on two grey scenes (all bands equal), which :func:`adapt_patch_embed`
        makes zero up to rounding.
    """
    def build(in_chans: int) -> Backbone:
        return Backbone(cfg.arch, in_chans, cfg.img_size, cfg.patch_size, cfg.vit_dim, cfg.vit_depth, cfg.vit_heads)

    rgb = seeded(lambda: build(3), seed).eval()
    eo = build(MODALITY_CHANNELS[cfg.modality]).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rgb_foundation_model.pth"
        torch.save(rgb.net.state_dict(), path)
        report = load_foundation_weights(eo, str(path))
    grey = GeneratorRandom(seed).rand(2, 1, cfg.img_size, cfg.img_size)     # [2, 1, S, S]
    with torch.no_grad():
        gap = (eo(grey.expand(-1, eo.in_chans, -1, -1)) - rgb(grey.expand(-1, 3, -1, -1))).abs().max()
    return report, float(gap)


# --------------------------------------------------------------------------------------------------
# The SoftCon framework (Fig. 4)
# --------------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """MoCo v3 head: (Linear-BN-ReLU) x (layers-1), Linear, BN without affine."""
    blocks: list[nn.Module] = []
    dims = [in_dim] + [hidden] * (layers - 1)
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    blocks += [nn.Linear(dims[-1], out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False)]
    return nn.Sequential(*blocks)


class Branch(nn.Module):
    """Encoder + projector: one branch of the Siamese network."""

    def __init__(self, encoder: Backbone, projector: nn.Module):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.projector(self.encoder(x, keep))


class SoftCon(nn.Module):
    """SoftCon pretraining module (Fig. 4): ``forward(batch, ctx) -> {"loss", "nce", "soft", "m"}``.

    Everything random in a step (crops, flips, jitter, the Siamese mask) is drawn per sample from the
    step context (:mod:`eobook.rng`), so a resumed or DDP run draws what one uninterrupted process draws.

    Args:
        encoder: the base encoder (already initialised from foundation weights where asked); the momentum
            encoder starts as its copy.
        input_key: batch key of the images ("s2" or "s1"); labels come from ``batch["multilabel"]``.
        proj_hidden, proj_dim, pred_hidden: MoCo v3 head sizes (3-layer projector, 2-layer predictor).
        temperature: tau; lam: lambda of the InfoNCE term; momentum: m at the start (cosine to 1).
        mask_ratio: Siamese masking ratio of the trainable branch (ViT only).
        img_size, crop_scale, jitter: view augmentations.
    """

    def __init__(self, encoder: Backbone, input_key: str = "s2", proj_hidden: int = 4096, proj_dim: int = 256,
                 pred_hidden: int = 4096, temperature: float = 0.2, lam: float = 0.5, momentum: float = 0.99,
                 mask_ratio: float = 0.5, img_size: int = 224, crop_scale: tuple[float, float] = (0.2, 1.0),
                 jitter: float = 0.4):
        super().__init__()
        if mask_ratio and not encoder.is_vit:
            raise ValueError("mask_ratio: Siamese masking needs a ViT backbone; use 0 with resnet50")
        self.input_key, self.temperature, self.lam, self.momentum = input_key, temperature, lam, momentum
        self.mask_ratio, self.img_size, self.crop_scale, self.jitter = mask_ratio, img_size, crop_scale, jitter
        self.base = Branch(encoder, mlp(encoder.embed_dim, proj_hidden, proj_dim, layers=3))
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim, layers=2)
        self.momentum_branch = copy.deepcopy(self.base)
        self.momentum_branch.requires_grad_(False)

    @property
    def encoder(self) -> Backbone:
        return self.base.encoder

    def momentum_at(self, ctx: StepContext) -> float:
        """m rises from ``momentum`` to 1 on a half cosine over training (MoCo v3, BYOL)."""
        return ema_momentum(self.momentum, ctx.step, ctx.total_steps)

    def views(self, x: torch.Tensor, rng: Random | torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views [B, C, S, S] of the same scenes: a random resized crop with horizontal and
        vertical flips (bilinear), then brightness and contrast jitter of all bands together (p 0.8; the
        ColorJitter(0.4, 0.4) of SSL4EO-S12's MoCo without the RGB-only hue and saturation)."""
        rng = as_random(rng)
        return tuple(augment.brightness_contrast(
            augment.random_resized_crop(x, self.img_size, self.crop_scale, rng, hflip_p=0.5, vflip_p=0.5,
                                        mode="bilinear"),
            self.jitter, 0.8, rng, per_channel=False, clamp=False) for _ in range(2))

    def keep_indices(self, batch_size: int, rng: Random | torch.Generator | None,
                     device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Visible patches of the trainable branch [B, K] (Siamese masking), or None (no masking)."""
        if not self.mask_ratio:
            return None
        n = self.encoder.num_patches
        return random_keep_indices(batch_size, n, max(1, round(n * (1 - self.mask_ratio))), as_random(rng), device)

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        x, y = batch[self.input_key], batch["multilabel"].float()           # [B, C, H, W], [B, 9]
        if x.ndim != 4:
            raise ValueError(f"batch[{self.input_key!r}]: expected [B, C, H, W] (one season), got {tuple(x.shape)}")
        v1, v2 = self.views(x, ctx)                                          # [B, C, S, S] each
        q1, q2 = (self.predictor(self.base(v, self.keep_indices(len(x), ctx, x.device))) for v in (v1, v2))
        with torch.no_grad():
            k1, k2 = self.momentum_branch(v1), self.momentum_branch(v2)      # [B, proj_dim] whole views
        y_all, offset = gather_with_grad(y)                                  # [B_global, 9]
        out12 = softcon_loss(q1, gather_with_grad(k2)[0], y, y_all, self.temperature, self.lam, offset, allow_empty=True)
        out21 = softcon_loss(q2, gather_with_grad(k1)[0], y, y_all, self.temperature, self.lam, offset, allow_empty=True)
        out = {k: (out12[k] + out21[k]) / 2 for k in out12}                 # symmetric loss
        return {**out, "m": torch.tensor(self.momentum_at(ctx))}

    def on_step_end(self, ctx: StepContext) -> None:
        """EMA of the momentum branch: theta_m <- m theta_m + (1 - m) theta_base (Fig. 4)."""
        ema_update(self.momentum_branch, self.base, self.momentum_at(ctx))

    @torch.no_grad()
    def similarity_matrices(self, x: torch.Tensor, y: torch.Tensor, rng: Random | torch.Generator | int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """For one batch, in its order: the label similarity [N, N] (the soft targets) and the cosine
        similarity [N, N] of predictor outputs of view 1 against momentum keys of view 2, the matrix the
        loss trains (Fig. 4). Runs in training mode (batch statistics, as in training); BN statistics
        are restored afterwards."""
        state, was_training, rng = copy.deepcopy(self.state_dict()), self.training, as_random(rng)
        self.train()
        v1, v2 = self.views(x, rng)
        q = self.predictor(self.base(v1, self.keep_indices(len(x), rng, x.device)))
        k = self.momentum_branch(v2)
        self.load_state_dict(state)
        self.train(was_training)
        return label_similarity(y, y, allow_empty=True), F.normalize(q, dim=1) @ F.normalize(k, dim=1).T


# --------------------------------------------------------------------------------------------------
# From a profile: the backbone, the pretraining module, the checkpoint identity
# --------------------------------------------------------------------------------------------------
def create_backbone(cfg: SoftConConfig) -> Backbone:
    """The backbone of a SoftCon profile, initialised from ``cfg.weights`` when given."""
    backbone = Backbone(cfg.arch, MODALITY_CHANNELS[cfg.modality], cfg.img_size, cfg.patch_size, cfg.vit_dim,
                        cfg.vit_depth, cfg.vit_heads)
    if cfg.weights:
        load_foundation_weights(backbone, cfg.weights)
    return backbone


def pretraining_module(cfg: SoftConConfig) -> SoftCon:
    """The two branches of a profile (both from :func:`create_backbone`) with its heads, loss and views."""
    return SoftCon(create_backbone(cfg), input_key="s1" if cfg.modality == "s1" else "s2",
                   proj_hidden=cfg.proj_hidden, proj_dim=cfg.proj_dim, pred_hidden=cfg.pred_hidden,
                   temperature=cfg.temperature, lam=cfg.lam, momentum=cfg.momentum_start, mask_ratio=cfg.mask_ratio,
                   img_size=cfg.img_size, crop_scale=cfg.crop_scale, jitter=cfg.jitter)


def model_meta(cfg: SoftConConfig, encoder: Backbone) -> dict[str, Any]:
    """Model-shape fields that a checkpoint must share with this run."""
    return {"arch": cfg.arch, "in_chans": encoder.in_chans, "embed_dim": encoder.embed_dim,
            "img_size": cfg.img_size, "proj_dim": cfg.proj_dim, "proj_hidden": cfg.proj_hidden}
