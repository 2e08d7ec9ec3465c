"""Fus-MAE: a cross-attention-based data fusion approach for masked autoencoders (SAR + optical).

Chan-To-Hing, H., & Veeravalli, B. (2024). Fus-MAE: A cross-attention-based data fusion approach for
masked autoencoders in remote sensing. IGARSS 2024 (arXiv:2401.02764). No official code was published.

Everything about the paper lives in this package:

* :mod:`.config`: :class:`FusMAEConfig`, the ``tiny`` / ``small`` / ``full`` profiles, the paper's value of
  every ``full`` field it fixes (``PAPER``) and the book's reasons where ``full`` differs (``DEVIATIONS``);
* :mod:`.model`: both masking strategies (:func:`random_masking`), the batched input resize, the
  :class:`XAttnEncoder` and :class:`XAttnDecoder` blocks (eq. 2-5, 10-11), the encoder and decoders, the
  masked MSE (:func:`masked_mse_loss`) and the pretraining module :class:`FusMAE`;
* :mod:`.evaluation`: BigEarthNet-MM (official split lists) and SEN12MS (the scene-classification benchmark's
  lists and labels) at their native size with a line naming each split and its size, fine-tuning and the 1%
  probe of Table 1, the SEN12MS probe of Table 2, the random-init baseline, the paper's tables and the results
  tables, the co-located attention of the figures;
* ``CHAPTER``: the record the CLI, the notebook and the loop use.
"""
from ...config import Chapter, Pretraining
from .config import DEVIATIONS, PAPER, PROFILES, TRANSFER_INPUTS, FusMAEConfig
from .evaluation import (INPUTS, N_CLASSES, PAPER_TABLE1, PAPER_TABLE2, PRETRAINED, RANDOM_INIT, FusMAEClassifier,
                         PairedPatches, bigearthnet, colocated_attention, evaluation_rows, fine_tune_multilabel,
                         frozen_features, linear_probe_multilabel, linear_probe_sen12ms, probe_indices, results_table,
                         sen12ms, split_summary, stack_samples, table1_rows, table1_scores, table2_rows)
from .model import (IN_CHANS, MASKINGS, MODALITIES, VARIANTS, FusMAE, FusMAEEncoder, ModalityDecoder, XAttnDecoder,
                    XAttnEncoder, build_model, masked_mse_loss, model_meta, normalize_patches, parameter_counts,
                    random_masking, resize_to_input)


def build_pretraining(cfg: FusMAEConfig) -> Pretraining:
    """The pretraining module and the BigEarthNet-MM train split at its native size (labels unused; the
    module's ``forward`` resizes each batch)."""
    return Pretraining(build_model(cfg), bigearthnet(cfg, "train"), None, model_meta(cfg))


CHAPTER = Chapter(
    name="fus_mae", number=2, title="Fus-MAE: cross-attention data fusion for masked autoencoders",
    notebook="02_fus_mae.ipynb", config=FusMAEConfig, profiles=PROFILES, build_pretraining=build_pretraining,
    paper=PAPER, deviations=DEVIATIONS,
    claim=(
        "Fusing SAR and optical tokens by cross-attention inside a masked autoencoder beats ImageNet, DINO-MM"
        " and SatViT initialisations on BigEarthNet-MM and SEN12MS."),
    showcase="reconstructions_independent")

__all__ = ["CHAPTER", "DEVIATIONS", "FusMAE", "FusMAEClassifier", "FusMAEConfig", "FusMAEEncoder", "INPUTS",
           "IN_CHANS", "MASKINGS", "MODALITIES", "ModalityDecoder", "N_CLASSES", "PAPER", "PAPER_TABLE1",
           "PAPER_TABLE2", "PRETRAINED", "PROFILES", "PairedPatches", "RANDOM_INIT", "TRANSFER_INPUTS", "VARIANTS",
           "XAttnDecoder", "XAttnEncoder", "bigearthnet", "build_model", "build_pretraining", "colocated_attention",
           "evaluation_rows", "fine_tune_multilabel", "frozen_features", "linear_probe_multilabel",
           "linear_probe_sen12ms", "masked_mse_loss", "model_meta", "normalize_patches", "parameter_counts",
           "probe_indices", "random_masking", "resize_to_input", "results_table", "sen12ms", "split_summary",
           "stack_samples", "table1_rows", "table1_scores", "table2_rows"]
