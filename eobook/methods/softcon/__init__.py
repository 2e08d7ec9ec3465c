"""SoftCon: multi-label guided soft contrastive learning with continual pretraining.

Wang, Y., Albrecht, C. M., Zhu, X. X. (2024). Multi-label guided soft contrastive learning for efficient
Earth observation pretraining. arXiv:2405.20462 (IEEE TGRS). Authors' repo: zhu-xlab/softcon.

Only the abstract, Fig. 4 and the authors' README are public (``shared/papers/NOTES.md``); what they leave
open is chosen, stated and tested here. Everything about the paper lives in this package:

* :mod:`.config`: :class:`SoftConConfig`, the ``tiny`` / ``small`` / ``full`` profiles, the published value
  of every ``full`` field (``PAPER``) and the book's reasons and choices (``DEVIATIONS``);
* :mod:`.model`: SSL4EO-S12-ML multi-labels from Dynamic World, the label similarity, InfoNCE and the soft
  contrastive loss, the backbones and their initialisation from RGB foundation models, the MoCo-v3-style
  pretraining module :class:`SoftCon` with Siamese masking;
* :mod:`.evaluation`: the data, the README's linear probes (BigEarthNet-10%, EuroSAT) and fine-tuning, the
  random-init baseline, the lambda ablation and the README's table;
* ``CHAPTER``: the record the CLI, the notebook and the loop use; :func:`evaluate` is the chapter's whole
  evaluation (it pretrains the ablation runs through ``CHAPTER.pretrain``).
"""
from __future__ import annotations

import os

import torch

from ...config import Chapter, Pretraining
from ...evaluate import seeded
from .config import ARCHS, DEVIATIONS, MODALITIES, PAPER, PROFILES, SoftConConfig
from .evaluation import (B10_INDEX, METRICS, PAPER_RESULTS, Evaluation, bigearthnet_splits, data_splits,
                         eurosat_splits, evaluate_backbone, evaluate_runs, feature_fn, fine_tune_bigearthnet,
                         init_name, lambda_ablation, linear_probe_benchmarks, model_input, paper_table,
                         pretraining_labels, random_init_evaluation, run_name, ssl4eo_ml)
from .model import (HUB_WEIGHTS, MODALITY_CHANNELS, Backbone, Branch, SoftCon, adapt_patch_embed,
                    build_multilabels_from_dw, create_backbone, embedding_logits, gather_with_grad, grey_scene_check,
                    hub_weights_file, info_nce, label_order, label_similarity, load_foundation_weights, mixed_target,
                    mlp, model_meta, multilabels_to_json, pretraining_module, soft_contrastive_loss,
                    soft_target_cross_entropy, soft_target_entropy, softcon_loss, start_weights, write_multilabels_json)
from .weights import KEYMAP, RELEASED, load_released


def build_pretraining(cfg: SoftConConfig) -> Pretraining:
    """SoftCon on SSL4EO-S12-ML: one random season per location, its S2 L1C (or S1) image and multi-label.

    The module is built with torch's generator seeded ``cfg.seed`` (and restored afterwards), so every run of
    a profile, the lambda ablation's included, starts from the same network, the random-init row's first.
    A smoke run downloads no weights (:func:`.model.start_weights`): without them at hand it starts from
    random weights and prints the line that says so (the notebook resolves ``cfg`` first and prints it there).
    """
    resolved, line = start_weights(cfg)
    if resolved != cfg:
        print(line)
    cfg = resolved
    dataset = ssl4eo_ml(cfg)
    module = seeded(lambda: pretraining_module(cfg), cfg.seed)
    return Pretraining(module, dataset, None, model_meta(cfg, module.encoder))


CHAPTER = Chapter(
    name="softcon", number=4, title="SoftCon: multi-label guided soft contrastive continual pretraining",
    notebook="04_softcon.ipynb", config=SoftConConfig, profiles=PROFILES, build_pretraining=build_pretraining,
    paper=PAPER, deviations=DEVIATIONS,
    claim=(
        "Contrastive learning toward soft targets from multi-label land cover, continued from vision "
        "foundation models, gives strong EO encoders at a fraction of the usual pretraining cost."),
    showcase="similarity_matrices",
    small_limits=(
        "The small world cannot show the claim: it has no foundation model to continue from, and its scenes hold "
        "most of the 9 land-cover classes each, so the soft targets are nearly uniform (the chapter gives the "
        "evidence)."),
    released=RELEASED, load_released=load_released)


def evaluate(module: SoftCon, cfg: SoftConConfig, checkpoint_dir: str | os.PathLike | None = None,
             device: str | torch.device = "cpu") -> Evaluation:
    """The chapter's evaluation (:func:`.evaluation.evaluate_runs`) with the ablation runs pretrained by
    ``CHAPTER.pretrain``: the initialisation, SoftCon and every lambda of ``cfg.ablation_lambdas``."""
    return evaluate_runs(module, cfg, CHAPTER.pretrain, checkpoint_dir, device)


__all__ = ["ARCHS", "B10_INDEX", "Backbone", "Branch", "CHAPTER", "DEVIATIONS", "Evaluation", "HUB_WEIGHTS", "KEYMAP",
           "METRICS", "MODALITIES", "MODALITY_CHANNELS", "PAPER", "PAPER_RESULTS", "PROFILES", "RELEASED", "SoftCon",
           "SoftConConfig", "adapt_patch_embed", "bigearthnet_splits", "build_multilabels_from_dw",
           "build_pretraining", "create_backbone", "data_splits", "embedding_logits", "eurosat_splits", "evaluate",
           "evaluate_backbone", "evaluate_runs", "feature_fn", "fine_tune_bigearthnet", "gather_with_grad",
           "grey_scene_check", "hub_weights_file", "info_nce", "init_name", "label_order", "label_similarity",
           "lambda_ablation", "linear_probe_benchmarks", "load_foundation_weights", "load_released", "mixed_target",
           "mlp", "model_input", "model_meta", "multilabels_to_json", "paper_table", "pretraining_labels",
           "pretraining_module", "random_init_evaluation", "run_name", "soft_contrastive_loss",
           "soft_target_cross_entropy", "soft_target_entropy", "softcon_loss", "ssl4eo_ml", "start_weights",
           "write_multilabels_json"]
