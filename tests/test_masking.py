"""The shared masking helpers: exact counts, visible indices, the masked mean of the MAE objective."""
import pytest
import torch

from eobook import masking
from eobook.rng import GeneratorRandom


def test_random_mask_hides_exactly_the_ratio_per_row():
    mask = masking.random_mask(64, 49, 0.75, GeneratorRandom(0))
    assert mask.dtype == torch.bool and mask.shape == (64, 49)
    assert torch.all(mask.sum(1) == round(0.75 * 49))
    assert not torch.equal(mask[0], mask[1])                     # rows are drawn independently
    with pytest.raises(ValueError, match="mask_ratio"):
        masking.random_mask(2, 4, 1.0, GeneratorRandom(0))


def test_keep_indices_are_the_sorted_visible_positions():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    assert masking.keep_indices(mask).tolist() == [[1, 3], [0, 3]]
    with pytest.raises(ValueError, match="same number"):
        masking.keep_indices(torch.tensor([[True, False], [False, False]]))


def test_random_keep_indices_and_take_tokens():
    keep = masking.random_keep_indices(5, 10, 3, GeneratorRandom(1))
    assert keep.shape == (5, 3) and torch.all(keep[:, 1:] > keep[:, :-1])      # sorted and distinct
    with pytest.raises(ValueError, match="num_keep"):
        masking.random_keep_indices(1, 4, 0, GeneratorRandom(1))
    tokens = torch.arange(5 * 10 * 2, dtype=torch.float32).reshape(5, 10, 2)
    taken = masking.take_tokens(tokens, keep)
    for b in range(5):
        assert torch.equal(taken[b], tokens[b, keep[b]])


def test_masked_mean_counts_only_hidden_tokens():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert float(masking.masked_mean(per_token, mask)) == pytest.approx((1 + 3 + 6) / 3)
    nothing_hidden = masking.masked_mean(per_token.requires_grad_(), torch.zeros_like(mask))
    assert float(nothing_hidden.detach()) == 0.0 and nothing_hidden.requires_grad   # no target, no loss, no crash
