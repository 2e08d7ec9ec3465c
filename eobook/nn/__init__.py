"""Building blocks shared by the methods, over timm and segmentation-models-pytorch."""
from .vit import (VIT_SIZES, CrossAttention, create_vit, encode_visible, last_blocks_cls, patch_tokens, patchify,
                  sincos_pos_embed_2d, unpatchify)

__all__ = ["VIT_SIZES", "CrossAttention", "create_vit", "encode_visible", "last_blocks_cls", "patch_tokens", "patchify",
           "sincos_pos_embed_2d", "unpatchify"]
