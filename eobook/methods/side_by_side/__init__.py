"""Chapter 6, side by side: the five papers' objectives on one backbone, with one evaluation.

Each paper evaluates its idea on its own backbone, data and protocol, so the papers cannot tell a reader which
idea helps. This chapter trains DINO-MM's self-distillation, Fus-MAE's cross-attention fusion, MultiMAE's
multi-modal masking, SoftCon's soft contrast and CromSS's noisy-label segmentation (each its paper's module from
``eobook.methods.<paper>``) on one ViT over Sentinel-1 and Sentinel-2 tokens, on the same data with the same
budget, and reads every encoder through the same frozen evaluation. It is the book's own comparison.

* :mod:`.backbone`: the backbone (Fus-MAE's encoder without cross-attention), its adapters to each paper's
  interface, the image and patch features, the one segmentation decoder;
* :mod:`.objectives`: each objective around the backbone, the batch each paper module reads, its settings;
* :mod:`.evaluation`: BigEarthNet mAP, EuroSAT OA and DFC2020 mIoU through S1, S2 and both; the cost of a
  step (FLOPs, peak memory); the tables;
* :mod:`.config`: :class:`SideBySideConfig` and its profiles;
* ``CHAPTER``: the record the CLI, the notebook and the loop use.
"""
from torch import nn

from ...config import Chapter, Pretraining
from .backbone import (INPUTS, SENSORS, SegmentationDecoder, SensorSegmenter, StackedInput, TokenEncoder,
                       build_backbone, image_features, patch_grid, split_sensors)
from .config import DEVIATIONS, OBJECTIVES, PAPER, PROFILES, SideBySideConfig
from .evaluation import (COLUMNS, ENCODERS, TASKS, backbone_inputs, column_name, cost_table, data_summary,
                         eval_datasets, evaluate_encoder, mean_and_spread, mean_over_objectives, named_columns,
                         pretraining_gpu_hours,
                         results_table, segmentation_score, step_cost)
from .objectives import (LABELS, Objective, build_objective, new_backbone, paper_batch, paper_module,
                         pretraining_dataset, sensor_batch, tile_size)


def model_meta(cfg: SideBySideConfig) -> dict:
    """What a checkpoint must share with this run: the objective and the backbone's shape."""
    names = ("objective", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_dim")
    return {"arch": "side_by_side", **{n: getattr(cfg, n) for n in names}}


def build_pretraining(cfg: SideBySideConfig) -> Pretraining:
    """``cfg.objective`` around a fresh backbone of seed ``cfg.seed``, and its SSL4EO-S12 data."""
    dataset = pretraining_dataset(cfg)
    return Pretraining(build_objective(cfg, tile=tile_size(dataset)), dataset, None, model_meta(cfg))


CHAPTER = Chapter(
    name="side_by_side", number=6, title="Side by side: five objectives, one backbone, one evaluation",
    notebook="06_side_by_side.ipynb", config=SideBySideConfig, profiles=PROFILES, build_pretraining=build_pretraining,
    paper=PAPER, deviations=DEVIATIONS,
    claim=("Trained on the same S1 + S2 data with the same budget and read through the same frozen evaluation, "
           "the five papers' objectives can be compared with each other and with their cost."),
    showcase="quality_vs_cost",
    small_limits=("Its verdict is the five objectives' mean against random init; the chapter's table and figures "
                  "compare each objective, over three seeds in one run."))

__all__ = ["CHAPTER", "COLUMNS", "DEVIATIONS", "ENCODERS", "INPUTS", "LABELS", "OBJECTIVES", "Objective", "PAPER",
           "PROFILES", "SENSORS", "SegmentationDecoder", "SensorSegmenter", "SideBySideConfig", "StackedInput", "TASKS",
           "TokenEncoder", "backbone_inputs", "build_backbone", "build_objective", "build_pretraining", "cost_table",
           "column_name", "data_summary", "eval_datasets", "evaluate_encoder", "image_features", "mean_and_spread",
           "named_columns",
           "mean_over_objectives", "model_meta", "new_backbone", "paper_batch", "paper_module", "patch_grid",
           "pretraining_dataset", "pretraining_gpu_hours", "results_table", "segmentation_score", "sensor_batch",
           "split_sensors", "step_cost", "pretrain_all", "evaluate_all"]


def pretrain_all(cfg: SideBySideConfig, out_dir=None) -> dict[str, dict[int, tuple]]:
    """Every objective of ``cfg.objectives`` for every seed of ``cfg.seed_list``, each through ``CHAPTER.pretrain``
    (the one loop, checkpointed in the run's checkpoints folder under ``checkpoints/seed<s>/<objective>``, resumed
    or loaded when found there): ``{objective: {seed: (Objective, TrainResult)}}``."""
    import dataclasses

    from ...train import stage_dir

    runs: dict[str, dict[int, tuple]] = {}
    for seed in cfg.seed_list:
        for objective in cfg.objectives:
            run_cfg = dataclasses.replace(cfg, objective=objective, seed=seed)
            stage = stage_dir(out_dir, "checkpoints", f"seed{seed}", objective)
            runs.setdefault(objective, {})[seed] = CHAPTER.pretrain(run_cfg, stage)
    return runs


def evaluate_all(backbones: dict[str, dict[int, nn.Module]], data: dict, cfg: SideBySideConfig, device: str = "cpu"
                 ) -> dict[str, list[dict]]:
    """:func:`evaluate_encoder` of every backbone ``{name: {seed: encoder}}``, each scored with its own seed:
    ``{name: [scores of each seed]}``."""
    return {name: [evaluate_encoder(encoder, data, cfg, seed, device) for seed, encoder in by_seed.items()]
            for name, by_seed in backbones.items()}
