"""Chapter 6: each objective is its paper's own module around the one backbone, the backbone's adapters are
exact, the evaluation and cost measurements behave, and the tiny run writes results for every encoder."""
import copy
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from eobook.config import ConfigError
from eobook.methods import cromss, dino_mm, fus_mae, multimae_eo, softcon
from eobook.methods import side_by_side as sb
from eobook.runtime import DistInfo
from eobook.train import StepContext

CFG = sb.CHAPTER.profile("tiny")


def ctx(seed: int = 3) -> StepContext:
    return StepContext(0, 0, 0, 4, 8, torch.device("cpu"), torch.Generator().manual_seed(seed), None, DistInfo())


def batch_of(objective: str, n: int = 4) -> dict:
    dataset = sb.pretraining_dataset(CFG, objective)
    return torch.utils.data.default_collate([dataset[i] for i in range(n)])


def loss(module: torch.nn.Module, batch: dict) -> torch.Tensor:
    torch.manual_seed(0)  # modules that draw from the global generator draw alike in both calls
    return module(batch, ctx())["loss"]


def same_state(reference: torch.nn.Module, objective: sb.Objective) -> torch.nn.Module:
    reference.load_state_dict(objective.method.state_dict())
    return reference


# --------------------------------------------------------------------------------------------------
# Each objective is the paper module's own: the same loss as that module, built by its paper's code
# --------------------------------------------------------------------------------------------------
def test_dino_mm_objective_is_dinomm():
    objective = sb.build_objective(CFG, "dino_mm")
    assert type(objective.method) is dino_mm.DINOMM
    backbone = lambda rate: sb.StackedInput(copy.deepcopy(objective.backbone))  # noqa: E731
    reference = same_state(dino_mm.DINOMM(sb.objectives.dino_settings(CFG), backbone=backbone), objective)
    batch = batch_of("dino_mm")
    assert torch.equal(loss(objective, batch), loss(reference, batch))


def test_fus_mae_objective_is_fusmae_xad():
    objective = sb.build_objective(CFG, "fus_mae")
    assert type(objective.method) is fus_mae.FusMAE and objective.method.variant == "XAD"
    paper = fus_mae.CHAPTER.profiles["tiny"]
    reference = same_state(fus_mae.FusMAE(variant="XAD", masking=paper.masking, mask_ratio=paper.mask_ratio,
                                          decoder_dim=paper.decoder_dim, decoder_depth=paper.decoder_depth,
                                          decoder_heads=paper.decoder_heads, num_heads=CFG.num_heads,
                                          encoder=copy.deepcopy(objective.backbone)), objective)
    batch = batch_of("fus_mae")
    s1 = ((batch["s1"].flip(1) + 2) / 4).clamp(0, 1)  # (VV, VH) z-scores -> DINO-MM's (VH, VV) in [0, 1]
    assert torch.equal(loss(objective, batch), loss(reference, {"s1": s1, "s2": batch["s2"]}))


def test_multimae_objective_is_multimae_over_two_sensors():
    objective = sb.build_objective(CFG, "multimae_eo")
    assert type(objective.method) is multimae_eo.MultiMAE and objective.method.modalities == ("s2", "s1")
    paper = multimae_eo.CHAPTER.profiles["tiny"]
    reference = same_state(multimae_eo.MultiMAE(
        num_visible=sb.objectives.visible_tokens(CFG), dirichlet_alpha=paper.dirichlet_alpha,
        decoder_dim=paper.decoder_dim, decoder_depth=paper.decoder_depth, decoder_heads=paper.decoder_heads,
        hflip_p=paper.hflip_p, encoder=sb.TokenEncoder(copy.deepcopy(objective.backbone)),
        modalities={"s2": 12, "s1": 2}), objective)
    batch = batch_of("multimae_eo")
    assert torch.equal(loss(objective, batch), loss(reference, sb.sensor_batch(batch)))


def test_softcon_objective_is_softcon_on_the_stacked_sensors():
    objective = sb.build_objective(CFG, "softcon")
    assert type(objective.method) is softcon.SoftCon
    paper = softcon.CHAPTER.profiles["tiny"]
    reference = same_state(softcon.SoftCon(
        sb.StackedInput(copy.deepcopy(objective.backbone)), input_key="s1s2", proj_hidden=paper.proj_hidden,
        proj_dim=paper.proj_dim, pred_hidden=paper.pred_hidden, temperature=paper.temperature, lam=paper.lam,
        momentum=paper.momentum_start, mask_ratio=paper.mask_ratio, img_size=CFG.img_size,
        crop_scale=paper.crop_scale, jitter=paper.jitter), objective)
    batch = batch_of("softcon")
    stacked = {"s1s2": dino_mm.stack_sensors(batch["s2"], batch["s1"]), "multilabel": batch["multilabel"]}
    assert torch.equal(loss(objective, batch), loss(reference, stacked))


def test_cromss_objective_is_cromss_with_one_segmenter_for_both_sensors():
    objective = sb.build_objective(CFG, "cromss")
    method = objective.method
    assert type(method) is cromss.CromSS and method.sample_selection
    assert method.encoder("s1") is method.encoder("s2") is objective.backbone  # one backbone for both sensors
    paper = cromss.CHAPTER.profiles["tiny"]
    backbone = copy.deepcopy(objective.backbone)
    decoder = copy.deepcopy(method.unets["s2"].decoder)
    reference = same_state(cromss.CromSS(
        fusion="late", s2_band_index=tuple(range(12)), num_classes=9, alpha_0=paper.alpha_0,
        rampup_epochs=paper.rampup_epochs * CFG.epochs / paper.epochs, beta=paper.beta, mu=paper.mu,
        sigma=paper.smoothing_sigma, crop_size=CFG.img_size, flip_prob=paper.flip_prob, rotate_prob=paper.rotate_prob,
        networks={m: sb.SensorSegmenter(backbone, decoder, m) for m in ("s1", "s2")}), objective)
    batch = batch_of("cromss")
    assert torch.equal(loss(objective, batch), loss(reference, batch))


@pytest.mark.parametrize("name", sb.OBJECTIVES)
def test_every_objective_trains_the_shared_backbone(name):
    """One step of each objective changes the backbone it was given, and every objective of a seed starts
    from the same backbone."""
    objective = sb.build_objective(CFG, name)
    start = copy.deepcopy(objective.backbone.state_dict())
    assert all(torch.equal(v, sb.new_backbone(CFG).state_dict()[k]) for k, v in start.items())
    optimizer = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.1)
    loss(objective, batch_of(name)).backward()
    optimizer.step()
    moved = [k for k, v in objective.backbone.state_dict().items() if not torch.equal(v, start[k])]
    assert "blocks.0.attn.qkv.weight" in moved


# --------------------------------------------------------------------------------------------------
# The backbone's adapters
# --------------------------------------------------------------------------------------------------
def images(n: int = 3, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"s2": torch.rand(n, 12, size, size, generator=g), "s1": torch.rand(n, 2, size, size, generator=g)}


def test_stacked_input_encodes_a_dropped_sensor_as_absent():
    """A sample whose S1 channels are all zero (RandomSensorDrop) gets the global token of its S2 tokens
    alone, inside a batch whose other samples keep both sensors."""
    encoder = sb.new_backbone(CFG).eval()
    x = torch.cat([images()["s2"], images()["s1"]], 1)
    x[1, 12:] = 0
    x[2, :12] = 0
    got = sb.StackedInput(encoder)(x)
    with torch.no_grad():
        both = encoder({"s2": x[:1, :12], "s1": x[:1, 12:]})[1]
        s2_only = encoder({"s2": x[1:2, :12]})[1]
        s1_only = encoder({"s1": x[2:, 12:]})[1]
    torch.testing.assert_close(got, torch.cat([both, s2_only, s1_only]))
    with pytest.raises(ValueError, match="every channel zero"):
        sb.StackedInput(encoder)(torch.zeros(1, 14, 32, 32))


def test_token_encoder_matches_the_encoder_on_the_same_tokens():
    """MultiMAE's flat token indices over both sensors select what per-sensor indices select."""
    encoder = sb.new_backbone(CFG).eval()
    x = images()
    n = encoder.num_patches
    keep = {"s2": torch.tensor([[0, 3, 5]] * 3), "s1": torch.tensor([[1, 2]] * 3)}
    flat = torch.cat([keep["s2"], keep["s1"] + n], 1)  # sensor * N + position, S2 first
    with torch.no_grad():
        latents, cls = encoder(x, keep)
        got = sb.TokenEncoder(encoder)(x, flat)
    torch.testing.assert_close(got[:, 0], cls)
    torch.testing.assert_close(got[:, 1:], torch.cat([latents["s2"], latents["s1"]], 1))


def test_features_through_each_input():
    encoder = sb.new_backbone(CFG).eval()
    batch = {"s2": torch.rand(2, 13, 40, 40), "s1": torch.randn(2, 2, 40, 40)}  # an L1C batch at another size
    for inputs, sensors in sb.INPUTS.items():
        x = sb.backbone_inputs(batch, inputs, CFG.img_size)
        assert tuple(x) == sensors and all(v.shape[-1] == CFG.img_size for v in x.values())
        assert x.get("s2", torch.zeros(1, 12)).shape[1] == 12  # B10 dropped
        with torch.no_grad():
            assert sb.image_features(encoder, x).shape == (2, 2 * CFG.embed_dim)
            grid = CFG.img_size // CFG.patch_size
            assert sb.patch_grid(encoder, x).shape == (2, CFG.embed_dim, grid, grid)
    with pytest.raises(ValueError, match="needs S1"):
        sb.backbone_inputs({"s2": batch["s2"]}, "S1+S2", CFG.img_size)


def test_segmentation_decoder_upsamples_patch_features_to_pixels():
    decoder = sb.SegmentationDecoder(64, 10, 8, hidden=32)
    assert decoder(torch.randn(2, 64, 4, 4)).shape == (2, 10, 32, 32)
    with pytest.raises(ValueError, match="power of 2"):
        sb.SegmentationDecoder(64, 10, 12)


# --------------------------------------------------------------------------------------------------
# Cost, evaluation, settings
# --------------------------------------------------------------------------------------------------
def test_step_cost_orders_the_objectives_by_their_work():
    """DINO's multi-crop student and teacher cost more per sample than a masked autoencoder that encodes a
    quarter of the tokens; memory holds at least the weights, gradients and AdamW's moments."""
    costs = {name: sb.step_cost(CFG, name) for name in ("dino_mm", "fus_mae")}
    assert costs["dino_mm"]["gflops_per_sample"] > 2 * costs["fus_mae"]["gflops_per_sample"] > 0
    weights = sum(p.numel() * 4 for p in sb.new_backbone(CFG).parameters()) / 2**20
    assert costs["fus_mae"]["memory_mb"] > 4 * weights


def test_gpu_hours_from_flops():
    # 100 GFLOP x 1000 samples x 10 epochs = 1e15 FLOP at 35% of 989 TFLOP/s
    assert sb.pretraining_gpu_hours(100.0, 1000, 10) == pytest.approx(1e15 / (989e12 * 0.35) / 3600)


def test_mean_and_spread_over_seeds():
    runs = [{("eurosat", "S2"): 50.0}, {("eurosat", "S2"): 56.0}, {("eurosat", "S2"): 53.0}]
    mean, spread = sb.mean_and_spread(runs)
    assert mean[("eurosat", "S2")] == pytest.approx(53.0) and spread[("eurosat", "S2")] == pytest.approx(6.0)


def test_objective_settings_come_from_the_paper_chapters_profiles():
    small = sb.CHAPTER.profile("small")
    dino = sb.objectives.dino_settings(small)
    paper = dino_mm.CHAPTER.profiles["small"]
    assert (dino.teacher_temp, dino.out_dim, dino.n_local_crops) == (paper.teacher_temp, paper.out_dim,
                                                                   paper.n_local_crops)
    assert dino.epochs == small.epochs and dino.global_crop_size == small.img_size
    assert dino.augmentation_warmup_epochs == round(paper.augmentation_warmup_epochs * small.epochs / paper.epochs)
    assert 0 < sb.objectives.visible_tokens(small) <= (small.img_size // small.patch_size) ** 2


def test_config_refuses_unknown_objectives():
    with pytest.raises(ConfigError, match="objectives"):
        sb.CHAPTER.profile("tiny", objectives=("dino_mm", "byol"))
    with pytest.raises(ConfigError, match="objective"):
        sb.CHAPTER.profile("tiny", objective="byol")
    assert dataclasses.replace(CFG, seeds=2).seed_list == [CFG.seed, CFG.seed + 1]


@pytest.mark.slow
def test_tiny_run_writes_results_for_every_objective_and_random_init(tmp_path):
    """`python -m eobook run side_by_side --profile tiny` (the chapter's notebook through Papermill)."""
    done = subprocess.run([sys.executable, "-m", "eobook", "run", "side_by_side", "--profile", "tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = json.loads((tmp_path / "side_by_side" / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert set(metrics["results"]) == {*sb.OBJECTIVES, "random init"}
    columns = {f"{t}/{i}" for t, i in sb.COLUMNS}
    assert all(set(seed) == columns for runs in metrics["results"].values() for seed in runs)
    assert set(metrics["cost"]) == set(sb.OBJECTIVES) and set(metrics["full_gpu_hours"]) == set(sb.OBJECTIVES)
    assert metrics["verdict"]["columns"] == len(columns)
    figures = {p.stem for p in (tmp_path / "side_by_side" / "figures").glob("*.png")}
    assert {"quality_vs_cost", "scores_by_input", "dfc2020_segmentations"} <= figures


def test_listed_sixth():
    done = subprocess.run([sys.executable, "-m", "eobook", "list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    numbered = [line.split()[0:2] for line in done.stdout.splitlines() if line[:1].isdigit()]
    assert numbered[5] == ["6.", "side_by_side"] and len(numbered) == 6


def test_cost_table_adds_the_pretraining_compute():
    costs = {"fus_mae": {"gflops_per_sample": 2.0, "seconds_per_epoch": 1.5, "memory_mb": 100.0}}
    row = sb.cost_table(costs, samples=400, epochs=12).loc["fus_mae"]
    assert row["TFLOP / seed (pretraining)"] == pytest.approx(2.0 * 400 * 12 / 1e3) and row["labels"] == "none"
