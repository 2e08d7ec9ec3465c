"""DINO-MM: self-supervised ViTs for joint SAR-optical representation learning.

Wang, Y., Albrecht, C. M., & Zhu, X. X. (2022). Self-supervised vision transformers for joint SAR-optical
representation learning. IGARSS 2022. https://github.com/zhu-xlab/DINO-MM

Everything about the paper lives in this package:

* :mod:`.config`: :class:`DinoMMConfig`, the ``tiny`` / ``small`` / ``full`` profiles, the paper's value of
  every ``full`` field (``PAPER``) and the book's reasons where ``full`` differs (``DEVIATIONS``);
* :mod:`.model`: the 14-channel input, :class:`RandomSensorDrop`, multi-crop, the DINO head and loss, the
  pretraining module :class:`DINOMM`;
* :mod:`.evaluation`: BigEarthNet-MM without snow and clouds (official or the paper's SeCo lists), the linear
  probe of Table 2 (on augmented views through the frozen teacher, or on cached features), the random and
  supervised baselines, the results table, attention maps;
* ``CHAPTER``: the record the CLI, the notebook and the loop use.
"""
from ...config import Chapter, Pretraining
from .config import DEVIATIONS, PAPER, PROFILES, DinoMMConfig
from .evaluation import (N_CLASSES, PAPER_TABLE2, TRAIN_CROP_SCALE, FrozenProbe, SupervisedViT, augmented_probe,
                         bigearthnet, cls_attention_maps, eval_datasets, eval_input, label_fraction_name,
                         linear_evaluation, map_key, probe_head, probe_train_view, random_init_evaluation,
                         results_table, split_summary, supervised_evaluation)
from .model import (IN_CHANS, S1_CHANNELS, S2_CHANNELS, SENSOR_MODES, DINOHead, DINOLoss, DINOMM, DINONetwork,
                    MultiCropAugmentation, RandomSensorDrop, build_backbone, model_meta, select_sensors, sensor_mask,
                    stack_sensors)
from .weights import KEYMAP, RELEASED, load_released


def build_pretraining(cfg: DinoMMConfig) -> Pretraining:
    """The pretraining module and the BigEarthNet-MM train split without snow and clouds (labels unused)."""
    return Pretraining(DINOMM(cfg), bigearthnet(cfg, "train"), None, model_meta(cfg))


CHAPTER = Chapter(
    name="dino_mm", number=1, title="DINO-MM: self-supervised ViTs for joint SAR-optical representation learning",
    notebook="01_dino_mm.ipynb", config=DinoMMConfig, profiles=PROFILES, build_pretraining=build_pretraining,
    paper=PAPER, deviations=DEVIATIONS,
    claim=(
        "DINO self-distillation with RandomSensorDrop learns one ViT for SAR, optical and SAR-optical inputs "
        "whose linear probe beats random initialisation by over 20 mAP points and nears supervised training."),
    showcase="attention_maps", released=RELEASED, load_released=load_released)

__all__ = ["CHAPTER", "DEVIATIONS", "DINOHead", "DINOLoss", "DINOMM", "DINONetwork", "DinoMMConfig", "FrozenProbe",
           "IN_CHANS", "KEYMAP", "MultiCropAugmentation", "N_CLASSES", "PAPER", "PAPER_TABLE2", "PROFILES", "RELEASED",
           "RandomSensorDrop", "S1_CHANNELS", "S2_CHANNELS", "SENSOR_MODES", "SupervisedViT", "TRAIN_CROP_SCALE",
           "augmented_probe", "bigearthnet", "build_backbone", "build_pretraining", "cls_attention_maps",
           "eval_datasets", "eval_input", "label_fraction_name", "linear_evaluation", "load_released", "map_key",
           "model_meta", "probe_head", "probe_train_view", "random_init_evaluation", "results_table", "select_sensors",
           "sensor_mask", "split_summary", "stack_sensors", "supervised_evaluation"]
