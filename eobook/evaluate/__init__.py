"""Evaluation: the papers' metrics, the downstream protocols (probes, kNN, fine-tuning, segmentation
transfer, all trained in the one loop) and the baselines every chapter compares against.

* :mod:`~eobook.evaluate.metrics`: mAP, OA/AA/top-k/weighted P-R-F1, mIoU/mF1, over whole test sets;
* :mod:`~eobook.evaluate.transfer`: :class:`Task`, features of frozen encoders, :func:`linear_probe`,
  :func:`fine_tune`, :func:`knn_classify`, label-fraction subsets;
* :mod:`~eobook.evaluate.baselines`: :func:`random_init_baseline`, averages, spreads and the verdict line.
"""
from .baselines import (average_scores, beats_baseline, compare_to_baseline, random_init_baseline, score_ranges,
                        seeded, verdict_record)
from .metrics import SegmentationScores, classification_metrics, multilabel_map, segmentation_metrics
from .transfer import (Supervised, Task, TensorBatches, drop_unlabelled, extract_features, fine_tune, knn_classify,
                       label_fraction_subset, linear_probe, predict_and_score, standardize, subset, train_supervised)

__all__ = ["SegmentationScores", "Supervised", "Task", "TensorBatches", "average_scores", "beats_baseline",
           "classification_metrics", "compare_to_baseline", "drop_unlabelled", "extract_features", "fine_tune",
           "knn_classify", "label_fraction_subset", "linear_probe", "multilabel_map", "predict_and_score",
           "random_init_baseline", "score_ranges", "seeded", "segmentation_metrics", "standardize", "subset",
           "train_supervised", "verdict_record"]
