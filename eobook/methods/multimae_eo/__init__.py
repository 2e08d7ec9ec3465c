"""MultiMAE meets Earth Observation: a multi-modal multi-task masked autoencoder pretrained on MMEarth.

Sosa, J., Rukhovich, D., Kacem, A., Aouada, D. (2024). MultiMAE meets Earth Observation: Pre-training
multi-modal multi-task masked autoencoders for Earth observation tasks (appendix, Sections 1-4).
https://github.com/josesosajs/multimae-meets-eo. Model design after Bachmann, R., et al. (2022). MultiMAE:
Multi-modal multi-task masked autoencoders. ECCV.

Everything about the paper lives in this package:

* :mod:`.config`: :class:`MultiMAEConfig`, the input sets, the ``tiny`` / ``small`` / ``full`` profiles, the
  paper's value of every ``full`` field (``PAPER``) and the book's reasons where ``full`` differs or where
  the value is the book's choice (``DEVIATIONS``);
* :mod:`.model`: the six modalities and their band groups, the Dirichlet allocation of visible tokens,
  input adapters, encoder, the decoders of Fig. 3, the loss of eq. (1), the pretraining module
  :class:`MultiMAE`;
* :mod:`.evaluation`: the MMEarth pretraining set, the GEO-Bench / EuroSAT / fMoW-Sentinel tasks (fMoW's 10%
  training draw recorded in the run folder), linear probing and
  end-to-end fine-tuning, the ConvNeXt segmentation head, the random-init baseline, the results table and
  the data of Figs. 5 and 6;
* ``CHAPTER``: the record the CLI, the notebook and the loop use.
"""
from ...config import Chapter, Pretraining
from .config import DEVIATIONS, INPUT_SETS, PAPER, PROFILES, TASKS, MultiMAEConfig
from .evaluation import (METRICS, PAPER_RESULTS, PROTOCOLS, TASK_CLASSES, ConvNeXtSegmentationHead, DownstreamTask,
                         MultiMAETaskModel, describe_pretraining, downstream_tasks, evaluate_downstream, evaluate_task,
                         evaluation_checkpoint_dir, load_task, modality_table, pretraining_dataset,
                         random_init_evaluation, reconstruction_examples, record_task_data, results_table,
                         sample_ids, segmentation_examples, smoke_task, task_inputs)
from .model import (MODALITIES, NUM_SEG_CLASSES, SPECTRAL_MODALITIES, MultiMAE, MultiMAEDecoder, MultiMAEEncoder,
                    PatchInputAdapter, build_encoder, build_model, dirichlet_shares, dirichlet_token_allocation,
                    geobench_band_codes, largest_remainder, modality_band_indices, modality_channels, model_meta,
                    parameter_counts, predictions_to_images, reconstruction_loss, resize_modalities, split_s2,
                    visible_indices, visible_token_mask)


def build_pretraining(cfg: MultiMAEConfig) -> Pretraining:
    """The pretraining module and the MMEarth training split (default collation)."""
    return Pretraining(build_model(cfg), pretraining_dataset(cfg), None, model_meta(cfg))


CHAPTER = Chapter(
    name="multimae_eo", number=3, title="MultiMAE meets Earth Observation", notebook="03_multimae_eo.ipynb",
    config=MultiMAEConfig, profiles=PROFILES, build_pretraining=build_pretraining, paper=PAPER,
    deviations=DEVIATIONS,
    claim=(
        "A multi-modal multi-task masked autoencoder pretrained on six MMEarth modalities transfers to "
        "classification and segmentation from any subset of its input modalities."),
    showcase="fig5_reconstructions")

__all__ = ["CHAPTER", "DEVIATIONS", "INPUT_SETS", "METRICS", "MODALITIES", "NUM_SEG_CLASSES", "PAPER", "PAPER_RESULTS",
           "PROFILES", "PROTOCOLS", "SPECTRAL_MODALITIES", "TASKS", "TASK_CLASSES", "ConvNeXtSegmentationHead",
           "DownstreamTask", "MultiMAE", "MultiMAEConfig", "MultiMAEDecoder", "MultiMAEEncoder", "MultiMAETaskModel",
           "PatchInputAdapter", "build_encoder", "build_model", "build_pretraining", "describe_pretraining",
           "dirichlet_shares", "dirichlet_token_allocation", "downstream_tasks", "evaluate_downstream", "evaluate_task",
           "evaluation_checkpoint_dir", "geobench_band_codes", "largest_remainder", "load_task",
           "modality_band_indices", "modality_channels", "modality_table", "model_meta", "parameter_counts",
           "predictions_to_images", "pretraining_dataset", "random_init_evaluation", "reconstruction_examples",
           "reconstruction_loss", "record_task_data", "resize_modalities", "results_table", "sample_ids",
           "segmentation_examples", "smoke_task", "split_s2", "task_inputs", "visible_indices", "visible_token_mask"]
