"""Vision Transformer backbones for any number of input channels, built on timm.

timm's ``VisionTransformer`` already uses fused ``scaled_dot_product_attention``; these helpers add
what the EO methods need on top: a constructor by size name with ``in_chans`` (never downloading
weights), encoding only a subset of patch tokens (MAE-style and Siamese masking), and the
"CLS tokens of the last n blocks" features of DINO's linear evaluation.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from ..masking import take_tokens

#: (embed_dim, depth, num_heads) of the standard sizes (Dosovitskiy et al. 2021; Touvron et al. 2021).
VIT_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def create_vit(size: str = "small", *, in_chans: int, img_size: int, patch_size: int, depth: int | None = None,
               embed_dim: int | None = None, num_heads: int | None = None, drop_path_rate: float = 0.0,
               class_token: bool = True, init_values: float | None = None) -> timm.models.VisionTransformer:
    """A timm ViT with random weights (no download) and no classifier head (``num_classes=0``).

    Args:
        size: "tiny", "small", "base" or "large"; ``depth``/``embed_dim``/``num_heads`` override it
            (tiny CPU profiles shrink depth and width).
        in_chans: input channels (e.g. 14 for DINO-MM's 12 S2 + 2 S1 bands).
        img_size, patch_size: input side in pixels and patch side (ViT-S/8: patch 8).
        init_values: LayerScale init (DINOv2 uses 1e-5); ``None`` disables LayerScale.
    """
    if size not in VIT_SIZES:
        raise ValueError(f"size: expected one of {list(VIT_SIZES)}, got {size!r}")
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    dim, n_blocks, heads = VIT_SIZES[size]
    dim, n_blocks, heads = embed_dim or dim, depth or n_blocks, num_heads or heads
    if dim % heads:
        raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
    return timm.models.VisionTransformer(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, embed_dim=dim, depth=n_blocks,
        num_heads=heads, drop_path_rate=drop_path_rate, class_token=class_token, global_pool="token" if class_token else "avg",
        init_values=init_values, dynamic_img_size=True)


def patch_tokens(vit: timm.models.VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding + positional embedding, without prefix tokens: [B,C,H,W] -> [B,N,D]."""
    tokens = vit._pos_embed(vit.patch_embed(x))  # adds pos embed and prepends CLS
    return tokens[:, vit.num_prefix_tokens:]


def encode_visible(vit: timm.models.VisionTransformer, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Encode only the patches in ``keep`` (indices [B,K]) plus the CLS token; returns normed [B,1+K,D].

    With ``keep=None`` all patches are encoded (equals ``vit.forward_features``).
    """
    tokens = vit._pos_embed(vit.patch_embed(x))
    prefix, patches = tokens[:, :vit.num_prefix_tokens], tokens[:, vit.num_prefix_tokens:]
    if keep is not None:
        patches = take_tokens(patches, keep)
    tokens = vit.norm_pre(torch.cat([prefix, patches], dim=1))
    return vit.norm(vit.blocks(tokens))


def last_blocks_cls(vit: timm.models.VisionTransformer, x: torch.Tensor, n: int = 4) -> torch.Tensor:
    """CLS tokens of the last ``n`` blocks, each layer-normed, concatenated: [B, n*D] (DINO's linear eval)."""
    inter = vit.forward_intermediates(x, indices=n, return_prefix_tokens=True, norm=True, output_fmt="NLC",
                                      intermediates_only=True)
    return torch.cat([prefix[:, 0] for _, prefix in inter], dim=-1)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B,C,H,W] -> [B, N, P*P*C] (row-major patches, MAE's ordering of pixels within a patch)."""
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"images: size {h}x{w} is not a multiple of patch_size {patch_size}")
    x = images.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // patch_size) * (w // patch_size), -1)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """[B, N, P*P*C] -> [B,C,H,W] for a square grid of N patches (inverse of :func:`patchify`)."""
    b, n, _ = patches.shape
    grid = int(round(n ** 0.5))
    if grid * grid != n:
        raise ValueError(f"patches: {n} patches do not form a square grid")
    x = patches.reshape(b, grid, grid, patch_size, patch_size, channels)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, channels, grid * patch_size, grid * patch_size)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2D sine-cosine positional embedding [grid_h*grid_w, dim] (MAE, MultiMAE).

    Half of the channels encode the row, half the column, each with sines and cosines of
    geometrically spaced frequencies (Vaswani et al. 2017).
    """
    if dim % 4:
        raise ValueError(f"dim: expected a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                                indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega  # [HW, dim/4]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x`` [B,N,D], keys/values from ``context`` [B,M,D].

    softmax(Q K^T / sqrt(d_h)) V per head through ``scaled_dot_product_attention`` (fused kernels);
    ``return_weights=True`` computes the attention matrix explicitly for figures.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, context_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        context_dim = context_dim or dim
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, return_weights: bool = False):
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)            # [B,h,N,dh]
        k, v = self.kv(context).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [B,h,M,dh]
        if return_weights:
            weights = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1)            # [B,h,N,M]
            out = weights @ v
        else:
            out = nn.functional.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return (out, weights) if return_weights else out
