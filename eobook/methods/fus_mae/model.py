"""Fus-MAE: a cross-attention-based data fusion approach for masked autoencoders (SAR + optical).

Chan-To-Hing, H., & Veeravalli, B. (2024). Fus-MAE: A cross-attention-based data fusion approach for
masked autoencoders in remote sensing. IGARSS 2024 (arXiv:2401.02764).

Two image streams, SAR ``s1`` (I_1, VV and VH) and optical ``s2`` (I_2, 12 bands), are cut into
P x P patches by modality-specific convolutions (eq. 1). A fraction of each modality's patches is
masked (Sec. 3.3, independently or consistently across modalities) and only the visible tokens are
encoded. In the ``XAE&D`` variant the first encoder block is an :class:`XAttnEncoder` (eq. 2-3) that
fuses the two token sets by cross-attention; the ``XAD`` variant uses N plain ViT blocks over the
concatenated tokens. Before each modality's lightweight MAE decoder D_i (eq. 9), an
:class:`XAttnDecoder` block lets its latents attend to the other modality's latents (eq. 10-11). The loss
is the MSE on masked patches only, per modality, summed.

The datasets return patches at their native size; every batched entry point (pretraining ``forward``,
evaluation features, reconstructions, attention maps) resizes the batch to the model's input side with
:func:`resize_to_input`, on the batch's device, so the data-loading workers only read.

No official code was published: every choice the paper leaves open (norms, weight sharing, decoder
size, features for evaluation, ...) is stated here and in the chapter's Deviations section.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.data import Dataset

from ..data import chapter_dataset
from ..evaluate import (FineTuneConfig, ProbeConfig, average_scores, extract_features, fine_tune, label_fraction_subset,
                        linear_probe, subset)
from ..nn import CrossAttention, patchify, random_keep_indices, sincos_pos_embed_2d, take_tokens, unpatchify

#: The two modalities in the paper's order: I_1 = SAR (Sentinel-1), I_2 = optical (Sentinel-2).
MODALITIES = ("s1", "s2")
#: Input channels of each modality: S1 (VV, VH); S2 the 12 BigEarthNet L2A bands (no B10).
IN_CHANS = {"s1": 2, "s2": 12}
VARIANTS = ("XAE&D", "XAD")
MASKINGS = ("independent", "consistent")
#: Evaluation inputs of Table 1 -> the modalities the encoder sees.
INPUTS = {"S1": ("s1",), "S2": ("s2",), "S1+S2": ("s1", "s2")}

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


# --------------------------------------------------------------------------------------------------
# Masking (Sec. 3.3)
# --------------------------------------------------------------------------------------------------
def random_masking(batch_size: int, num_patches: int, mask_ratio: float = 0.75, consistent: bool = False,
                   num_modalities: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random patch masks for every modality (Sec. 3.3).

    Each row masks exactly ``round(mask_ratio * num_patches)`` patches. Independent masking draws each
    modality separately; consistent masking masks the same patches in every modality.

    Args:
        batch_size: B. num_patches: N = (H/P)^2 patches per modality.
        mask_ratio: fraction of masked patches, in [0, 1) (the paper: 0.75).
        consistent: the same mask for all modalities.
        num_modalities: M.
        generator: CPU generator (``ctx.generator`` during training).
    Returns:
        bool mask [M, B, N], True = masked.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio: expected a value in [0, 1), got {mask_ratio}")
    if batch_size < 1 or num_patches < 1 or num_modalities < 1:
        raise ValueError(f"batch_size, num_patches, num_modalities: expected >= 1, got "
                         f"{batch_size}, {num_patches}, {num_modalities}")
    num_masked = round(mask_ratio * num_patches)
    if num_masked >= num_patches:
        raise ValueError(f"mask_ratio: {mask_ratio} masks all {num_patches} patches; keep at least one visible")
    draws = 1 if consistent else num_modalities
    keep = random_keep_indices(draws * batch_size, num_patches, num_patches - num_masked, generator)
    mask = torch.ones(draws * batch_size, num_patches, dtype=torch.bool).scatter_(1, keep, False)
    return mask.view(draws, batch_size, num_patches).expand(num_modalities, -1, -1).clone()


def mask_to_keep(mask: torch.Tensor) -> torch.Tensor:
    """Sorted indices of the visible patches of a bool mask [B,N] (True = masked) -> [B,K]."""
    visible = (~mask).sum(-1).reshape(-1)
    if mask.ndim != 2 or bool((visible != visible[0]).any()) or int(visible[0]) == 0:
        raise ValueError("mask: expected [B,N] with the same number (>= 1) of visible patches in every row")
    return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :int(visible[0])]


# --------------------------------------------------------------------------------------------------
# Inputs and patches
# --------------------------------------------------------------------------------------------------
def resize_to_input(images: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Resize a batch of every modality to the encoder's input side (antialiased bilinear).

    The paper names no input size; the book feeds BigEarthNet's 120 px (SEN12MS: 256 px) patches to a
    ViT-S/16 at 128 px (see the chapter's Deviations). The resize runs here, on the whole batch and on its
    device, rather than per sample in the data-loading workers, where it was their main cost. Antialiasing
    matters when shrinking (SEN12MS 256 -> 128); each sample is resized independently, so the result equals
    a per-sample ``F.interpolate`` of the same sample.

    Args:
        images: {m: [B,C_m,H_m,W_m]}; sides may differ between modalities, not within one batch tensor.
        size: S, the encoder's ``img_size``.
    Returns:
        {m: [B,C_m,S,S]} float32; tensors already S x S are only cast.
    """
    out = {}
    for m, x in images.items():
        if x.ndim != 4:
            raise ValueError(f"images[{m!r}]: expected a batch [B,C,H,W], got {tuple(x.shape)}")
        x = x.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[m] = x                                                                    # [B,C_m,S,S]
    return out


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches only (Sec. 3.2).

    Args:
        pred, target: patches [B,N,L]. mask: bool [B,N], True = masked (counted).
    Returns:
        scalar: mean over masked patches of the per-patch mean squared error.
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                         "must be [B,N,L], [B,N,L] and [B,N]")
    if not mask.any():
        raise ValueError("mask: no patch is masked; the loss is undefined")
    per_patch = (pred - target).pow(2).mean(-1)                                     # [B,N]
    return (per_patch * mask).sum() / mask.sum()


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardisation of targets (MAE's ``norm_pix_loss``): [B,N,L] -> [B,N,L]."""
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


# --------------------------------------------------------------------------------------------------
# Blocks (eq. 2-5, 10-11)
# --------------------------------------------------------------------------------------------------
class XAttnEncoder(nn.Module):
    """Cross-attended first encoder block (eq. 2-3) over SAR tokens x and optical tokens y.

    fus(x, y) = x (+) y + CA(x, y) (+) CA(y, x)            (eq. 2, (+) = concatenation of token sets)
    XAttnEncoder(x, y) = fus + MLP(fus)                     (eq. 3, two-layer GELU MLP)

    CA (eq. 4-5) is multi-head; each direction has its own weights and each modality its own pre-norm
    (the paper leaves norms and weight sharing open). With one modality absent (single-sensor
    evaluation) there is nothing to attend to and fus is that modality's tokens.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_x, self.norm_y = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn_xy = CrossAttention(dim, num_heads)   # queries x (SAR), keys/values y (optical)
        self.attn_yx = CrossAttention(dim, num_heads)   # queries y, keys/values x
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor | None, y: torch.Tensor | None, return_weights: bool = False):
        """x [B,Nx,D], y [B,Ny,D] -> [B,Nx+Ny,D] (and, if asked, weights {"s1->s2": [B,h,Nx,Ny], "s2->s1": ...})."""
        weights = {}
        if x is None or y is None:
            fus = x if y is None else y
        else:
            nx, ny = self.norm_x(x), self.norm_y(y)
            ca_xy, ca_yx = self.attn_xy(nx, ny, return_weights), self.attn_yx(ny, nx, return_weights)
            if return_weights:
                (ca_xy, weights["s1->s2"]), (ca_yx, weights["s2->s1"]) = ca_xy, ca_yx
            fus = torch.cat([x, y], 1) + torch.cat([ca_xy, ca_yx], 1)               # eq. 2
        out = fus + self.mlp(self.norm_mlp(fus))                                     # eq. 3
        return (out, weights) if return_weights else out


class XAttnDecoder(nn.Module):
    """Cross-attention between modality-biased latents before decoder D_i (eq. 10-11).

    z^x_i = z_i + CA(z_i, z_j)                               (eq. 10)
    XAttnDecoder(z_i) = z^x_i + MLP(z^x_i)                   (eq. 11)
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, z_i: torch.Tensor, z_j: torch.Tensor, return_weights: bool = False):
        """z_i [B,Ni,D] (this modality), z_j [B,Nj,D] (the other one) -> [B,Ni,D]."""
        ca = self.attn(self.norm_q(z_i), self.norm_kv(z_j), return_weights)
        ca, weights = ca if return_weights else (ca, None)
        z = z_i + ca                                                                  # eq. 10
        out = z + self.mlp(self.norm_mlp(z))                                          # eq. 11
        return (out, weights) if return_weights else out


class FusMAEEncoder(nn.Module):
    """The ViT encoder E_N over both modalities (eq. 1, 6-8).

    ``cross_attention_first=True`` (XAE&D): one :class:`XAttnEncoder` then N-1 transformer blocks over
    the concatenated tokens and the appended global token; ``False`` (XAD): N transformer blocks.
    Positional embeddings E_emb are fixed 2D sine-cosine and shared by the two modalities.
    """

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, cross_attention_first: bool = True,
                 in_chans: dict[str, int] | None = None):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.in_chans = dict(in_chans or IN_CHANS)
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.grid = img_size // patch_size
        self.patch_embed = nn.ModuleDict({m: nn.Conv2d(c, embed_dim, patch_size, patch_size)     # Conv2d_i, eq. 1
                                          for m, c in self.in_chans.items()})
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, self.grid, self.grid)[None],
                             persistent=False)                                                   # E_emb [1,N,D]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))                              # z_CLS, eq. 6
        self.xattn = XAttnEncoder(embed_dim, num_heads, mlp_ratio) if cross_attention_first else None
        n_blocks = depth - 1 if cross_attention_first else depth
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(n_blocks)])
        self.norm = nn.LayerNorm(embed_dim)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def tokens(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """z_{0,i} = Conv2d_i(I_i) + E_emb (eq. 1): {m: [B,C_m,H,W]} -> {m: [B,N,D]}."""
        out = {}
        for m, image in images.items():
            expected = (self.in_chans[m], self.img_size, self.img_size) if m in self.in_chans else None
            if image.ndim != 4 or tuple(image.shape[1:]) != expected:
                raise ValueError(f"images[{m!r}]: expected [B, *{expected}], got {tuple(image.shape)}")
            out[m] = self.patch_embed[m](image).flatten(2).transpose(1, 2) + self.pos_embed
        return out

    def forward(self, images: dict[str, torch.Tensor], keep: dict[str, torch.Tensor] | None = None,
                return_attention: bool = False):
        """Encode the visible tokens of the modalities present in ``images``.

        Args:
            images: {"s1": [B,2,H,W], "s2": [B,12,H,W]}, one or both.
            keep: {m: [B,K_m]} visible patch indices per modality (None: all patches).
        Returns:
            ({m: z_{N,m} [B,K_m,D]}, z_CLS [B,D]) and, with ``return_attention``, the XAttnEncoder weights.
        """
        present = [m for m in MODALITIES if m in images]
        unknown = set(images) - set(MODALITIES)
        if not present or unknown:
            raise ValueError(f"images: expected keys among {MODALITIES}, got {sorted(images)}")
        tokens = self.tokens({m: images[m] for m in present})
        if keep is not None:
            tokens = {m: take_tokens(tokens[m], keep[m]) for m in present}
        weights = {}
        if self.xattn is not None:                                                    # XAE&D
            x = self.xattn(tokens.get("s1"), tokens.get("s2"), return_attention)
            x, weights = x if return_attention else (x, {})
        else:                                                                         # XAD
            x = torch.cat([tokens[m] for m in present], 1)
        x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], 1)             # eq. 6
        x = self.norm(self.blocks(x))                                                 # eq. 7
        latents = dict(zip(present, x[:, :-1].split([tokens[m].shape[1] for m in present], 1)))  # eq. 8
        return (latents, x[:, -1], weights) if return_attention else (latents, x[:, -1])

    def features(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """Image features for evaluation: the mean of all patch tokens [B,D] (no masking).

        ``images`` may be at the dataset's native size ({m: [B,C_m,H,W]}); they are resized to the input
        side first (the linear probes and fine-tuning all come through here).
        """
        latents, _ = self(resize_to_input(images, self.img_size))
        return torch.cat(list(latents.values()), 1).mean(1)


class ModalityDecoder(nn.Module):
    """Lightweight MAE decoder D_i (eq. 9): visible latents + mask tokens -> pixels of every patch."""

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int, grid: int, patch_dim: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(decoder_dim, grid, grid)[None], persistent=False)
        self.blocks = nn.Sequential(*[Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, patch_dim)

    def forward(self, latents: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """latents [B,K,D] at patch indices keep [B,K] -> predicted patches [B,N,P*P*C]."""
        z = self.embed(latents)                                                       # [B,K,Dd]
        b, n = z.shape[0], self.pos_embed.shape[1]
        full = self.mask_token.expand(b, n, -1).scatter(1, keep.unsqueeze(-1).expand_as(z), z)  # [B,N,Dd]
        return self.head(self.norm(self.blocks(full + self.pos_embed)))


# --------------------------------------------------------------------------------------------------
# The pretraining module
# --------------------------------------------------------------------------------------------------
class FusMAE(nn.Module):
    """Fus-MAE pretraining module: encoder, XAttnDecoder blocks and per-modality decoders (Fig. 1).

    ``forward(batch, ctx)`` resizes the batch to ``img_size`` (:func:`resize_to_input`), masks,
    reconstructs and returns the summed masked MSE of both modalities (the contract of
    :func:`eobook.train.fit`). ``predict``, ``targets`` and ``losses`` take batches already at ``img_size``.

    Args:
        variant: "XAE&D" (XAttnEncoder as first block) or "XAD" (plain first block).
        masking: "independent" or "consistent" (Sec. 3.3).
        mask_ratio: fraction of each modality's patches masked (0.75).
        norm_pix_loss: per-patch standardised targets (MAE's option; the paper says plain MSE).
    """

    def __init__(self, img_size: int = 128, patch_size: int = 16, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, decoder_dim: int = 192, decoder_depth: int = 4,
                 decoder_heads: int = 6, variant: str = "XAE&D", masking: str = "independent",
                 mask_ratio: float = 0.75, norm_pix_loss: bool = False, in_chans: dict[str, int] | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        if masking not in MASKINGS:
            raise ValueError(f"masking: expected one of {MASKINGS}, got {masking!r}")
        self.variant, self.masking, self.mask_ratio, self.norm_pix_loss = variant, masking, mask_ratio, norm_pix_loss
        self.encoder = FusMAEEncoder(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio,
                                     cross_attention_first=variant == "XAE&D", in_chans=in_chans)
        chans = self.encoder.in_chans
        self.xattn_decoder = nn.ModuleDict({m: XAttnDecoder(embed_dim, num_heads, mlp_ratio) for m in MODALITIES})
        self.decoders = nn.ModuleDict({
            m: ModalityDecoder(embed_dim, decoder_dim, decoder_depth, decoder_heads, self.encoder.grid,
                               patch_size * patch_size * chans[m], mlp_ratio) for m in MODALITIES})
        self.apply(_init_weights)
        for token in [self.encoder.cls_token, *(d.mask_token for d in self.decoders.values())]:
            nn.init.normal_(token, std=0.02)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def sample_masks(self, batch_size: int, generator: torch.Generator | None = None,
                     masking: str | None = None) -> dict[str, torch.Tensor]:
        """{m: bool [B,N]} masks drawn with this model's (or the given) masking strategy."""
        masking = masking or self.masking
        if masking not in MASKINGS:
            raise ValueError(f"masking: expected one of {MASKINGS}, got {masking!r}")
        mask = random_masking(batch_size, self.encoder.num_patches, self.mask_ratio, masking == "consistent",
                              len(MODALITIES), generator)
        return dict(zip(MODALITIES, mask))

    def predict(self, images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predicted patches {m: [B,N,P*P*C]} from the visible patches (masks True = hidden)."""
        keep = {m: mask_to_keep(masks[m]).to(images[m].device) for m in MODALITIES}
        latents, _ = self.encoder(images, keep)                                       # z_{N,i}, eq. 7-8
        s1, s2 = latents["s1"], latents["s2"]
        fused = {"s1": self.xattn_decoder["s1"](s1, s2), "s2": self.xattn_decoder["s2"](s2, s1)}  # eq. 10-11
        return {m: self.decoders[m](fused[m], keep[m]) for m in MODALITIES}          # eq. 9

    def targets(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Target patches {m: [B,N,P*P*C]} (per-patch standardised with ``norm_pix_loss``)."""
        patches = {m: patchify(images[m], self.patch_size) for m in MODALITIES}
        return {m: normalize_patches(p) for m, p in patches.items()} if self.norm_pix_loss else patches

    def losses(self, images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masked MSE per modality {m: scalar}; the training loss is their sum."""
        preds, targets = self.predict(images, masks), self.targets(images)
        return {m: masked_mse_loss(preds[m], targets[m], masks[m].to(preds[m].device)) for m in MODALITIES}

    def inputs(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{m: [B,C_m,H,W]} at any size -> both modalities {m: [B,C_m,S,S]} at the encoder's input side."""
        return resize_to_input({m: images[m] for m in MODALITIES}, self.encoder.img_size)

    def forward(self, batch: dict[str, Any], ctx) -> dict[str, torch.Tensor]:
        images = self.inputs(batch)                                                   # on the batch's device
        b, rank = images["s1"].shape[0], ctx.dist.rank
        # Masks are drawn for the global batch and each rank keeps its rows (the generator is seeded alike
        # on all ranks), so N DDP processes mask exactly as one process with the same global batch does.
        masks = self.sample_masks(b * ctx.dist.world_size, ctx.generator)
        masks = {m: mask[rank * b:(rank + 1) * b] for m, mask in masks.items()}
        losses = self.losses(images, masks)
        return {"loss": sum(losses.values()), **{f"loss_{m}": v.detach() for m, v in losses.items()}}

    @torch.no_grad()
    def reconstruct(self, images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, dict]:
        """Images for figures: {m: {"masked", "reconstruction", "original"}}, each [B,C,S,S].

        ``images`` may be at their native size: "original" is the resized input the model saw. The
        reconstruction shows predictions on masked patches and the input on visible ones; with
        ``norm_pix_loss`` predictions are mapped back with each target patch's mean and std.
        """
        images = self.inputs(images)
        preds = self.predict(images, masks)
        out = {}
        for m in MODALITIES:
            patches = patchify(images[m], self.patch_size)
            pred = preds[m]
            if self.norm_pix_loss:
                pred = pred * (patches.var(-1, keepdim=True) + 1e-6).sqrt() + patches.mean(-1, keepdim=True)
            hidden = masks[m].to(pred.device).unsqueeze(-1)
            channels = images[m].shape[1]
            out[m] = {"masked": unpatchify(patches.masked_fill(hidden, float("nan")), self.patch_size, channels),
                      "reconstruction": unpatchify(torch.where(hidden, pred, patches), self.patch_size, channels),
                      "original": images[m]}
        return out

    @torch.no_grad()
    def cross_attention_maps(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Head-averaged attention of the XAttnEncoder on unmasked inputs: {"s1->s2": [B,N,N], "s2->s1": ...}.

        Row q of "s1->s2" is how SAR patch q distributes its attention over the optical patches; ``images``
        may be at their native size (resized first, so N is always the encoder's grid squared).
        """
        if self.encoder.xattn is None:
            raise ValueError("cross_attention_maps: the XAD variant has no XAttnEncoder (use variant='XAE&D')")
        _, _, weights = self.encoder(self.inputs(images), return_attention=True)
        return {k: w.mean(1) for k, w in weights.items()}


def _init_weights(module: nn.Module) -> None:
    """MAE's initialisation: Xavier-uniform linear layers and patch projections, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
class PairedPatches(Dataset):
    """S1 + S2 samples at their native size: {"s1": [2,H,W], "s2": [12,H,W], "label"} (float32 images).

    Nothing is resized here: the model resizes whole batches on their device (:func:`resize_to_input`),
    which keeps the data-loading workers to reading. A batch therefore needs one size per modality, and
    a sample whose shape differs from the first one this dataset (or worker) returned raises a ValueError
    naming both, instead of default_collate's stacking error.

    Args:
        base: a reader returning "s1", "s2" and ``label_key`` (BigEarthNetMM, SEN12MS).
        s2_bands: indices of the S2 bands to keep (SEN12MS has 13 L1C bands: drop B10 to match
            BigEarthNet); a cheap copy of 12 of 13 bands, and one band less to transfer to the device.
        label_key: the base sample's label entry, returned as "label".
    """

    def __init__(self, base: Dataset, s2_bands: list[int] | None = None, label_key: str = "label"):
        self.base, self.s2_bands, self.label_key = base, s2_bands, label_key
        self.shapes: dict[str, tuple[int, ...]] = {}   # {m: (C,H,W)} of the first sample returned

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.base[index]
        s2 = sample["s2"] if self.s2_bands is None else sample["s2"][self.s2_bands]
        images = {"s1": sample["s1"].float(), "s2": s2.float()}                      # [2,H,W], [12,H,W]
        self._check_shapes(index, images)
        return {**images, "label": sample[self.label_key]}

    def _check_shapes(self, index: int, images: dict[str, torch.Tensor]) -> None:
        for m, x in images.items():
            first = self.shapes.setdefault(m, tuple(x.shape))
            if tuple(x.shape) != first:
                raise ValueError(f"PairedPatches: sample {index} has {m} of shape {tuple(x.shape)}, earlier samples "
                                 f"{first}; samples of one dataset must share their size, as the model resizes "
                                 "whole batches (resize the dataset's files to one size first)")


def bigearthnet(cfg, split: str) -> PairedPatches:
    """BigEarthNet-MM ``split`` at its native size (real data: 120 px; labels: 19-class multi-hot)."""
    return PairedPatches(chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split=split))


def sen12ms(cfg, split: str) -> PairedPatches:
    """SEN12MS scene classification ``split`` at its native size (real data: 256 px; label: majority class,
    -1 if unlabelled; S2 without B10)."""
    from ..data.bands import S2_L1C_BANDS, S2_L2A_BANDS
    bands = [S2_L1C_BANDS.index(b) for b in S2_L2A_BANDS]
    return PairedPatches(chapter_dataset(cfg, "SEN12MS", "SEN12MS", split=split), s2_bands=bands, label_key="label_scene")


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------
def build_model(cfg) -> FusMAE:
    """A randomly initialised :class:`FusMAE` shaped by a :class:`~eobook.config.FusMAEConfig`."""
    return FusMAE(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                  num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, decoder_dim=cfg.decoder_dim,
                  decoder_depth=cfg.decoder_depth, decoder_heads=cfg.decoder_heads, variant=cfg.variant,
                  masking=cfg.masking, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)


def random_encoder(cfg, seed: int) -> FusMAEEncoder:
    """The encoder of a randomly initialised :class:`FusMAE`, seeded (the "random init" baseline)."""
    torch.manual_seed(seed)
    return build_model(cfg).encoder


def random_init_scores(score: Callable[[FusMAEEncoder], dict[str, float]], cfg
                       ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The "random init" row: ``score`` of ``cfg.random_init_seeds`` random encoders (seeds ``cfg.seed``,
    ``cfg.seed + 1``, ...). Returns the per-column mean and each seed's scores, because on a few hundred
    patches one random encoder's probe moves by one to several points from seed to seed."""
    per_seed = [score(random_encoder(cfg, cfg.seed + i)) for i in range(cfg.random_init_seeds)]
    return average_scores(per_seed), per_seed


def model_meta(cfg) -> dict[str, Any]:
    """Shape fields that identify a checkpoint (one of another size or variant is refused)."""
    names = ("variant", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth")
    return {"arch": "fus_mae", **{n: getattr(cfg, n) for n in names}}


def build_pretraining(cfg):
    """(module, dataset, collate_fn, meta) for :func:`eobook.train.pretrain`: BigEarthNet-MM train split,
    native size (the module's ``forward`` resizes each batch)."""
    return build_model(cfg), bigearthnet(cfg, "train"), None, model_meta(cfg)


# --------------------------------------------------------------------------------------------------
# Evaluation (Sec. 4)
# --------------------------------------------------------------------------------------------------
def feature_extractor(encoder: FusMAEEncoder, modalities: tuple[str, ...]) -> Callable[[dict], torch.Tensor]:
    """``batch -> [B,D]`` features of ``encoder`` from the given modalities (for ``extract_features``); the
    batch arrives at native size on the device and ``FusMAEEncoder.features`` resizes it there."""
    def encode(batch: dict) -> torch.Tensor:
        encoder.eval()
        return encoder.features({m: batch[m] for m in modalities})
    return encode


class FusMAEClassifier(nn.Module):
    """A linear head on the mean-pooled encoder tokens, for end-to-end fine-tuning (Table 1, 100%); takes
    native-size batches (``FusMAEEncoder.features`` resizes them)."""

    def __init__(self, encoder: FusMAEEncoder, num_classes: int, modalities: tuple[str, ...]):
        super().__init__()
        self.encoder, self.modalities = copy.deepcopy(encoder), modalities
        self.head = nn.Linear(encoder.embed_dim, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.encoder.features({m: batch[m] for m in self.modalities}))


def fine_tune_multilabel(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg, inputs: str,
                         device: torch.device | str = "cpu") -> tuple[dict[str, float], list[float]]:
    """Table 1, 100% labels: linear head + encoder fine-tuned with MultiLabelSoftMarginLoss and AdamW.

    Returns (test metrics with ``mAP_macro``, per-epoch training losses); ``encoder`` is left untouched.
    """
    model = FusMAEClassifier(encoder, num_classes=19, modalities=INPUTS[inputs])
    ft = FineTuneConfig(task="multilabel", epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size,
                        optimizer="adamw", lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay, seed=cfg.seed)
    return fine_tune(model, train_set, test_set, lambda mdl, batch: mdl(batch), ft, 19, device=device)


def linear_probe_multilabel(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg, inputs: str,
                            device: torch.device | str = "cpu") -> dict[str, float]:
    """Table 1, 1% labels: frozen encoder, linear head, 20 epochs, batch 128, AdamW."""
    train_part = subset(train_set, label_fraction_subset(len(train_set), cfg.probe_label_fraction, cfg.seed,
                                                         minimum=cfg.probe_min_samples))
    encode = feature_extractor(encoder, INPUTS[inputs])
    train_x, train_y = extract_features(encode, train_part, device=device)
    test_x, test_y = extract_features(encode, test_set, device=device)
    probe = ProbeConfig(task="multilabel", epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size,
                        optimizer="adamw", lr=cfg.probe_lr, seed=cfg.seed)
    return linear_probe(train_x, train_y, test_x, test_y, probe, num_classes=19)


def linear_probe_sen12ms(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg, inputs: str = "S2",
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """Table 2: linear evaluation on SEN12MS scenes with label smoothing (timm's
    LabelSmoothingCrossEntropy equals torch's cross-entropy with ``label_smoothing``), 10 epochs, batch 256."""
    from ..data.bands import DFC_CLASSES
    encode = feature_extractor(encoder, INPUTS[inputs])
    (train_x, train_y), (test_x, test_y) = (_labelled(*extract_features(encode, data, device=device))
                                            for data in (train_set, test_set))
    probe = ProbeConfig(task="multiclass", epochs=cfg.transfer_epochs, batch_size=cfg.transfer_batch_size,
                        optimizer="adamw", lr=cfg.transfer_lr, label_smoothing=cfg.label_smoothing, seed=cfg.seed)
    return linear_probe(train_x, train_y, test_x, test_y, probe, num_classes=len(DFC_CLASSES))


def _labelled(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the rows whose scene label is -1 (patches without any labelled pixel)."""
    keep = labels >= 0
    return features[keep], labels[keep]


def table1_scores(encoder: FusMAEEncoder, train_set: Dataset, test_set: Dataset, cfg,
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """Table 1's cells for one encoder: {"100% S1": mAP, ..., "1% S1+S2": mAP} (macro mAP, %)."""
    scores = {}
    for inputs in INPUTS:
        metrics, _ = fine_tune_multilabel(encoder, train_set, test_set, cfg, inputs, device)
        scores[f"100% {inputs}"] = metrics["mAP_macro"]
    for inputs in INPUTS:
        scores[f"1% {inputs}"] = linear_probe_multilabel(encoder, train_set, test_set, cfg, inputs, device)["mAP_macro"]
    return scores


def stack_samples(dataset: Dataset, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` samples of ``dataset`` as a native-size batch {"s1": [B,2,H,W], "s2": [B,12,H,W]}
    (figures; :func:`resize_to_input` gives the model's view)."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    return {m: torch.stack([s[m] for s in samples]) for m in MODALITIES}


def colocated_attention(maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of each query's cross-attention on the patch at the same location, in % ({direction: value});
    uniform attention would give 100 / N."""
    return {k: 100 * float(w.diagonal(dim1=-2, dim2=-1).mean()) for k, w in maps.items()}
