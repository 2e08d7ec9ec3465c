"""Shared blocks of eobook.nn: ViT helpers over timm, cross-attention, positions, patches."""
import math

import pytest
import torch

from eobook.masking import random_keep_indices
from eobook.nn import CrossAttention, create_vit, encode_visible, last_blocks_cls, patchify, sincos_pos_embed_2d, unpatchify
from eobook.rng import GeneratorRandom


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_vit("small", in_chans=14, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4).eval()


def test_encode_visible_without_mask_equals_timm_forward_features(vit):
    x = torch.randn(2, 14, 32, 32)
    torch.testing.assert_close(encode_visible(vit, x), vit.forward_features(x))


def test_encode_visible_encodes_only_kept_patches(vit):
    x = torch.randn(2, 14, 32, 32)
    keep = random_keep_indices(2, 16, 4, GeneratorRandom(0))
    out = encode_visible(vit, x, keep)
    assert out.shape == (2, 1 + 4, 64)
    # a patch that is not kept cannot influence the output
    dropped = next(i for i in range(16) if i not in keep[0].tolist())
    row, col = divmod(dropped, 4)
    y = x.clone()
    y[0, :, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] += 5
    torch.testing.assert_close(encode_visible(vit, y, keep)[0], out[0])


def test_last_blocks_cls_concatenates_n_blocks(vit):
    assert last_blocks_cls(vit, torch.randn(3, 14, 32, 32), n=2).shape == (3, 2 * 64)


def test_cross_attention_fused_equals_explicit_and_rows_sum_to_one():
    torch.manual_seed(0)
    attn = CrossAttention(32, 4).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    fused = attn(x, ctx)
    explicit, weights = attn(x, ctx, return_weights=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)
    assert weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))


def test_sincos_positions_match_the_formula():
    pe = sincos_pos_embed_2d(8, 2, 3)                     # dim/4 = 2 frequencies: 1 and 1/100
    assert pe.shape == (6, 8)
    row, col = 1, 2                                        # token index 1 * 3 + 2 = 5
    expected = [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100),
                math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100)]
    torch.testing.assert_close(pe[5], torch.tensor(expected))


def test_patchify_orders_pixels_like_mae_and_unpatchify_inverts_it():
    images = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (1, 4, 8)
    # first patch: pixels (0,0),(0,1),(1,0),(1,1), channels interleaved last
    assert patches[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]
    assert torch.equal(unpatchify(patches, 2, 2), images)
    with pytest.raises(ValueError, match="patch_size"):
        patchify(torch.zeros(1, 1, 5, 4), 2)
