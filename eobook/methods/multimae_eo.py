"""MultiMAE meets Earth Observation: a multi-modal multi-task masked autoencoder pretrained on MMEarth.

Sosa, J., Rukhovich, D., Kacem, A., Aouada, D. (2024). MultiMAE meets Earth Observation: Pre-training
multi-modal multi-task masked autoencoders for Earth observation tasks (appendix, Sections 2-3).
Model design after Bachmann, R., et al. (2022). MultiMAE: Multi-modal multi-task masked autoencoders. ECCV.

Six modalities (appendix Sec. 2.1): four Sentinel-2 band groups (RGB, IRED, SIRED, EB), DEPTH (ASTER
elevation) and SEG (ESA WorldCover, 12 classes incl. no-data). Each has an input adapter (patch
projection + fixed 2D sin-cos positions; SEG through a class embedding first); the visible tokens of all
modalities and one global token go through one shared ViT encoder. A per-sample Dirichlet draw decides how
many of the ``num_visible`` visible tokens each modality gets. One decoder per modality (Fig. 3)
reconstructs that modality's masked patches; the loss (eq. 1) sums the per-modality losses on masked
tokens only.

Shapes: B batch, M modalities, N = (img_size / P)^2 tokens per modality, V visible tokens in all,
D encoder width, d decoder width, P patch side, K = 12 SEG classes.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.convnext import ConvNeXtBlock
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.data import DataLoader, Dataset

from eobook.data import IGNORE_INDEX, EuroSATMS, GeoBench, MMEarth, dataset_root
from eobook.data.bands import GEOBENCH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS, WORLDCOVER_CLASSES
from eobook.evaluate import (FineTuneConfig, ProbeConfig, extract_features, fine_tune, label_fraction_subset,
                             linear_probe, subset)
from eobook.nn import CrossAttention, patchify, sincos_pos_embed_2d, take_tokens, unpatchify

#: The six pretraining modalities, in token order.
MODALITIES = ("rgb", "ired", "sired", "eb", "depth", "seg")
#: Sentinel-2 band groups (appendix Sec. 2.1); band lists come from ``eobook.data.bands.MODALITY_BANDS``.
SPECTRAL_MODALITIES = ("rgb", "ired", "sired", "eb")
#: SEG classes: the 11 WorldCover classes + no-data (K = 12).
NUM_SEG_CLASSES = len(WORLDCOVER_CLASSES)
#: Input sets of the fine-tuning experiments (appendix Sec. 3 and Fig. 6).
INPUT_SETS = {
    "rgb": ("rgb",),
    "rgb+ired+sired+eb": ("rgb", "ired", "sired", "eb"),
    "rgb+ired+depth": ("rgb", "ired", "depth"),
}


def modality_channels(modality: str) -> int:
    """Channels of a modality's input: bands of an S2 group, 1 for DEPTH, 1 class map for SEG."""
    if modality in MODALITY_BANDS:
        return len(MODALITY_BANDS[modality])
    if modality in ("depth", "seg"):
        return 1
    raise ValueError(f"modality: expected one of {MODALITIES}, got {modality!r}")


# --------------------------------------------------------------------------------------------------
# Band-to-modality mapping and input preparation
# --------------------------------------------------------------------------------------------------
def modality_band_indices(band_order: Sequence[str]) -> dict[str, list[int]]:
    """Channel indices of each S2 group (RGB, IRED, SIRED, EB) in a stack whose bands are ``band_order``.

    E.g. MMEarth's ``sentinel2`` order (B8A before B08) gives RGB -> [3, 2, 1] and EB -> [7, 8].
    """
    missing = sorted({b for bands in MODALITY_BANDS.values() for b in bands} - set(band_order))
    if missing:
        raise ValueError(f"band_order: bands {missing} are missing (got {tuple(band_order)})")
    return {m: [list(band_order).index(b) for b in MODALITY_BANDS[m]] for m in SPECTRAL_MODALITIES}


def geobench_band_codes(names: Sequence[str]) -> tuple[str, ...]:
    """GEO-Bench band dataset names ("04 - Red", ...) -> S2 band codes ("B04", ...)."""
    unknown = [n for n in names if n not in GEOBENCH_S2_BANDS]
    if unknown:
        raise ValueError(f"names: not GEO-Bench Sentinel-2 band names: {unknown}")
    return tuple(S2_L1C_BANDS[GEOBENCH_S2_BANDS.index(n)] for n in names)


def split_s2(s2: torch.Tensor, band_order: Sequence[str], modalities: Sequence[str] = SPECTRAL_MODALITIES
             ) -> dict[str, torch.Tensor]:
    """Split a Sentinel-2 stack [B,C,H,W] (bands ``band_order``) into the requested band groups."""
    if s2.ndim != 4 or s2.shape[1] != len(band_order):
        raise ValueError(f"s2: expected [B, {len(band_order)}, H, W] for band_order, got {tuple(s2.shape)}")
    index = modality_band_indices(band_order)
    return {m: s2[:, index[m]] for m in modalities}


def resize_modalities(inputs: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Resize every modality to ``size`` x ``size``: bilinear (antialiased) for continuous values,
    nearest neighbour for SEG so that class ids stay integer ids (the authors' code resized SEG
    bilinearly and cast to int, which invents classes at boundaries).

    Args:
        inputs: modality -> [B,C,H,W] float (SEG: [B,H,W] int64).
    """
    out = {}
    for m, x in inputs.items():
        if x.shape[-2:] == (size, size):
            out[m] = x
        elif m == "seg":
            out[m] = F.interpolate(x[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
        else:
            out[m] = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out


def random_hflip(inputs: dict[str, torch.Tensor], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Flip each sample left-right with probability ``p``, the same way in every modality."""
    first = next(iter(inputs.values()))
    flip = (torch.rand(first.shape[0], generator=generator) < p).to(first.device)
    return {m: torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x) for m, x in inputs.items()}


# --------------------------------------------------------------------------------------------------
# Dirichlet masking (MultiMAE Sec. 3.3)
# --------------------------------------------------------------------------------------------------
def dirichlet_token_allocation(batch_size: int, num_modalities: int, num_visible: int, alpha: float = 1.0,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """How many visible tokens each modality gets, per sample: int64 [B, M], each row summing to ``num_visible``.

    Proportions are drawn from a symmetric Dirichlet(alpha) (alpha = 1: uniform over the simplex) and
    turned into integers by largest-remainder rounding, so every row sums exactly to ``num_visible``.
    The draw comes from ``generator`` (a resumed run draws the same masks).
    """
    if batch_size < 1 or num_modalities < 1 or num_visible < 0:
        raise ValueError(f"batch_size, num_modalities: expected >= 1 and num_visible >= 0, got "
                         f"{batch_size}, {num_modalities}, {num_visible}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected a value > 0, got {alpha}")
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # Dirichlet.sample takes no generator: seed a private stream
        torch.manual_seed(seed)
        shares = torch.distributions.Dirichlet(torch.full((num_modalities,), float(alpha))).sample((batch_size,))
    exact = shares.double() * num_visible                                    # [B,M]
    counts = exact.floor().long()
    remainder = num_visible - counts.sum(1, keepdim=True)                    # [B,1], < M
    order = (exact - counts).argsort(dim=1, descending=True)
    bonus = (torch.arange(num_modalities) < remainder).long()               # +1 to the largest remainders
    return counts.scatter_add(1, order, bonus)


def visible_token_mask(counts: torch.Tensor, tokens_per_modality: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random visible tokens within each modality: bool [B, M, N], ``counts[b, m]`` True per row."""
    if int(counts.max()) > tokens_per_modality or int(counts.min()) < 0:
        raise ValueError(f"counts: expected values in [0, {tokens_per_modality}], got {counts.min()}..{counts.max()}")
    b, m = counts.shape
    noise = torch.rand(b, m, tokens_per_modality, generator=generator)
    rank = noise.argsort(-1).argsort(-1)                                     # random rank of each token
    return rank < counts.unsqueeze(-1)


def visible_indices(visible: torch.Tensor) -> torch.Tensor:
    """Flat indices (modality * N + position) of the visible tokens, in token order: [B, V]."""
    flat = visible.flatten(1)                                                # [B, M*N]
    num_visible = int(flat.sum(1)[0])
    if not (flat.sum(1) == num_visible).all():
        raise ValueError("visible: every sample must have the same number of visible tokens")
    return (~flat).int().argsort(dim=1, stable=True)[:, :num_visible]


# --------------------------------------------------------------------------------------------------
# Input adapters and encoder
# --------------------------------------------------------------------------------------------------
class PatchInputAdapter(nn.Module):
    """Patch projection + fixed 2D sin-cos positions: [B,C,H,W] -> [B,N,D]. SEG ids ([B,H,W] int64)
    first pass through a class embedding (``num_classes`` > 0) and are then patch-projected."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, img_size: int, num_classes: int = 0,
                 class_dim: int = 64):
        super().__init__()
        self.in_chans, self.patch_size, self.num_classes = in_chans, patch_size, num_classes
        self.class_embed = nn.Embedding(num_classes, class_dim) if num_classes else None
        self.proj = nn.Conv2d(class_dim if num_classes else in_chans, dim, patch_size, stride=patch_size)
        g = img_size // patch_size
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, g, g)[None], persistent=False)  # [1,N,D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.class_embed is not None:
            if x.ndim != 3 or x.dtype != torch.int64:
                raise ValueError(f"seg: expected class ids int64 [B,H,W], got {x.dtype} {tuple(x.shape)}")
            x = self.class_embed(x).permute(0, 3, 1, 2)                       # [B,class_dim,H,W]
        elif x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"input: expected [B,{self.in_chans},H,W], got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed       # [B,N,D]


class MultiMAEEncoder(nn.Module):
    """Input adapters for the six modalities, a global token and a shared ViT (timm ``Block``s).

    ``forward(inputs, keep)`` encodes the tokens at flat indices ``keep`` of the modalities in ``inputs``
    (all tokens when ``keep`` is None) and returns normed [B, 1+V, D] with the global token first.
    """

    def __init__(self, img_size: int = 56, patch_size: int = 8, dim: int = 768, depth: int = 12,
                 num_heads: int = 12, seg_class_dim: int = 64, drop_path_rate: float = 0.0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size, self.dim = img_size, patch_size, dim
        self.tokens_per_modality = (img_size // patch_size) ** 2
        self.adapters = nn.ModuleDict({
            m: PatchInputAdapter(modality_channels(m), dim, patch_size, img_size,
                                 num_classes=NUM_SEG_CLASSES if m == "seg" else 0, class_dim=seg_class_dim)
            for m in MODALITIES})
        self.global_token = nn.Parameter(torch.zeros(1, 1, dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*[Block(dim, num_heads, qkv_bias=True, drop_path=r) for r in rates])
        self.norm = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.global_token, std=0.02)

    def tokens(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """All tokens of the modalities in ``inputs``, in ``MODALITIES`` order: [B, M*N, D]."""
        present = [m for m in MODALITIES if m in inputs]
        unknown = set(inputs) - set(MODALITIES)
        if unknown or not present:
            raise ValueError(f"inputs: expected keys among {MODALITIES}, got {sorted(inputs)}")
        return torch.cat([self.adapters[m](inputs[m]) for m in present], dim=1)

    def forward(self, inputs: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(inputs)
        if keep is not None:
            x = take_tokens(x, keep)                                          # [B,V,D]
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x))                                      # [B,1+V,D]

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of all output tokens (global + patches): [B,D], the input of the linear classifier."""
        return self.forward(inputs).mean(1)


# --------------------------------------------------------------------------------------------------
# Decoders (Fig. 3)
# --------------------------------------------------------------------------------------------------
class MultiMAEDecoder(nn.Module):
    """One modality's decoder (Fig. 3): linear D -> d, positional + modality embeddings, one cross-attention
    layer (queries: this modality's tokens incl. mask tokens; context: all visible tokens of all modalities +
    the global token), MLP, ``depth`` transformer blocks, linear to ``out_per_pixel`` x P x P per token."""

    def __init__(self, modality_index: int, num_modalities: int, tokens_per_modality: int, encoder_dim: int,
                 dim: int, depth: int, num_heads: int, patch_size: int, out_per_pixel: int):
        super().__init__()
        self.modality_index, self.num_modalities, self.n = modality_index, num_modalities, tokens_per_modality
        self.patch_size, self.out_per_pixel = patch_size, out_per_pixel
        g = int(round(tokens_per_modality ** 0.5))
        self.proj_context = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.modality_embed = nn.Parameter(torch.zeros(num_modalities, dim))   # learned, one per modality
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, g, g), persistent=False)  # [N,d]
        self.query_norm, self.context_norm, self.mlp_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.mlp = Mlp(dim, 4 * dim)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_per_pixel * patch_size ** 2)
        for p in (self.mask_token, self.modality_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, encoded: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """encoded [B,1+V,D] (global token first), keep [B,V] flat indices -> [B, N, out_per_pixel*P*P]."""
        b, d = encoded.shape[0], self.mask_token.shape[-1]
        glob, visible = self.proj_context(encoded).split([1, keep.shape[1]], dim=1)  # [B,1,d], [B,V,d]
        grid = self.mask_token.expand(b, self.num_modalities * self.n, d)      # every token masked ...
        grid = grid.scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), visible)  # ... except the visible ones
        start = self.modality_index * self.n
        x = grid[:, start:start + self.n] + self.pos_embed + self.modality_embed[self.modality_index]  # [B,N,d]
        visible = visible + self.pos_embed[keep % self.n] + self.modality_embed[keep // self.n]
        context = torch.cat([glob, visible], dim=1)                           # [B,1+V,d]
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context))
        x = x + self.mlp(self.mlp_norm(x))
        return self.head(self.norm(self.blocks(x)))


# --------------------------------------------------------------------------------------------------
# Loss (eq. 1)
# --------------------------------------------------------------------------------------------------
def masked_mean(per_token: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean of a per-token loss [B,N] over the masked tokens (``masked`` [B,N] bool) only."""
    weights = masked.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def reconstruction_loss(modality: str, pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                        patch_size: int, depth_loss: str = "mse") -> torch.Tensor:
    """One term of eq. (1): the decoder's error on this modality's masked tokens.

    MSE for the S2 groups (eq. 1), MSE or L1 (``depth_loss``) for DEPTH, per-pixel cross-entropy over
    the 12 classes for SEG (an MSE on class ids has no meaning).

    Args:
        pred: decoder output [B, N, out*P*P] (out = C, or K logits for SEG).
        target: the unmasked input [B,C,H,W] (SEG: class ids [B,H,W]).
        masked: [B,N] bool, True where the token was hidden from the encoder.
    """
    if modality == "seg":
        logits = unpatchify(pred, patch_size, NUM_SEG_CLASSES)               # [B,K,H,W]
        per_pixel = F.cross_entropy(logits, target, reduction="none")         # [B,H,W]
        return masked_mean(patchify(per_pixel[:, None], patch_size).mean(-1), masked)
    error = pred - patchify(target, patch_size)                              # [B,N,C*P*P]
    if modality == "depth" and depth_loss == "l1":
        return masked_mean(error.abs().mean(-1), masked)
    return masked_mean(error.pow(2).mean(-1), masked)


# --------------------------------------------------------------------------------------------------
# The pretraining module
# --------------------------------------------------------------------------------------------------
class MultiMAE(nn.Module):
    """MultiMAE pretraining on six EO modalities; ``forward(batch, ctx)`` returns eq. (1) and its terms."""

    def __init__(self, img_size: int = 56, patch_size: int = 8, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, num_visible: int = 49, dirichlet_alpha: float = 1.0, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 8, seg_class_dim: int = 64, depth_loss: str = "mse",
                 hflip_p: float = 0.5, drop_path_rate: float = 0.0):
        super().__init__()
        self.encoder = MultiMAEEncoder(img_size, patch_size, embed_dim, depth, num_heads, seg_class_dim, drop_path_rate)
        n = self.encoder.tokens_per_modality
        if not 0 < num_visible <= n:
            raise ValueError(f"num_visible: expected 1..{n} (tokens per modality), got {num_visible}")
        if depth_loss not in ("mse", "l1"):
            raise ValueError(f"depth_loss: expected 'mse' or 'l1', got {depth_loss!r}")
        self.num_visible, self.alpha, self.depth_loss, self.hflip_p = num_visible, dirichlet_alpha, depth_loss, hflip_p
        self.decoders = nn.ModuleDict({
            m: MultiMAEDecoder(i, len(MODALITIES), n, embed_dim, decoder_dim, decoder_depth, decoder_heads,
                               patch_size, NUM_SEG_CLASSES if m == "seg" else modality_channels(m))
            for i, m in enumerate(MODALITIES)})

    def prepare(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The six modalities of a batch at the model's input size, flipped left-right when ``generator`` is given."""
        missing = [m for m in MODALITIES if m not in batch]
        if missing:
            raise ValueError(f"batch: missing modalities {missing} (has {sorted(batch)})")
        inputs = resize_modalities({m: batch[m] for m in MODALITIES}, self.encoder.img_size)
        return random_hflip(inputs, self.hflip_p, generator) if generator is not None else inputs

    def sample_masks(self, batch_size: int, generator: torch.Generator | None, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dirichlet allocation + uniform choice within modalities -> (visible [B,M,N] bool, keep [B,V])."""
        counts = dirichlet_token_allocation(batch_size, len(MODALITIES), self.num_visible, self.alpha, generator)
        visible = visible_token_mask(counts, self.encoder.tokens_per_modality, generator)
        return visible.to(device), visible_indices(visible).to(device)

    def reconstruct(self, inputs: dict[str, torch.Tensor], visible: torch.Tensor, keep: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """Every decoder's output [B, N, out*P*P] for the visible tokens ``keep``."""
        encoded = self.encoder(inputs, keep)
        return {m: self.decoders[m](encoded, keep) for m in MODALITIES}

    def forward(self, batch: dict[str, Any], ctx) -> dict[str, torch.Tensor]:
        inputs = self.prepare(batch, ctx.generator)
        b = inputs["rgb"].shape[0]
        visible, keep = self.sample_masks(b, ctx.generator, inputs["rgb"].device)
        preds = self.reconstruct(inputs, visible, keep)
        terms = {f"loss_{m}": reconstruction_loss(m, preds[m], inputs[m], ~visible[:, i],
                                                  self.encoder.patch_size, self.depth_loss)
                 for i, m in enumerate(MODALITIES)}
        return {"loss": sum(terms.values()), **terms}                         # eq. (1): sum over N = 6

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no decay on biases, norms, embeddings and tokens (MAE)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            skip = p.ndim < 2 or name.endswith(("token", "modality_embed")) or "class_embed" in name
            (no_decay if skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0, "apply_wd_schedule": False}]


def predictions_to_images(modality: str, pred: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Decoder output [B,N,out*P*P] -> images [B,C,H,W] (SEG: class ids [B,H,W])."""
    if modality == "seg":
        return unpatchify(pred, patch_size, NUM_SEG_CLASSES).argmax(1)
    return unpatchify(pred, patch_size, modality_channels(modality))


# --------------------------------------------------------------------------------------------------
# Pretraining entry point (eobook.train.pretrain)
# --------------------------------------------------------------------------------------------------


def build_model(cfg) -> MultiMAE:
    return MultiMAE(cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_visible,
                    cfg.dirichlet_alpha, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.seg_class_dim,
                    cfg.depth_loss, cfg.hflip_p, cfg.drop_path_rate)


def model_meta(cfg) -> dict[str, Any]:
    """The model-shape fields a checkpoint must match."""
    names = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth",
             "decoder_heads", "seg_class_dim")
    return {"arch": "multimae", **{n: getattr(cfg, n) for n in names}}


def build_pretraining(cfg):
    """(module, MMEarth train split, default collate, meta) for :func:`eobook.train.pretrain`."""
    dataset = MMEarth(dataset_root(cfg) / "MMEarth" / cfg.mmearth_file, modalities=MODALITIES, split="train")
    return build_model(cfg), dataset, None, model_meta(cfg)


# --------------------------------------------------------------------------------------------------
# Fine-tuning (appendix Sec. 3): linear classifier, or a head of four ConvNeXt blocks
# --------------------------------------------------------------------------------------------------
#: Classes of the downstream tasks (appendix Table 3); ``m-landcover-seg`` is the sample world's
#: GEO-Bench-style segmentation task (9 Dynamic World classes), standing in for the paper's two.
TASK_CLASSES = {"m-eurosat": 10, "m-brick-kiln": 2, "m-so2sat": 17, "m-bigearthnet": 43, "eurosat": 10,
                "fmow": 62, "m-SA-crop-type": 10, "m-cashew-plantation": 7, "m-landcover-seg": 9}


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


def task_inputs(batch: dict[str, Any], band_order: Sequence[str], modalities: Sequence[str],
                img_size: int) -> dict[str, torch.Tensor]:
    """A downstream batch ({"s2": [B,C,H,W], optionally "depth"}) as the encoder's modality dict."""
    inputs = split_s2(batch["s2"], band_order, [m for m in modalities if m in SPECTRAL_MODALITIES])
    if "depth" in modalities:
        if "depth" not in batch:
            raise ValueError("batch: the input set needs 'depth', which this task does not provide")
        inputs["depth"] = batch["depth"]
    return resize_modalities(inputs, img_size)


@dataclasses.dataclass
class DownstreamTask:
    """A downstream task's splits and how to read them."""
    name: str
    train: Any
    test: Any
    band_order: tuple[str, ...]
    kind: str              # "multiclass", "multilabel" or "segmentation"
    num_classes: int


def load_task(root, name: str, max_train: int = 0, max_test: int = 0, seed: int = 0) -> DownstreamTask:
    """A GEO-Bench task (``<root>/GEO-Bench``) or EuroSAT-MS (``name="eurosat"``), capped to seeded random
    subsets of ``max_train`` / ``max_test`` samples (0 = all)."""
    if name not in TASK_CLASSES:
        raise ValueError(f"task: expected one of {sorted(TASK_CLASSES)}, got {name!r}")
    root = Path(root)
    if name == "eurosat":
        train, test = (EuroSATMS(root / "EuroSAT-MS", split=s) for s in ("train", "test"))
        band_order = S2_L1C_BANDS
    else:
        train, test = (GeoBench(root / "GEO-Bench", task=name, split=s) for s in ("train", "test"))
        band_order = geobench_band_codes(train.bands)
    label = train[0]["label"]
    kind = ("segmentation" if label.ndim == 2 else "multilabel" if label.is_floating_point() else "multiclass")
    capped = []
    for ds, cap in ((train, max_train), (test, max_test)):
        ds = subset(ds, label_fraction_subset(len(ds), cap / len(ds), seed)) if 0 < cap < len(ds) else ds
        capped.append(ds)
    return DownstreamTask(name, capped[0], capped[1], tuple(band_order), kind, TASK_CLASSES[name])


def evaluate_task(encoder: MultiMAEEncoder, task: DownstreamTask, input_set: str, cfg,
                  device: torch.device | str = "cpu") -> tuple[dict[str, float], MultiMAETaskModel | None]:
    """The paper's two protocols for one task and input set (appendix Sec. 3, Fig. 4).

    Classification: linear probing (frozen encoder, linear classifier on mean-pooled tokens) and end-to-end
    fine-tuning. Segmentation: ConvNeXt head with the encoder frozen, and end to end. ``encoder`` is
    copied, never changed. Returns ({"frozen": score, "finetune": score} in percent, the fine-tuned
    segmentation model or None); the score is OA (multiclass), macro mAP (multilabel) or mIoU.
    """
    modalities = INPUT_SETS[input_set]
    segmentation = task.kind == "segmentation"
    metric = {"multiclass": "OA", "multilabel": "mAP_macro", "segmentation": "mIoU"}[task.kind]

    def forward(model: MultiMAETaskModel, batch: dict[str, Any]) -> torch.Tensor:
        inputs = task_inputs(batch, task.band_order, modalities, cfg.img_size)
        return model(inputs, batch["s2"].shape[-2:])

    ft = FineTuneConfig(task=task.kind, epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size,
                        lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay, ignore_index=IGNORE_INDEX,
                        seed=cfg.seed)
    scores, seg_model = {}, None
    for frozen in (True, False):
        model = MultiMAETaskModel(copy.deepcopy(encoder), modalities, task.num_classes, segmentation,
                                  cfg.seg_head_dim).to(device)
        if frozen and not segmentation:  # linear probing on frozen features
            model.eval()
            features = [extract_features(lambda b: model.encoder.features(
                task_inputs(b, task.band_order, modalities, cfg.img_size)), ds, batch_size=cfg.finetune_batch_size,
                device=device) for ds in (task.train, task.test)]
            probe = ProbeConfig(task=task.kind, epochs=cfg.probe_epochs, lr=cfg.probe_lr,
                                batch_size=min(256, len(task.train)), seed=cfg.seed)
            result = linear_probe(*features[0], *features[1], probe, num_classes=task.num_classes)
        else:
            cfg_ft = dataclasses.replace(ft, freeze_encoder=frozen)
            result, _ = fine_tune(model, task.train, task.test, forward, cfg_ft, task.num_classes, device=device,
                                  encoder_params=list(model.encoder.parameters()))
            seg_model = model if segmentation and not frozen else seg_model
        scores["frozen" if frozen else "finetune"] = result[metric]
    return scores, seg_model


def build_encoder(cfg, seed: int | None = None) -> MultiMAEEncoder:
    """A freshly initialised encoder of the profile's shape (seeded: the random-init baseline)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        return build_model(cfg).encoder


def evaluate_downstream(encoders: dict[str, MultiMAEEncoder], cfg, device: torch.device | str = "cpu"):
    """Every task x input set x protocol for each named encoder (e.g. {"MultiMAE": ..., "random init": ...}).

    Returns (a list of result rows {"task", "input_set", "protocol", "init", "metric", "value"}, the
    end-to-end segmentation models by (task, input_set, init) for figures).
    """
    root = dataset_root(cfg)
    rows, seg_models = [], {}
    for name in (*cfg.classification_tasks, *cfg.segmentation_tasks):
        task = load_task(root, name, cfg.eval_max_train, cfg.eval_max_test, cfg.seed)
        metric = {"multiclass": "OA", "multilabel": "mAP", "segmentation": "mIoU"}[task.kind]
        protocols = (("frozen encoder", "end-to-end") if task.kind == "segmentation"
                     else ("linear probing", "end-to-end"))
        for input_set in cfg.input_sets:
            for init, encoder in encoders.items():
                scores, seg_model = evaluate_task(encoder, task, input_set, cfg, device)
                for protocol, value in zip(protocols, (scores["frozen"], scores["finetune"])):
                    rows.append({"task": name, "input_set": input_set, "protocol": protocol, "init": init,
                                 "metric": metric, "value": value})
                if seg_model is not None:
                    seg_models[(name, input_set, init)] = (seg_model, task)
    return rows, seg_models


# --------------------------------------------------------------------------------------------------
# Figure data (Fig. 5: masked input / reconstruction / ground truth)
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_examples(model: MultiMAE, batch: dict[str, Any], generator: torch.Generator,
                            modalities: Sequence[str] = ("rgb", "depth", "seg")) -> dict[str, Any]:
    """Fig. 5 data: per modality ``masked`` input, ``reconstruction`` (the prediction on masked patches, the
    input on visible ones) and ``original``, each [B,C,H,W] (hidden pixels NaN; SEG: class ids [B,1,H,W],
    hidden = -1); plus ``counts`` [B,M], the visible tokens per modality.
    """
    model.eval()
    inputs = model.prepare(batch)
    b, p = inputs["rgb"].shape[0], model.encoder.patch_size
    visible, keep = model.sample_masks(b, generator, inputs["rgb"].device)
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
