"""Tests of Chapter 2, Fus-MAE (eobook.methods.fus_mae): masking, eq. 2-5 and 10-11, the masked loss,
the batched input resize, training and resume."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from eobook.config import ConfigError, get_profile
from eobook.data.world import SIZES
from eobook.methods import fus_mae as fm
from eobook.runtime import DistInfo
from eobook.train import TrainConfig, fit


def tiny_model(**kwargs) -> fm.FusMAE:
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1,
                decoder_heads=2)
    return fm.FusMAE(**{**args, **kwargs})


def batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"s1": torch.randn(b, 2, size, size, generator=g), "s2": torch.rand(b, 12, size, size, generator=g)}


class Ctx:
    def __init__(self, seed=0, dist=DistInfo()):
        self.generator, self.dist = torch.Generator().manual_seed(seed), dist


def manual_cross_attention(ca: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 4-5 written out: softmax(Q_x K_y^T / sqrt(d)) V_y per head, then the output projection."""
    b, n, d = x.shape
    h, dh = ca.num_heads, ca.head_dim
    q = ca.q(x).reshape(b, n, h, dh).transpose(1, 2)
    k, v = ca.kv(y).reshape(b, y.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5, dim=-1)
    return ca.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


# ---------------------------------------------------------------------------------------------- masking
@pytest.mark.parametrize("ratio,n", [(0.75, 64), (0.75, 49), (0.5, 10), (0.0, 5)])
def test_random_masking_masks_exactly_round_ratio_n_per_row(ratio, n):
    mask = fm.random_masking(6, n, ratio, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (2, 6, n) and mask.dtype == torch.bool
    assert (mask.sum(-1) == round(ratio * n)).all()


def test_consistent_masking_is_identical_across_modalities_and_independent_is_not():
    g = torch.Generator().manual_seed(0)
    consistent = fm.random_masking(8, 64, consistent=True, num_modalities=3, generator=g)
    assert consistent.shape == (3, 8, 64)
    assert torch.equal(consistent[0], consistent[1]) and torch.equal(consistent[0], consistent[2])
    independent = fm.random_masking(8, 64, consistent=False, generator=g)
    assert not torch.equal(independent[0], independent[1])
    # rows differ between samples too (uniform draws per sample)
    assert not torch.equal(independent[0, 0], independent[0, 1])


def test_random_masking_is_reproducible_from_the_generator():
    a = fm.random_masking(4, 16, generator=torch.Generator().manual_seed(3))
    b = fm.random_masking(4, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.99])
def test_random_masking_refuses_ratios_that_leave_nothing_or_are_out_of_range(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        fm.random_masking(2, 16, ratio)


def test_mask_to_keep_returns_the_sorted_visible_indices():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    assert fm.mask_to_keep(mask).tolist() == [[1, 3], [0, 3]]
    with pytest.raises(ValueError, match="mask"):
        fm.mask_to_keep(torch.tensor([[True, False], [True, True]]))


# ---------------------------------------------------------------------------------------------- patches and loss
def test_masked_mse_loss_matches_hand_computation():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    # masked patches: (1+1)/2 = 1 and (4+0)/2 = 2 -> mean 1.5; the visible patch (error 25) is ignored
    assert fm.masked_mse_loss(pred, target, mask).item() == pytest.approx(1.5)


def test_loss_only_counts_masked_tokens():
    model = tiny_model().eval()
    images = batch()
    masks = model.sample_masks(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        preds, targets = model.predict(images, masks), model.targets(images)
        before = fm.masked_mse_loss(preds["s2"], targets["s2"], masks["s2"])
        changed = targets["s2"].clone()
        changed[~masks["s2"]] += 10.0          # every visible patch's target
        after = fm.masked_mse_loss(preds["s2"], changed, masks["s2"])
        changed[masks["s2"]] += 10.0
        moved = fm.masked_mse_loss(preds["s2"], changed, masks["s2"])
    assert after.item() == pytest.approx(before.item())
    assert moved.item() != pytest.approx(before.item())


# ---------------------------------------------------------------------------------------------- blocks
def test_xattn_encoder_follows_eq_2_and_3():
    torch.manual_seed(0)
    block = fm.XAttnEncoder(16, 2)
    x, y = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    out = block(x, y)
    assert out.shape == (2, 12, 16)
    fus = torch.cat([x, y], 1) + torch.cat([manual_cross_attention(block.attn_xy, block.norm_x(x), block.norm_y(y)),
                                            manual_cross_attention(block.attn_yx, block.norm_y(y), block.norm_x(x))], 1)
    expected = fus + block.mlp(block.norm_mlp(fus))
    assert torch.allclose(out, expected, atol=1e-5)


def test_xattn_encoder_mixes_modalities():
    model = tiny_model()
    images = batch()
    with torch.no_grad():
        tokens = model.encoder.tokens(images)
        first = model.encoder.xattn(tokens["s1"], tokens["s2"])
        other_sar = model.encoder.tokens({**images, "s1": images["s1"] + 1.0})
        second = model.encoder.xattn(other_sar["s1"], tokens["s2"])
    n1 = tokens["s1"].shape[1]
    # the optical tokens' outputs change although only the SAR input changed
    assert not torch.allclose(first[:, n1:], second[:, n1:], atol=1e-4)


def test_xattn_decoder_follows_eq_10_and_11():
    torch.manual_seed(0)
    block = fm.XAttnDecoder(16, 4)
    zi, zj = torch.randn(3, 4, 16), torch.randn(3, 6, 16)
    out, weights = block(zi, zj, return_weights=True)
    z = zi + manual_cross_attention(block.attn, block.norm_q(zi), block.norm_kv(zj))
    assert torch.allclose(out, z + block.mlp(block.norm_mlp(z)), atol=1e-5)
    assert weights.shape == (3, 4, 4, 6) and torch.allclose(weights.sum(-1), torch.ones(3, 4, 4))


def test_variants_differ_only_in_the_first_block():
    xaed, xad = tiny_model(variant="XAE&D"), tiny_model(variant="XAD")
    assert xaed.encoder.xattn is not None and len(xaed.encoder.blocks) == 1
    assert xad.encoder.xattn is None and len(xad.encoder.blocks) == 2
    with pytest.raises(ValueError, match="cross_attention_maps"):
        xad.cross_attention_maps(batch())


def test_encoder_returns_visible_latents_per_modality_and_a_global_token():
    model = tiny_model()
    masks = model.sample_masks(4, torch.Generator().manual_seed(0))
    keep = {m: fm.mask_to_keep(masks[m]) for m in fm.MODALITIES}
    latents, cls = model.encoder(batch(), keep)
    assert latents["s1"].shape == (4, 4, 32) and latents["s2"].shape == (4, 4, 32) and cls.shape == (4, 32)


def test_single_modality_features_and_input_errors():
    model = tiny_model()
    images = batch()
    assert model.encoder.features({"s2": images["s2"]}).shape == (4, 32)
    assert model.encoder.features({"s1": images["s1"]}).shape == (4, 32)
    with pytest.raises(ValueError, match=r"images\['s2'\]"):
        model.encoder.features({"s2": images["s2"][:, :3]})
    with pytest.raises(ValueError, match="images"):
        model.encoder.features({"rgb": images["s2"]})


def test_cross_attention_maps_are_distributions_over_the_other_modality():
    maps = tiny_model().cross_attention_maps(batch(b=2))
    assert maps["s1->s2"].shape == (2, 16, 16) and maps["s2->s1"].shape == (2, 16, 16)
    assert torch.allclose(maps["s1->s2"].sum(-1), torch.ones(2, 16), atol=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_reconstruction_keeps_visible_patches_and_hides_masked_ones(norm_pix):
    model = tiny_model(norm_pix_loss=norm_pix)
    images = batch(b=2)
    masks = model.sample_masks(2, torch.Generator().manual_seed(0), masking="consistent")
    out = model.reconstruct(images, masks)
    for m in fm.MODALITIES:
        visible = ~masks[m]
        recon = fm.patchify(out[m]["reconstruction"], 4)
        orig = fm.patchify(images[m], 4)
        assert torch.allclose(recon[visible], orig[visible], atol=1e-5)
        assert torch.isnan(fm.patchify(out[m]["masked"], 4)[masks[m]]).all()
        assert not torch.isnan(fm.patchify(out[m]["masked"], 4)[visible]).any()


# ---------------------------------------------------------------------------------------------- inputs and data
def test_batched_resize_equals_per_sample_antialiased_interpolate():
    # hand-made: a ramp, a checkerboard (aliases badly without antialiasing) and a single bright pixel
    ramp = torch.arange(24.0).repeat(24, 1)
    checker = (torch.arange(24)[:, None] + torch.arange(24)[None]) % 2 * 1.0
    spike = torch.zeros(24, 24)
    spike[5, 17] = 9.0
    s2 = torch.stack([torch.stack([ramp, checker, spike]), torch.stack([spike, ramp.T, -checker])])  # [2,3,24,24]
    s1 = torch.stack([ramp[:10, :10][None], checker[:10, :10][None]]).to(torch.float64)               # [2,1,10,10]
    out = fm.resize_to_input({"s1": s1, "s2": s2}, 16)
    for m, x in (("s1", s1), ("s2", s2)):
        assert out[m].shape == (2, x.shape[1], 16, 16) and out[m].dtype == torch.float32
        for i in range(2):
            one = F.interpolate(x[i][None].float(), size=(16, 16), mode="bilinear", align_corners=False,
                                antialias=True)[0]
            assert torch.allclose(out[m][i], one, atol=1e-6), (m, i)
    # antialiased: the shrunk checkerboard stays within 0.03 of its mean 0.5 (plain bilinear: 0.125 off)
    assert (out["s2"][0, 1] - 0.5).abs().max() < 0.07
    same = torch.rand(2, 3, 16, 16)
    assert torch.equal(fm.resize_to_input({"s2": same}, 16)["s2"], same)
    with pytest.raises(ValueError, match=r"images\['s1'\]"):
        fm.resize_to_input({"s1": torch.rand(2, 16, 16)}, 16)


class Readings(Dataset):
    """A reader stand-in: SEN12MS-like samples with 13 S2 bands at the given sides."""

    def __init__(self, sides=(20, 20, 20)):
        g = torch.Generator().manual_seed(3)
        self.samples = [{"s1": torch.randn(2, n, n, generator=g), "s2": torch.rand(13, n, n, generator=g),
                         "label_scene": torch.tensor(i)} for i, n in enumerate(sides)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_paired_patches_return_native_size_float32_and_select_bands():
    base = Readings()
    data = fm.PairedPatches(base, s2_bands=[b for b in range(13) if b != 10], label_key="label_scene")
    sample = data[1]
    assert sample["s1"].shape == (2, 20, 20) and sample["s2"].shape == (12, 20, 20)   # not resized
    assert sample["s1"].dtype == torch.float32 and sample["s2"].dtype == torch.float32
    assert torch.equal(sample["s1"], base[1]["s1"]) and torch.equal(sample["s2"][10], base[1]["s2"][11])
    assert int(sample["label"]) == 1


def test_paired_patches_refuse_a_sample_of_another_size_naming_both():
    data = fm.PairedPatches(Readings(sides=(20, 20, 24)), label_key="label_scene")
    data[0], data[1]
    with pytest.raises(ValueError, match=r"sample 2 has s1 of shape \(2, 24, 24\), earlier samples \(2, 20, 20\)"):
        data[2]


def test_sample_world_datasets_keep_their_native_size():
    cfg = get_profile("fus_mae", "tiny")
    ben, sen = fm.bigearthnet(cfg, "test")[0], fm.sen12ms(cfg, "test")[0]
    assert ben["s1"].shape[0] == 2 and ben["s2"].shape[0] == 12 and sen["s2"].shape[0] == 12
    assert ben["s2"].shape[-1] == SIZES[cfg.world_size].ben_px != cfg.img_size
    assert sen["s2"].shape[-1] == SIZES[cfg.world_size].sen12ms_px


def test_every_batched_path_resizes_native_inputs_like_pre_resized_ones():
    model = tiny_model().eval()
    native = batch(b=3, size=22)
    resized = fm.resize_to_input(native, 16)
    masks = model.sample_masks(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for modalities in fm.INPUTS.values():
            assert torch.allclose(model.encoder.features({m: native[m] for m in modalities}),
                                  model.encoder.features({m: resized[m] for m in modalities}))
        assert torch.equal(model(native, Ctx(seed=1))["loss"], model(resized, Ctx(seed=1))["loss"])
        recon = model.reconstruct(native, masks)
        assert torch.equal(recon["s2"]["original"], resized["s2"])
        assert torch.equal(recon["s1"]["reconstruction"], model.reconstruct(resized, masks)["s1"]["reconstruction"])
        maps = model.cross_attention_maps(native)
        assert maps["s1->s2"].shape == (3, 16, 16)
        classifier = fm.FusMAEClassifier(model.encoder, 19, ("s1", "s2"))
        assert classifier(native).shape == (3, 19)


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("size", [16, 22])   # at the input size, and native 22 px resized in forward
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(size):
    model = tiny_model()
    images = batch(b=8, size=size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        out = model(images, Ctx(seed=0))   # the same masks every step
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is not None for n, p in model.named_parameters() if "xattn_decoder" in n or "patch_embed" in n)


def test_ranks_mask_like_one_process_with_the_global_batch():
    model = tiny_model()
    images = batch(b=4)
    one = model.sample_masks(4, torch.Generator().manual_seed(0))
    for rank in (0, 1):
        ctx = Ctx(seed=0, dist=DistInfo(rank=rank, world_size=2))
        half = {m: x[2 * rank:2 * rank + 2] for m, x in images.items()}
        seen = {}
        model.losses = lambda imgs, masks: seen.update(masks) or {m: torch.zeros(()) for m in fm.MODALITIES}
        model(half, ctx)
        for m in fm.MODALITIES:
            assert torch.equal(seen[m], one[m][2 * rank:2 * rank + 2])


class FixedPairs(Dataset):
    def __init__(self, n=8):
        self.data = batch(b=n, seed=5)

    def __len__(self):
        return len(self.data["s1"])

    def __getitem__(self, i):
        return {m: self.data[m][i] for m in fm.MODALITIES}


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_epochs=1, device="cpu", progress="off", log_every=100)
    quiet = dict(log=lambda *_: None)
    full = tiny_model()
    fit(full, FixedPairs(), cfg, checkpoint_dir=tmp_path / "a", **quiet)
    part = tiny_model()
    fit(part, FixedPairs(), cfg, checkpoint_dir=tmp_path / "b", stop_after_steps=3, **quiet)
    resumed = tiny_model()
    result = fit(resumed, FixedPairs(), cfg, checkpoint_dir=tmp_path / "b", **quiet)
    assert result.resumed_from == 3
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------------ baselines
def test_random_encoders_are_seeded_and_differ_between_seeds():
    cfg = get_profile("fus_mae", "tiny")
    first, again, other = (fm.random_encoder(cfg, seed).state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_random_init_row_is_the_mean_over_seeded_encoders():
    cfg = get_profile("fus_mae", "tiny", random_init_seeds=3)
    probe = lambda encoder: {"first weight": float(encoder.state_dict()["patch_embed.s1.weight"].flatten()[0])}  # noqa: E731
    mean, per_seed = fm.random_init_scores(probe, cfg)
    assert per_seed == [probe(fm.random_encoder(cfg, cfg.seed + i)) for i in range(3)]  # seeds seed, seed+1, ...
    assert len({row["first weight"] for row in per_seed}) == 3
    assert mean["first weight"] == pytest.approx(sum(row["first weight"] for row in per_seed) / 3)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value", [("mask_ratio", 1.0), ("variant", "XAE"), ("masking", "random"),
                                         ("img_size", 30), ("embed_dim", 66), ("probe_label_fraction", 0.0)])
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        get_profile("fus_mae", "tiny", **{field: value})


def test_full_profile_has_the_papers_settings():
    cfg = get_profile("fus_mae", "full")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_epochs, cfg.mask_ratio) == (100, 200, 1.5625e-4, 10, 0.75)
    assert (cfg.optimizer, cfg.lr_schedule) == ("adamw", "cosine")
    assert (cfg.finetune_epochs, cfg.probe_epochs, cfg.probe_batch_size, cfg.probe_label_fraction) == (10, 20, 128, 0.01)
    assert (cfg.transfer_epochs, cfg.transfer_batch_size) == (10, 256)
