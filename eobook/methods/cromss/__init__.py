"""CromSS: cross-modal sample selection for pretraining segmentation encoders with noisy labels.

Liu, C., Albrecht, C. M., Wang, Y., Zhu, X. X. (2025). CromSS: Cross-modal pretraining with noisy labels
for remote sensing image segmentation. IEEE TGRS 63, doi:10.1109/TGRS.2025.3552642.
https://github.com/zhu-xlab/CromSS

Everything about the paper lives in this package:

* :mod:`.config`: :class:`CromSSConfig`, the ``tiny`` / ``small`` / ``full`` profiles, the paper's value of
  every ``full`` field (``PAPER``) and the book's reasons where ``full`` differs (``DEVIATIONS``);
* :mod:`.model`: the sample selection masks (eq. 8-12), the spatial-temporal label smoothing (eq. 13-15),
  the weighted losses (eq. 6, 7), the U-Nets and the pretraining module :class:`CromSS` (eq. 1);
* :mod:`.evaluation`: SSL4EO-S12@NoL, the three transfer tasks of Tables II-V (DFC2020 with PSPNet,
  SSL4EO-S12@DW with DeepLabV3+, SSL4EO-S12@OSM with FPN; frozen and fine-tuned encoders, cross-entropy +
  Dice), the paper's numbers, and the analyses of Figs. 8, 11, 12 and 13;
* ``CHAPTER``: the record the CLI, the notebook and the loop use.
"""
import dataclasses

from ...config import Chapter, Pretraining
from .config import DEVIATIONS, PAPER, PROFILES, TRANSFER_TASKS, CromSSConfig
from .evaluation import (DFC2020_EVAL_IDS, DFC2020_PAPER_CLASSES, DFC2020_TO_PAPER, ENCODER_SETTINGS, INPUTS,
                         METRICS, PAPER_DFC2020, PAPER_DW, PAPER_OSM, TASKS, CrossEntropyDice, DownstreamTask,
                         Relabelled, TaskSetup, Transfer, batchnorm_statistics_kl,
                         build_segmentation_model, downstream_datasets, downstream_evaluation, dw_test_images,
                         effective_crop, encoder_module_features, eurosat_images, miou_columns, noisy_label_dataset,
                         paper_row, pca_subset, pretraining_summary, random_s2_encoder, results_table,
                         scene_selection_masks, segmentation_predict, single_modal_config, split_summary, task_setup,
                         tile_size, transfer_augment, transfer_seeds, transfer_to_segmentation, variance_curves,
                         weight_drift, weights_name)
from .model import (FUSIONS, NUM_CLASSES, S2_9BAND_INDEX, CromSS, build_module, create_unet, cross_modal_enhance,
                    drop_unused_stages, entity_confidence, entity_selection_mask, gaussian_smooth, label_confidence,
                    label_selection_mask, model_meta, s1_unit_range, s2_band_index, selection_masks_of,
                    selection_schedule, spatial_temporal_smoothing, weighted_consistency_loss,
                    weighted_segmentation_loss)
from .weights import KEYMAPS, RELEASED, load_released


def build_pretraining(cfg: CromSSConfig) -> Pretraining:
    """The pretraining module and SSL4EO-S12@NoL (all four seasons with their Dynamic World masks).

    Tiles smaller than ``crop_size`` (the sample worlds' under a profile made for 264 px tiles) are used
    whole, which a printed line says."""
    dataset = noisy_label_dataset(cfg)
    tile = tile_size(dataset, "dw")
    if tile < cfg.crop_size:
        print(f"SSL4EO-S12 tiles of {tile} px are smaller than the {cfg.crop_size} px crop: pretraining on whole "
              f"{tile} px tiles")
        cfg = dataclasses.replace(cfg, crop_size=tile)
    return Pretraining(build_module(cfg), dataset, None, model_meta(cfg))


CHAPTER = Chapter(
    name="cromss", number=5, title="CromSS: cross-modal pretraining with noisy labels", notebook="05_cromss.ipynb",
    config=CromSSConfig, profiles=PROFILES, build_pretraining=build_pretraining, paper=PAPER, deviations=DEVIATIONS,
    claim=(
        "Pretraining U-Nets on noisy Dynamic World labels with cross-modal sample selection and spatial-"
        "temporal label smoothing improves segmentation transfer over random and single-modal pretraining."),
    showcase="fig9_10_segmentation_maps", released=RELEASED, load_released=load_released)

__all__ = ["CHAPTER", "CromSS", "CromSSConfig", "CrossEntropyDice", "DEVIATIONS", "DFC2020_EVAL_IDS",
           "DFC2020_PAPER_CLASSES", "DFC2020_TO_PAPER", "DownstreamTask", "ENCODER_SETTINGS", "FUSIONS", "INPUTS",
           "KEYMAPS", "METRICS", "NUM_CLASSES", "PAPER", "PAPER_DFC2020", "PAPER_DW", "PAPER_OSM", "PROFILES",
           "RELEASED", "Relabelled", "S2_9BAND_INDEX", "TASKS", "TRANSFER_TASKS", "TaskSetup", "Transfer",
           "batchnorm_statistics_kl", "build_module", "build_pretraining", "build_segmentation_model", "create_unet",
           "cross_modal_enhance", "downstream_datasets", "downstream_evaluation", "drop_unused_stages",
           "dw_test_images", "effective_crop", "encoder_module_features", "entity_confidence", "entity_selection_mask",
           "eurosat_images", "gaussian_smooth", "label_confidence", "label_selection_mask", "load_released",
           "miou_columns", "model_meta", "noisy_label_dataset", "paper_row", "pca_subset", "pretraining_summary",
           "random_s2_encoder", "results_table", "s1_unit_range", "s2_band_index", "scene_selection_masks",
           "segmentation_predict", "selection_masks_of", "selection_schedule", "single_modal_config",
           "spatial_temporal_smoothing", "split_summary", "task_setup", "tile_size", "transfer_augment",
           "transfer_seeds", "transfer_to_segmentation", "variance_curves", "weight_drift",
           "weighted_consistency_loss", "weighted_segmentation_loss", "weights_name"]
