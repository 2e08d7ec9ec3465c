"""Fus-MAE's inputs, masking, blocks, objective and pretraining module (Sec. 3, eq. 1-11).

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
:func:`resize_to_input`, on the batch's device, so the data-loading workers only read. The masks of a
training step are drawn per sample from the step context (:mod:`eobook.rng`), so a resumed or DDP run masks
exactly as one uninterrupted process does.

No official code was published: every choice the paper leaves open (norms, weight sharing, decoder
size, features for evaluation, ...) is stated here and in the chapter's Deviations section.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from ...masking import keep_indices, masked_mean, random_mask, take_tokens
from ...nn import CrossAttention, patchify, sincos_pos_embed_2d, unpatchify
from ...rng import Random, as_random
from ...train import StepContext
from .config import FusMAEConfig

#: The two modalities in the paper's order: I_1 = SAR (Sentinel-1), I_2 = optical (Sentinel-2).
MODALITIES = ("s1", "s2")
#: Input channels of each modality: S1 (VV, VH); S2 the 12 BigEarthNet L2A bands (no B10).
IN_CHANS = {"s1": 2, "s2": 12}
VARIANTS = ("XAE&D", "XAD")
MASKINGS = ("independent", "consistent")


# --------------------------------------------------------------------------------------------------
# Masking (Sec. 3.3)
# --------------------------------------------------------------------------------------------------
def random_masking(batch_size: int, num_patches: int, mask_ratio: float = 0.75, consistent: bool = False,
                   num_modalities: int = 2, rng: Random | torch.Generator | int | None = None) -> torch.Tensor:
    """Uniform random patch masks for every modality (Sec. 3.3), drawn per sample from ``rng``.

    Each row masks exactly ``round(mask_ratio * num_patches)`` patches (:func:`eobook.masking.random_mask`).
    Independent masking makes one draw per modality; consistent masking makes one draw and hides the same
    patches in every modality.

    Args:
        batch_size: B (the local batch during training). num_patches: N = (H/P)^2 patches per modality.
        mask_ratio: fraction of masked patches, in [0, 1) (the paper: 0.75).
        consistent: the same mask for all modalities.
        num_modalities: M.
        rng: the step context during training; a generator, a seed or None elsewhere (:func:`eobook.rng.as_random`).
    Returns:
        bool mask [M, B, N], True = masked.
    """
    if num_modalities < 1:
        raise ValueError(f"num_modalities: expected >= 1, got {num_modalities}")
    rng = as_random(rng)
    draws = [random_mask(batch_size, num_patches, mask_ratio, rng) for _ in range(1 if consistent else num_modalities)]
    return torch.stack(draws).expand(num_modalities, -1, -1).clone()                  # [M,B,N]


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
    """Mean squared error over the masked patches only (Sec. 3.2): the per-patch MSE of ``pred`` and
    ``target`` [B,N,L], averaged over the patches where ``mask`` [B,N] is True (:func:`eobook.masking.masked_mean`)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}: expected the same [B,N,L]")
    return masked_mean((pred - target).pow(2).mean(-1), mask)                        # [B,N] -> scalar


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
        """z_{0,i} = Conv2d_i(I_i) + E_emb (eq. 1): {m: [B,C_m,H,W]} -> {m: [B,N,D]}.

        Fus-MAE always feeds ``img_size``; other sides that are multiples of the patch (DINO's local crops in
        chapter 6) get the sine-cosine embedding of their own grid, which needs no interpolation."""
        out = {}
        for m, image in images.items():
            if m not in self.in_chans or image.ndim != 4 or image.shape[1] != self.in_chans[m] \
                    or image.shape[2] % self.patch_size or image.shape[3] % self.patch_size:
                raise ValueError(f"images[{m!r}]: expected [B, {self.in_chans.get(m)}, H, W] with H and W multiples "
                                 f"of {self.patch_size}, got {tuple(image.shape)}")
            out[m] = self.patch_embed[m](image).flatten(2).transpose(1, 2) + self.grid_pos_embed(*image.shape[2:])
        return out

    def grid_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """E_emb [1,N,D] of an input of ``height`` x ``width`` px (the stored one at ``img_size``)."""
        grid = (height // self.patch_size, width // self.patch_size)
        if grid == (self.grid, self.grid):
            return self.pos_embed
        return sincos_pos_embed_2d(self.embed_dim, *grid)[None].to(self.pos_embed)

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 6-7 after the first block: append z_CLS to the tokens [B,L,D], run the blocks, norm: [B,L+1,D]."""
        x = torch.cat([x, self.cls_token.expand(x.shape[0], -1, -1)], 1)             # eq. 6
        return self.norm(self.blocks(x))                                              # eq. 7

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
        x = self.encode_tokens(x)                                                     # eq. 6-7
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
        encoder: an encoder to train instead of a new one (its width and patch replace ``embed_dim`` and
            ``patch_size``; chapter 6's shared backbone, variant "XAD"); it keeps its weights.
    """

    def __init__(self, img_size: int = 128, patch_size: int = 16, embed_dim: int = 384, depth: int = 12,
                 num_heads: int = 6, mlp_ratio: float = 4.0, decoder_dim: int = 192, decoder_depth: int = 4,
                 decoder_heads: int = 6, variant: str = "XAE&D", masking: str = "independent",
                 mask_ratio: float = 0.75, norm_pix_loss: bool = False, in_chans: dict[str, int] | None = None,
                 encoder: FusMAEEncoder | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        if masking not in MASKINGS:
            raise ValueError(f"masking: expected one of {MASKINGS}, got {masking!r}")
        if encoder is not None and (encoder.xattn is not None) != (variant == "XAE&D"):
            raise ValueError(f"encoder: variant {variant!r} needs an encoder "
                             f"{'with' if variant == 'XAE&D' else 'without'} an XAttnEncoder block")
        self.variant, self.masking, self.mask_ratio, self.norm_pix_loss = variant, masking, mask_ratio, norm_pix_loss
        injected = encoder is not None
        self.encoder = encoder if injected else FusMAEEncoder(
            img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, cross_attention_first=variant == "XAE&D",
            in_chans=in_chans)
        embed_dim, patch_size = self.encoder.embed_dim, self.encoder.patch_size
        chans = self.encoder.in_chans
        self.xattn_decoder = nn.ModuleDict({m: XAttnDecoder(embed_dim, num_heads, mlp_ratio) for m in MODALITIES})
        self.decoders = nn.ModuleDict({
            m: ModalityDecoder(embed_dim, decoder_dim, decoder_depth, decoder_heads, self.encoder.grid,
                               patch_size * patch_size * chans[m], mlp_ratio) for m in MODALITIES})
        # an injected encoder keeps the weights it comes with (chapter 6 starts every objective from one)
        for child in self.children():
            if not (injected and child is self.encoder):
                child.apply(_init_weights)
        for token in [*([] if injected else [self.encoder.cls_token]), *(d.mask_token for d in self.decoders.values())]:
            nn.init.normal_(token, std=0.02)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def sample_masks(self, batch_size: int, rng: Random | torch.Generator | int | None = None,
                     masking: str | None = None) -> dict[str, torch.Tensor]:
        """{m: bool [B,N]} masks drawn from ``rng`` with this model's (or the given) masking strategy."""
        masking = masking or self.masking
        if masking not in MASKINGS:
            raise ValueError(f"masking: expected one of {MASKINGS}, got {masking!r}")
        mask = random_masking(batch_size, self.encoder.num_patches, self.mask_ratio, masking == "consistent",
                              len(MODALITIES), rng)
        return dict(zip(MODALITIES, mask))

    def predict(self, images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predicted patches {m: [B,N,P*P*C]} from the visible patches (masks True = hidden)."""
        keep = {m: keep_indices(masks[m]).to(images[m].device) for m in MODALITIES}
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

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        images = self.inputs(batch)                                   # {m: [B,C_m,S,S]} on the batch's device
        masks = self.sample_masks(images["s1"].shape[0], ctx)         # {m: bool [B,N]}, drawn per sample from ctx
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
# Builders
# --------------------------------------------------------------------------------------------------
def build_model(cfg: FusMAEConfig) -> FusMAE:
    """A randomly initialised :class:`FusMAE` shaped by a :class:`FusMAEConfig`."""
    return FusMAE(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                  num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, decoder_dim=cfg.decoder_dim,
                  decoder_depth=cfg.decoder_depth, decoder_heads=cfg.decoder_heads, variant=cfg.variant,
                  masking=cfg.masking, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)


def model_meta(cfg: FusMAEConfig) -> dict[str, Any]:
    """Shape fields that identify a checkpoint (one of another size or variant is refused)."""
    names = ("variant", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth")
    return {"arch": "fus_mae", **{n: getattr(cfg, n) for n in names}}


def parameter_counts(model: FusMAE) -> dict[str, int]:
    """Parameters of each part of the model (Fig. 1): patch projections, XAttnEncoder, transformer blocks,
    XAttnDecoders and the decoders D_i (the XAD variant has no XAttnEncoder: 0)."""
    parts = {"patch projections": model.encoder.patch_embed, "XAttnEncoder": model.encoder.xattn,
             "transformer blocks": model.encoder.blocks, "XAttnDecoders": model.xattn_decoder,
             "decoders D_i": model.decoders}
    return {name: sum(p.numel() for p in part.parameters()) if part is not None else 0 for name, part in parts.items()}
