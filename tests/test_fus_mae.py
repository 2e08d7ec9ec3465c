"""Tests of Chapter 2, Fus-MAE (eobook.methods.fus_mae): masking, eq. 2-5 and 10-11, the masked loss,
the batched input resize, training, resume and DDP masks, the evaluation stages, the profiles and the
paper's values (the Deviations table), the datasets' splits and the line that counts them, the protocol at the
size of a smoke run."""
import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from eobook.config import ConfigError
from eobook.data import SEN12MS, SMOKE_SAMPLES, BigEarthNetMM, dataset_root
from eobook.data.world import SIZES
from eobook.evaluate import seeded
from eobook.methods import fus_mae as fm
from eobook.masking import keep_indices, random_mask
from eobook.nn import patchify
from eobook.rng import GeneratorRandom
from eobook.runtime import DistInfo
from eobook.train import StepContext, TrainConfig, fit


def tiny_model(**kwargs) -> fm.FusMAE:
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1,
                decoder_heads=2)
    return fm.FusMAE(**{**args, **kwargs})


def tiny_cfg(**overrides) -> fm.FusMAEConfig:
    return fm.CHAPTER.profile("tiny", **overrides)


def batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"s1": torch.randn(b, 2, size, size, generator=g), "s2": torch.rand(b, 12, size, size, generator=g)}


def make_ctx(seed=0, dist=DistInfo()) -> StepContext:
    return StepContext(0, 0, 0, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(seed), None, dist)


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
    mask = fm.random_masking(6, n, ratio, rng=GeneratorRandom(1))
    assert mask.shape == (2, 6, n) and mask.dtype == torch.bool
    assert (mask.sum(-1) == round(ratio * n)).all()


def test_consistent_masking_is_identical_across_modalities_and_independent_is_not():
    rng = GeneratorRandom(0)
    consistent = fm.random_masking(8, 64, consistent=True, num_modalities=3, rng=rng)
    assert consistent.shape == (3, 8, 64)
    assert torch.equal(consistent[0], consistent[1]) and torch.equal(consistent[0], consistent[2])
    independent = fm.random_masking(8, 64, consistent=False, rng=rng)
    assert not torch.equal(independent[0], independent[1])
    # rows differ between samples too (uniform draws per sample)
    assert not torch.equal(independent[0, 0], independent[0, 1])


def test_random_masking_is_reproducible_from_the_generator_and_draws_one_mask_per_modality():
    a = fm.random_masking(4, 16, rng=torch.Generator().manual_seed(3))
    b = fm.random_masking(4, 16, rng=GeneratorRandom(3))
    assert torch.equal(a, b)
    # independent: modality m is the m-th per-sample draw of the source (what a StepContext hands each rank)
    rng = GeneratorRandom(3)
    assert torch.equal(a[0], random_mask(4, 16, 0.75, rng)) and torch.equal(a[1], random_mask(4, 16, 0.75, rng))


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.99])
def test_random_masking_refuses_ratios_that_leave_nothing_or_are_out_of_range(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        fm.random_masking(2, 16, ratio)


# ---------------------------------------------------------------------------------------------- patches and loss
def test_masked_mse_loss_matches_hand_computation():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True]])
    # masked patches: (1+1)/2 = 1 and (4+0)/2 = 2 -> mean 1.5; the visible patch (error 25) is ignored
    assert fm.masked_mse_loss(pred, target, mask).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="pred"):
        fm.masked_mse_loss(pred, target[:, :, :1], mask)
    assert fm.masked_mse_loss(pred, target, torch.zeros_like(mask)).item() == 0.0   # nothing hidden, nothing to learn


def test_loss_only_counts_masked_tokens():
    model = tiny_model().eval()
    images = batch()
    masks = model.sample_masks(4, GeneratorRandom(0))
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
    masks = model.sample_masks(4, GeneratorRandom(0))
    keep = {m: keep_indices(masks[m]) for m in fm.MODALITIES}
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
    masks = model.sample_masks(2, GeneratorRandom(0), masking="consistent")
    out = model.reconstruct(images, masks)
    for m in fm.MODALITIES:
        visible = ~masks[m]
        recon = patchify(out[m]["reconstruction"], 4)
        orig = patchify(images[m], 4)
        assert torch.allclose(recon[visible], orig[visible], atol=1e-5)
        assert torch.isnan(patchify(out[m]["masked"], 4)[masks[m]]).all()
        assert not torch.isnan(patchify(out[m]["masked"], 4)[visible]).any()


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
    cfg = tiny_cfg()
    ben, sen = fm.bigearthnet(cfg, "test")[0], fm.sen12ms(cfg, "test")[0]
    assert ben["s1"].shape[0] == 2 and ben["s2"].shape[0] == 12 and sen["s2"].shape[0] == 12
    assert ben["s2"].shape[-1] == SIZES[cfg.world_size].ben_px != cfg.img_size
    assert sen["s2"].shape[-1] == SIZES[cfg.world_size].sen12ms_px


def test_every_batched_path_resizes_native_inputs_like_pre_resized_ones():
    model = tiny_model().eval()
    native = batch(b=3, size=22)
    resized = fm.resize_to_input(native, 16)
    masks = model.sample_masks(3, GeneratorRandom(0))
    with torch.no_grad():
        for modalities in fm.INPUTS.values():
            assert torch.allclose(model.encoder.features({m: native[m] for m in modalities}),
                                  model.encoder.features({m: resized[m] for m in modalities}))
        assert torch.equal(model(native, make_ctx(seed=1))["loss"], model(resized, make_ctx(seed=1))["loss"])
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
        out = model(images, make_ctx(seed=0))   # the same masks every step
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is not None for n, p in model.named_parameters() if "xattn_decoder" in n or "patch_embed" in n)


def test_ranks_mask_like_one_process_with_the_global_batch():
    model = tiny_model()
    images = batch(b=4)
    one = model.sample_masks(4, GeneratorRandom(0))
    for rank in (0, 1):
        ctx = make_ctx(seed=0, dist=DistInfo(rank=rank, world_size=2))
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


# ---------------------------------------------------------------------------------------------- evaluation
def eval_cfg(**overrides) -> fm.FusMAEConfig:
    small = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1,
                 decoder_heads=2, finetune_epochs=1, finetune_batch_size=8, probe_epochs=3, probe_batch_size=8,
                 probe_min_samples=8, transfer_epochs=3, transfer_batch_size=8, device="cpu", progress="off")
    return tiny_cfg(**{**small, **overrides})


def labelled_pairs(n, seed=0, side=20):
    """BigEarthNet-like samples whose 19-class multi-labels show in the optical bands."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, fm.N_CLASSES, generator=g) < 0.4).float()
    return [{"s1": torch.randn(2, side, side, generator=g),
             "s2": torch.rand(12, side, side, generator=g) * 0.5 + labels[i, :12, None, None], "label": labels[i]}
            for i in range(n)]


def test_table1_fills_every_cell_and_each_stage_resumes_from_its_own_folder(tmp_path):
    cfg = eval_cfg()
    encoder = fm.build_model(cfg).encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, test = labelled_pairs(24), labelled_pairs(12, seed=1)
    scores = fm.table1_scores(encoder, train, test, cfg, "cpu", tmp_path)
    assert list(scores) == ["100% S1", "100% S2", "100% S1+S2", "1% S1", "1% S2", "1% S1+S2"]
    assert all(0.0 <= v <= 100.0 for v in scores.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(c.replace(" ", "-") for c in scores)
    assert all(any(p.glob("ckpt-*.pt")) for p in tmp_path.iterdir())       # every stage checkpointed
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # fine-tuning trains a copy
    # a second call finds every stage finished and loads it: the same scores without training again
    assert fm.table1_scores(encoder, train, test, cfg, "cpu", tmp_path) == scores
    metrics, result = fm.fine_tune_multilabel(encoder, train, test, cfg, "S2", "cpu", tmp_path / "100%-S2")
    assert result.steps == result.resumed_from == 3 and metrics["mAP_macro"] == scores["100% S2"]


def test_evaluation_rows_score_the_encoder_and_seeded_random_encoders_each_in_its_folder(tmp_path):
    cfg = eval_cfg(random_init_seeds=2, seed=5)
    folders = []

    def score(encoder, folder):
        folders.append(folder.name)
        return {"first weight": float(encoder.patch_embed["s1"].weight.detach().flatten()[0])}

    pretrained = fm.build_model(cfg).encoder
    rows, per_seed = fm.evaluation_rows(pretrained, score, cfg, tmp_path)
    assert folders == ["fus_mae", "random-seed5", "random-seed6"]
    assert rows[fm.PRETRAINED] == score(pretrained, tmp_path / "x")
    # seed cfg.seed + i is the i-th random row: the encoder of a freshly built FusMAE under that seed
    assert per_seed == [score(seeded(lambda: fm.build_model(cfg).encoder, seed), tmp_path / "x") for seed in (5, 6)]
    assert per_seed[0] != per_seed[1]
    assert rows[fm.RANDOM_INIT]["first weight"] == pytest.approx(sum(r["first weight"] for r in per_seed) / 2)


@pytest.mark.parametrize("standardize", [True, False])
def test_sen12ms_probe_drops_unlabelled_patches_and_uses_the_transfer_settings(monkeypatch, standardize):
    cfg = eval_cfg(probe_standardize=standardize, label_smoothing=0.2)
    seen = {}

    def probe(train_x, train_y, test_x, test_y, task, loop, *, standardize_features, checkpoint_dir):
        seen.update(train_y=train_y, test_y=test_y, task=task, loop=loop, standardize=standardize_features)
        return {"top1": 0.0}

    monkeypatch.setattr(fm.evaluation, "linear_probe", probe)
    data = [{**sample, "label": torch.tensor(label)} for sample, label in
            zip(labelled_pairs(6), [3, -1, 0, 9, -1, 2])]
    fm.linear_probe_sen12ms(fm.build_model(cfg).encoder, data, data[:3], cfg)
    assert seen["train_y"].tolist() == [3, 0, 9, 2] and seen["test_y"].tolist() == [3, 0]
    assert (seen["task"].kind, seen["task"].num_classes, seen["task"].label_smoothing) == ("multiclass", 10, 0.2)
    loop = seen["loop"]
    assert (loop.epochs, loop.batch_size, loop.optimizer, loop.lr) == (3, 8, "adamw", cfg.transfer_lr)
    assert seen["standardize"] is standardize


def test_results_table_puts_the_papers_row_beside_this_run():
    rows = {fm.PRETRAINED: {**{c: 50.0 for c in fm.PAPER_TABLE2["ImageNet"]}, "accuracy_avg": 1.0}}
    table = fm.results_table(fm.PAPER_TABLE2, rows, "XAD")
    assert list(table.columns) == ["paper: Fus-MAE w/ XAD", "paper: ImageNet init", f"this run: {fm.PRETRAINED}"]
    assert list(table.index) == ["top1", "top3", "precision_w", "recall_w", "f1_w"]   # the paper's columns only
    assert table.loc["top3", "paper: Fus-MAE w/ XAD"] == 92.4 and table.loc["top1", f"this run: {fm.PRETRAINED}"] == 50


def test_parameter_counts_show_the_variants_first_block():
    xaed, xad = (fm.parameter_counts(fm.build_model(eval_cfg(variant=v))) for v in fm.VARIANTS)
    assert xaed["XAttnEncoder"] > 0 and xad["XAttnEncoder"] == 0
    assert xad["transformer blocks"] == 2 * xaed["transformer blocks"]     # depth 2: XAD has both plain blocks
    assert xaed["decoders D_i"] == xad["decoders D_i"] > 0


def test_build_pretraining_reads_the_bigearthnet_train_split_at_native_size():
    cfg = tiny_cfg()
    module, dataset, collate_fn, meta = fm.build_pretraining(cfg)
    assert isinstance(module, fm.FusMAE) and collate_fn is None
    assert len(dataset) == SIZES[cfg.world_size].ben[0] and dataset[0]["s2"].shape[-1] == SIZES[cfg.world_size].ben_px
    assert meta == {"arch": "fus_mae", "variant": "XAE&D", "img_size": 32, "patch_size": 8, "embed_dim": 64,
                    "depth": 2, "num_heads": 4, "decoder_dim": 32, "decoder_depth": 1}


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value", [("mask_ratio", 1.0), ("variant", "XAE"), ("masking", "random"),
                                         ("img_size", 30), ("embed_dim", 66), ("probe_label_fraction", 0.0),
                                         ("random_init_seeds", 0), ("probe_standardize", "maybe"),
                                         ("transfer_inputs", "S3")])
def test_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        tiny_cfg(**{field: value})


def test_transfer_inputs_are_the_evaluation_inputs_of_table_1():
    assert fm.TRANSFER_INPUTS == tuple(fm.INPUTS)
    assert tiny_cfg(transfer_inputs="S1+S2").transfer_inputs == "S1+S2"


def test_full_profile_has_the_papers_settings():
    cfg = fm.CHAPTER.profile("full")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.warmup_epochs, cfg.mask_ratio) == (100, 200, 1.5625e-4, 10, 0.75)
    assert (cfg.optimizer, cfg.lr_schedule) == ("adamw", "cosine")
    assert (cfg.finetune_epochs, cfg.probe_epochs, cfg.probe_batch_size, cfg.probe_label_fraction) == (10, 20, 128, 0.01)
    assert (cfg.transfer_epochs, cfg.transfer_batch_size) == (10, 256)
    assert (cfg.variant, cfg.masking, cfg.label_smoothing) == ("XAE&D", "independent", 0.1)


def test_full_profile_departs_from_the_paper_only_where_a_reason_is_given():
    full = fm.CHAPTER.profile("full")
    assert fm.CHAPTER.unexplained_deviations() == []
    rows = {row["field"]: row for row in fm.CHAPTER.deviation_rows()}
    # every recorded reason is a row of the chapter's table, and the fields that keep the paper's value are not
    assert set(rows) == set(fm.DEVIATIONS)
    assert all(len(row["reason"]) > 40 for row in rows.values())
    for name, paper in fm.PAPER.items():
        if name not in fm.DEVIATIONS:
            assert getattr(full, name) == paper.value, name
    assert fm.PAPER["probe_standardize"].value is False and full.probe_standardize is True
    # the paper fixes none of the book's architecture and optimiser choices: their rows carry no paper value
    for name in ("img_size", "embed_dim", "depth", "decoder_dim", "betas", "weight_decay", "finetune_lr", "probe_lr",
                 "transfer_lr", "transfer_inputs", "masking", "random_init_seeds"):
        assert rows[name]["paper"] is None and name not in fm.PAPER, name
    assert (rows["transfer_inputs"]["full"], rows["img_size"]["full"], rows["embed_dim"]["full"]) == ("S2", 128, 384)
    assert "unimodal" in rows["transfer_inputs"]["reason"] and "ImageNet" in rows["random_init_seeds"]["reason"]


def test_deviations_table_is_what_the_notebook_shows():
    table = fm.CHAPTER.deviations_table()
    assert list(table.columns) == ["paper", "where", "full profile", "why"]
    assert tuple(table.loc["probe_standardize", ["paper", "full profile"]]) == ("False", "True")
    assert table.loc["transfer_inputs", "paper"] == "-" and table.loc["transfer_inputs", "full profile"] == "S2"
    assert "epochs" not in table.index and "mask_ratio" not in table.index   # the paper's values: no row
    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / fm.CHAPTER.notebook).read_text())
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert any("fm.CHAPTER.deviations_table()" in c for c in code)


def test_every_profile_keeps_its_name_and_standardises_probe_features():
    for name in ("tiny", "small", "full"):
        cfg = fm.CHAPTER.profile(name)
        assert cfg.profile == name and dataclasses.replace(cfg, seed=1).profile == name
        assert cfg.probe_standardize   # the book's probes have always standardised (DEVIATIONS)
    assert fm.CHAPTER.profile("small").random_init_seed_list == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- data and protocol
def test_probe_indices_draw_the_label_fraction_and_at_least_two_patches_to_standardise():
    cfg = eval_cfg(probe_min_samples=1, probe_label_fraction=0.01)
    assert len(fm.probe_indices(cfg, 3)) == 2                     # 1% of 3 is 0: two, so a std exists
    assert len(fm.probe_indices(dataclasses.replace(cfg, probe_standardize=False), 3)) == 1
    big = fm.probe_indices(cfg, 26_970)
    assert len(big) == 270 and len(set(big.tolist())) == 270    # 1%, without replacement
    assert fm.probe_indices(cfg, 26_970).tolist() == big.tolist()  # seeded
    with pytest.raises(ValueError, match="at least 2 training patches"):
        fm.probe_indices(cfg, 1)


def test_one_percent_probe_on_three_patches_gives_finite_scores(tmp_path):
    """The smoke run on real BigEarthNet samples: 1% of 3 training patches, standardised features."""
    cfg = eval_cfg(probe_min_samples=1, probe_standardize=True)
    scores = fm.linear_probe_multilabel(fm.build_model(cfg).encoder, labelled_pairs(3), labelled_pairs(2, seed=1),
                                        cfg, "S1+S2", "cpu", tmp_path)
    assert 0.0 <= scores["mAP_macro"] <= 100.0


def test_sen12ms_probe_reads_the_configured_inputs_says_what_it_leaves_out_and_refuses_nothing_labelled(
        monkeypatch, capsys):
    cfg = eval_cfg(transfer_inputs="S1")
    encoder = fm.build_model(cfg).encoder
    seen = []

    def probe(train_x, train_y, test_x, test_y, task, loop, *, standardize_features, checkpoint_dir):
        seen.append(train_x)
        return {"top1": 0.0}

    monkeypatch.setattr(fm.evaluation, "linear_probe", probe)
    data = [{**sample, "label": torch.tensor(label)} for sample, label in zip(labelled_pairs(4), [3, -1, 0, 9])]
    s1_features, _ = fm.frozen_features(encoder, data, "S1")
    fm.linear_probe_sen12ms(encoder, data, data[:2], cfg)
    fm.table2_rows(encoder, data, data[:2], cfg)                # the pretrained row first, then random init
    assert len(seen) == 3
    for train_x in seen[:2]:
        assert torch.allclose(train_x, s1_features[[0, 2, 3]], atol=1e-5)    # S1 features, unlabelled left out
    assert "left out 1 of 4 train and 1 of 2 test patches without a labelled pixel" in capsys.readouterr().out
    unlabelled = [{**sample, "label": torch.tensor(-1)} for sample in labelled_pairs(2)]
    with pytest.raises(ValueError, match="no labelled patch left in the test split"):
        fm.linear_probe_sen12ms(encoder, data, unlabelled, cfg)


def test_sen12ms_is_the_classification_benchmark_split_with_scene_labels_and_bigearthnet_the_official_lists():
    cfg = tiny_cfg(cache_data=False)
    for split in ("train", "test"):
        sen, ben = fm.sen12ms(cfg, split), fm.bigearthnet(cfg, split)
        reader = SEN12MS(dataset_root(cfg, "SEN12MS"), split=split)
        assert len(sen) == len(reader)
        assert len(ben) == len(BigEarthNetMM(dataset_root(cfg, "BigEarthNet-MM"), split=split))
        raw = reader[0]
        assert int(sen[0]["label"]) == int(raw["label_scene"]) and 0 <= int(sen[0]["label"]) < 10
        assert torch.equal(sen[0]["s2"], raw["s2"][[b for b in range(13) if b != 10]])   # B10 (index 10) left out
        assert fm.split_summary(cfg, sen).startswith(
            f"SEN12MS '{split}' split (the classification benchmark's {split}_list.txt; the synthetic sample world): "
            f"{len(reader)} patches")
        assert fm.split_summary(cfg, ben).startswith(
            f"BigEarthNet-MM v1 '{split}' split (official split list {split}.csv; the synthetic sample world): "
            f"{len(ben)} patches")


def test_split_summary_counts_from_the_reader_in_memory_and_in_a_smoke_run():
    cached = tiny_cfg()                                    # cache_data: the samples are a list in memory
    whole = fm.bigearthnet(cached, "train")
    assert isinstance(whole.base, list) and fm.split_summary(cached, whole).endswith(f": {len(whole)} patches")
    smoke = tiny_cfg(smoke=True)
    for data in (fm.bigearthnet(smoke, "train"), fm.sen12ms(smoke, "test")):
        assert len(data) == SMOKE_SAMPLES                    # every dataset goes through chapter_dataset
        line = fm.split_summary(smoke, data)
        assert line.endswith(f"of which this run uses the first {SMOKE_SAMPLES} (smoke run)")
    assert f": {len(whole)} patches, of which" in fm.split_summary(smoke, fm.bigearthnet(smoke, "train"))
    with pytest.raises(ValueError, match="bigearthnet\\(\\) or sen12ms\\(\\)"):
        fm.split_summary(smoke, fm.PairedPatches(Readings()))


def test_split_summary_names_the_patches_the_sen12ms_reader_drops(tmp_path):
    world = dataset_root(tiny_cfg(), "SEN12MS")
    root = tmp_path / "SEN12MS"
    shutil.copytree(world, root, symlinks=True)
    listing = root / "train_list.txt"
    listing.write_text(listing.read_text() + "ROIs1868_summer_s2_146_p202.tif\n")   # the benchmark's broken patch
    cfg = tiny_cfg(cache_data=False, data_root=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = fm.sen12ms(cfg, "train")
    line = fm.split_summary(cfg, data)
    assert "1 listed patch(es) dropped by the reader: ROIs1868_summer_s2_146_p202.tif" in line
    assert f"data_root {tmp_path}" in line and f": {len(data)} patches" in line


def test_paired_patches_pass_packed_batches_through(tmp_path):
    """From a packed store, PairedPatches hands the reader's batch read on (fit's loader then reads it native and
    normalises it on the device): the result equals the pairs collated one by one."""
    from torch.utils.data import default_collate

    from eobook.data import ensure_sample_world
    from eobook.data.base import BatchCollate, CollatedBatch
    from eobook.data.pack import prepare
    from eobook.train.loop import batch_reader, native_batches

    store = prepare("BigEarthNetMM", ensure_sample_world("tiny", 0) / "BigEarthNet-MM", tmp_path / "ben.zarr")
    pairs = fm.PairedPatches(BigEarthNetMM(store, split="train"))
    indices = [7, 2, 40, 2]
    expected = default_collate([pairs[i] for i in indices])
    batch = pairs.__getitems__(indices)
    assert isinstance(batch, CollatedBatch)
    for key, value in BatchCollate()(batch).items():
        assert torch.equal(value, expected[key]), key
    assert batch_reader(pairs) is pairs.base
    loaded, on_device = native_batches(pairs)
    native = loaded.__getitems__(indices).collated
    assert native["s2"].dtype == torch.int16
    for key, value in on_device(native).items():
        assert torch.equal(value, expected[key]), key
