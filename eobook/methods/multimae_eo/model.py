"""MultiMAE-EO's modalities, Dirichlet masking, input adapters, encoder, decoders, objective and pretraining module.

Six modalities (appendix Sec. 2.1): four Sentinel-2 band groups (RGB, IRED, SIRED, EB), DEPTH (ASTER
elevation) and SEG (ESA WorldCover, 12 classes incl. no-data). Each has an input adapter (patch
projection + fixed 2D sin-cos positions; SEG through a class embedding first); the visible tokens of all
modalities and one global token go through one shared ViT encoder. A per-sample Dirichlet draw decides how
many of the ``num_visible`` visible tokens each modality gets. One decoder per modality (Fig. 3)
reconstructs that modality's masked patches; the loss (eq. 1) sums the per-modality losses on masked
tokens only.

Shapes: B batch, M modalities, N = (img_size / P)^2 tokens per modality, V visible tokens in all,
D encoder width, d decoder width, P patch side, K = 12 SEG classes.

Everything random inside a training step (the flip, the Dirichlet allocation, the visible tokens) is drawn
per sample from the step's :class:`eobook.rng.Random` source, so a resumed run and a DDP run draw what one
uninterrupted process draws.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from scipy.special import gammaincinv
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from ... import augment, masking
from ...data.bands import GEOBENCH_S2_BANDS, MODALITY_BANDS, S2_L1C_BANDS, WORLDCOVER_CLASSES
from ...nn import CrossAttention, patchify, sincos_pos_embed_2d, unpatchify
from ...rng import Random, as_random
from ...train import StepContext
from .config import MultiMAEConfig

#: The six pretraining modalities, in token order.
MODALITIES = ("rgb", "ired", "sired", "eb", "depth", "seg")
#: Sentinel-2 band groups (appendix Sec. 2.1); band lists come from ``eobook.data.bands.MODALITY_BANDS``.
SPECTRAL_MODALITIES = ("rgb", "ired", "sired", "eb")
#: SEG classes: the 11 WorldCover classes + no-data (K = 12).
NUM_SEG_CLASSES = len(WORLDCOVER_CLASSES)


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


# --------------------------------------------------------------------------------------------------
# Dirichlet masking (MultiMAE Sec. 3.3)
# --------------------------------------------------------------------------------------------------
def dirichlet_shares(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Symmetric Dirichlet(alpha) proportions from uniforms: u [B,M] in [0, 1) -> shares [B,M] float64.

    Each u becomes a Gamma(alpha, 1) variate by the inverse CDF (``gammaincinv(alpha, u)``, the inverse of
    the regularised lower incomplete gamma function); independent Gamma(alpha) variates divided by their
    sum are exactly Dirichlet(alpha, ..., alpha). For alpha = 1 the variates are -log(1 - u).
    """
    if not alpha > 0:
        raise ValueError(f"alpha: expected a value > 0, got {alpha}")
    gamma = torch.from_numpy(gammaincinv(float(alpha), u.double().numpy()))       # [B,M] ~ Gamma(alpha, 1)
    total = gamma.sum(1, keepdim=True)                                            # [B,1]
    # a row of all-zero variates (every u == 0, or underflow for a tiny alpha) gets equal shares
    return torch.where(total > 0, gamma / total.clamp_min(1e-300), 1.0 / u.shape[1])


def largest_remainder(shares: torch.Tensor, total: int) -> torch.Tensor:
    """Integers [B,M] proportional to ``shares`` [B,M] (rows summing to 1) whose rows sum exactly to ``total``:
    the floors of ``shares * total``, plus one for the largest remainders."""
    exact = shares.double() * total                                          # [B,M]
    counts = exact.floor().long()
    remainder = total - counts.sum(1, keepdim=True)                          # [B,1], < M
    order = (exact - counts).argsort(dim=1, descending=True)
    bonus = (torch.arange(shares.shape[1]) < remainder).long()               # +1 to the largest remainders
    return counts.scatter_add(1, order, bonus)


def dirichlet_token_allocation(batch_size: int, num_modalities: int, num_visible: int, alpha: float = 1.0,
                               rng: Random | torch.Generator | int | None = None) -> torch.Tensor:
    """How many visible tokens each modality gets, per sample: int64 [B, M], each row summing to ``num_visible``.

    Proportions are drawn from a symmetric Dirichlet(alpha) (alpha = 1: uniform over the simplex) by
    :func:`dirichlet_shares` from per-sample uniforms of ``rng`` (the step context in training, see
    :func:`eobook.rng.as_random`), and turned into integers by largest-remainder rounding, so every row sums
    exactly to ``num_visible``.
    """
    if batch_size < 1 or num_modalities < 1 or num_visible < 0:
        raise ValueError(f"batch_size, num_modalities: expected >= 1 and num_visible >= 0, got "
                         f"{batch_size}, {num_modalities}, {num_visible}")
    if not alpha > 0:
        raise ValueError(f"alpha: expected a value > 0, got {alpha}")
    u = as_random(rng).rand(batch_size, num_modalities)                      # [B,M] ~ U[0, 1)
    return largest_remainder(dirichlet_shares(u, alpha), num_visible)


def visible_token_mask(counts: torch.Tensor, tokens_per_modality: int,
                       rng: Random | torch.Generator | int | None = None) -> torch.Tensor:
    """Uniformly random visible tokens within each modality: bool [B, M, N], ``counts[b, m]`` True per row."""
    if int(counts.max()) > tokens_per_modality or int(counts.min()) < 0:
        raise ValueError(f"counts: expected values in [0, {tokens_per_modality}], got {counts.min()}..{counts.max()}")
    b, m = counts.shape
    noise = as_random(rng).rand(b, m, tokens_per_modality)                   # [B,M,N]
    rank = noise.argsort(-1).argsort(-1)                                     # random rank of each token
    return rank < counts.unsqueeze(-1)


def visible_indices(visible: torch.Tensor) -> torch.Tensor:
    """Flat indices (modality * N + position) of the visible tokens, in token order: [B,M,N] -> [B, V]."""
    return masking.keep_indices(~visible.flatten(1))


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

    def no_weight_decay(self) -> set[str]:
        """The class embedding is an embedding table, not a weight matrix: no decay (MAE, MultiMAE)."""
        return {"class_embed.weight"} if self.class_embed is not None else set()

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

    def no_weight_decay(self) -> set[str]:
        return {"global_token"}

    def tokens(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """All tokens of the modalities in ``inputs``, in ``MODALITIES`` order: [B, M*N, D]."""
        present = [m for m in MODALITIES if m in inputs]
        unknown = set(inputs) - set(MODALITIES)
        if unknown or not present:
            raise ValueError(f"inputs: expected keys among {MODALITIES}, got {sorted(inputs)}")
        return torch.cat([self.adapters[m](inputs[m]) for m in present], dim=1)

    def forward(self, inputs: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokens(inputs)                                               # [B,M*N,D]
        if keep is not None:
            x = masking.take_tokens(x, keep)                                  # [B,V,D]
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

    def no_weight_decay(self) -> set[str]:
        """Mask token and modality embeddings are embeddings: no decay (MAE, MultiMAE)."""
        return {"mask_token", "modality_embed"}

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
def reconstruction_loss(modality: str, pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                        patch_size: int, depth_loss: str = "mse") -> torch.Tensor:
    """One term of eq. (1): the decoder's error on this modality's masked tokens.

    MSE for the S2 groups (eq. 1), MSE or L1 (``depth_loss``) for DEPTH, per-pixel cross-entropy over
    the 12 classes for SEG (an MSE on class ids has no meaning).

    Args:
        pred: decoder output [B, N, out*P*P] (out = C, or K logits for SEG).
        target: the unmasked input [B,C,H,W] (SEG: class ids [B,H,W]).
        masked: [B,N] bool, True where the token was hidden from the encoder (at least one in the batch).
    """
    if modality == "seg":
        logits = unpatchify(pred, patch_size, NUM_SEG_CLASSES)               # [B,K,H,W]
        per_pixel = F.cross_entropy(logits, target, reduction="none")         # [B,H,W]
        return masking.masked_mean(patchify(per_pixel[:, None], patch_size).mean(-1), masked)
    error = pred - patchify(target, patch_size)                              # [B,N,C*P*P]
    if modality == "depth" and depth_loss == "l1":
        return masking.masked_mean(error.abs().mean(-1), masked)
    return masking.masked_mean(error.pow(2).mean(-1), masked)


def predictions_to_images(modality: str, pred: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Decoder output [B,N,out*P*P] -> images [B,C,H,W] (SEG: class ids [B,H,W])."""
    if modality == "seg":
        return unpatchify(pred, patch_size, NUM_SEG_CLASSES).argmax(1)
    return unpatchify(pred, patch_size, modality_channels(modality))


# --------------------------------------------------------------------------------------------------
# The pretraining module
# --------------------------------------------------------------------------------------------------
class MultiMAE(nn.Module):
    """MultiMAE pretraining on six EO modalities; ``forward(batch, ctx)`` returns eq. (1) and its terms.

    Parameters that are embeddings or tokens (global and mask tokens, modality embeddings, the SEG class
    embedding) are named by the submodules' ``no_weight_decay()`` and do not decay (timm's convention,
    honoured by :func:`eobook.train.param_groups`).

    ``encoder`` replaces the :class:`MultiMAEEncoder` with any module of its interface (``img_size``,
    ``patch_size``, ``tokens_per_modality``, ``dim``, ``forward(inputs, keep) -> [B, 1+V, D]``, global token
    first) over ``modalities`` (name -> channels, each reconstructed with the MSE of eq. 1): how chapter 6
    trains this objective on its shared backbone. The defaults are the paper's six modalities.
    """

    def __init__(self, img_size: int = 56, patch_size: int = 8, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, num_visible: int = 49, dirichlet_alpha: float = 1.0, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 8, seg_class_dim: int = 64, depth_loss: str = "mse",
                 hflip_p: float = 0.5, drop_path_rate: float = 0.0, encoder: nn.Module | None = None,
                 modalities: dict[str, int] | None = None):
        super().__init__()
        # An injected encoder (the side-by-side chapter's shared backbone) brings its own modalities: their
        # names and channels, reconstructed with the MSE of eq. (1); its shape fields replace the ones above.
        self.modalities = tuple(modalities) if modalities else MODALITIES
        if encoder is None:
            encoder = MultiMAEEncoder(img_size, patch_size, embed_dim, depth, num_heads, seg_class_dim, drop_path_rate)
        for name in ("img_size", "patch_size", "tokens_per_modality", "dim"):
            if not hasattr(encoder, name):
                raise ValueError(f"encoder: expected an attribute {name!r} (see MultiMAEEncoder)")
        self.encoder, embed_dim, patch_size = encoder, encoder.dim, encoder.patch_size
        n = self.encoder.tokens_per_modality
        if not 0 < num_visible <= n:
            raise ValueError(f"num_visible: expected 1..{n} (tokens per modality), got {num_visible}")
        if depth_loss not in ("mse", "l1"):
            raise ValueError(f"depth_loss: expected 'mse' or 'l1', got {depth_loss!r}")
        self.num_visible, self.alpha, self.depth_loss, self.hflip_p = num_visible, dirichlet_alpha, depth_loss, hflip_p
        out_channels = dict(modalities) if modalities else {
            m: NUM_SEG_CLASSES if m == "seg" else modality_channels(m) for m in MODALITIES}
        self.decoders = nn.ModuleDict({
            m: MultiMAEDecoder(i, len(self.modalities), n, embed_dim, decoder_dim, decoder_depth, decoder_heads,
                               patch_size, out_channels[m])
            for i, m in enumerate(self.modalities)})

    def prepare(self, batch: dict[str, Any], rng: Random | torch.Generator | int | None = None
                ) -> dict[str, torch.Tensor]:
        """The six modalities of a batch at the model's input size, each sample flipped left-right (all
        modalities alike) with probability ``hflip_p`` when ``rng`` is given (none without it)."""
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise ValueError(f"batch: missing modalities {missing} (has {sorted(batch)})")
        inputs = resize_modalities({m: batch[m] for m in self.modalities}, self.encoder.img_size)
        return augment.random_hflip(inputs, self.hflip_p, as_random(rng)) if rng is not None else inputs

    def sample_masks(self, batch_size: int, rng: Random | torch.Generator | int | None, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dirichlet allocation + uniform choice within modalities -> (visible [B,M,N] bool, keep [B,V])."""
        rng = as_random(rng)
        counts = dirichlet_token_allocation(batch_size, len(self.modalities), self.num_visible, self.alpha, rng)
        visible = visible_token_mask(counts, self.encoder.tokens_per_modality, rng)
        return visible.to(device), visible_indices(visible).to(device)

    def reconstruct(self, inputs: dict[str, torch.Tensor], visible: torch.Tensor, keep: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
        """Every decoder's output [B, N, out*P*P] for the visible tokens ``keep``."""
        encoded = self.encoder(inputs, keep)                                  # [B,1+V,D]
        return {m: self.decoders[m](encoded, keep) for m in self.modalities}

    def loss_terms(self, inputs: dict[str, torch.Tensor], visible: torch.Tensor, preds: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
        """The six terms of eq. (1), ``{"loss_<modality>": scalar}``, each on that modality's masked tokens."""
        return {f"loss_{m}": reconstruction_loss(m, preds[m], inputs[m], ~visible[:, i], self.encoder.patch_size,
                                                 self.depth_loss)
                for i, m in enumerate(self.modalities)}

    def forward(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        inputs = self.prepare(batch, ctx)                                     # flips drawn per sample from ctx
        first = inputs[self.modalities[0]]
        visible, keep = self.sample_masks(first.shape[0], ctx, first.device)       # [B,M,N], [B,V]
        terms = self.loss_terms(inputs, visible, self.reconstruct(inputs, visible, keep))
        return {"loss": sum(terms.values()), **terms}                         # eq. (1): sum over N = 6


def build_model(cfg: MultiMAEConfig) -> MultiMAE:
    """The pretraining module of the profile's shape, random weights (torch's global generator)."""
    return MultiMAE(cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_visible,
                    cfg.dirichlet_alpha, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.seg_class_dim,
                    cfg.depth_loss, cfg.hflip_p, cfg.drop_path_rate)


def build_encoder(cfg: MultiMAEConfig) -> MultiMAEEncoder:
    """A freshly initialised encoder of the profile's shape (wrap in :func:`eobook.evaluate.seeded` to seed it);
    built as part of the whole module, so that seed s gives the encoder pretraining starts from with seed s."""
    return build_model(cfg).encoder


def model_meta(cfg: MultiMAEConfig) -> dict[str, Any]:
    """The model-shape fields a checkpoint must match."""
    names = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth",
             "decoder_heads", "seg_class_dim")
    return {"arch": "multimae", **{n: getattr(cfg, n) for n in names}}


def parameter_counts(model: MultiMAE) -> dict[str, int]:
    """Parameters of the input adapters, the rest of the encoder (global token, blocks, norm) and the decoders."""
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    adapters = count(model.encoder.adapters)
    return {"input adapters": adapters, "encoder (global token, blocks, norm)": count(model.encoder) - adapters,
            "six decoders": count(model.decoders)}
