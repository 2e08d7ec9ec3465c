"""SoftCon's data and evaluation recipe: SSL4EO-S12-ML for pretraining, the README's linear probes
(BigEarthNet-10% mAP, EuroSAT accuracy) and BigEarthNet fine-tuning, the random-init (or foundation-model)
baseline, the lambda ablation, and the results beside the README's table."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ...data import (BEN19_CLASSES, DW_CLASSES, EUROSAT_CLASSES, SMOKE_SAMPLES, SSL4EOS12, chapter_dataset,
                     dataset_root, open_dataset, smoke_subset)
from ...evaluate import (Task, compare_to_baseline, extract_features, fine_tune, label_fraction_subset, linear_probe,
                         random_init_baseline, score_ranges, seeded, subset, verdict_record)
from ...train import TrainResult, stage_dir
from ...weights import encoder_name, source_label
from .config import SoftConConfig
from .model import Backbone, SoftCon, create_backbone

#: The authors' README: (BigEarthNet-10% linear mAP, EuroSAT linear accuracy) in percent per
#: (arch, modality); ViT-B/14 uses a linear head on the last 4 blocks.
PAPER_RESULTS = {
    ("resnet50", "s2c"): (84.8, 98.6), ("resnet50", "s1"): (78.9, 87.1),
    ("vit_small_patch14_dinov2", "s2c"): (85.0, 97.1), ("vit_small_patch14_dinov2", "s1"): (80.3, 87.1),
    ("vit_base_patch14_dinov2", "s2c"): (86.8, 98.0), ("vit_base_patch14_dinov2", "s1"): (82.5, 89.1),
}
#: Index of the cirrus band B10 in the 13-band L1C order (absent from BigEarthNet's 12 L2A bands).
B10_INDEX = 10
#: AdamW weight decay of the BigEarthNet fine-tuning (the book's choice; the paper's is not public).
FINETUNE_WEIGHT_DECAY = 0.05
#: Score keys of :func:`evaluate_backbone` and their column names in the results tables.
METRICS = {"ben_mAP": "BigEarthNet linear mAP", "eurosat_OA": "EuroSAT linear OA",
           "ben_ft_mAP": "BigEarthNet fine-tune mAP"}
#: ``CHAPTER.pretrain``: ``(cfg, out_dir, **fit_kwargs) -> (module, result)``.
Pretrain = Callable[..., tuple[SoftCon, TrainResult]]


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def ssl4eo_ml(cfg: SoftConConfig) -> Dataset:
    """SSL4EO-S12-ML: one random season per location (drawn anew each epoch), its S2 L1C (or S1) image and
    its multi-label; with ``cfg.cache_data`` read once per process and kept in memory."""
    return chapter_dataset(cfg, "SSL4EOS12", "SSL4EO-S12", modalities=(cfg.modality,), seasons="random",
                           multilabels=True, seed=cfg.seed)


def pretraining_labels(cfg: SoftConConfig) -> torch.Tensor:
    """The multi-labels [N, 9] of the pretraining scenes in the seasons of the first epoch, read from the
    label file alone (``ssl4eo_s12_ml.json``, or the label arrays of a packed store): no image is decoded, so
    a full run gets its label statistics in seconds. N is what :func:`ssl4eo_ml` reads (a smoke run: its few)."""
    reader = SSL4EOS12(dataset_root(cfg, "SSL4EO-S12"), modalities=(cfg.modality,), seasons="random",
                       multilabels=True, seed=cfg.seed)
    rows = [reader.multilabel(i)[0] for i in range(len(smoke_subset(reader, cfg)))]
    return torch.as_tensor(np.stack(rows), dtype=torch.float32) if rows else torch.zeros(0, len(DW_CLASSES))


def _bigearthnet(cfg: SoftConConfig) -> tuple[int, Dataset, Dataset]:
    """(patches of the whole training split, the probe's training set, the test set); see
    :func:`bigearthnet_splits`."""
    root = dataset_root(cfg, "BigEarthNet-MM")
    full = open_dataset("BigEarthNetMM", root, cfg.cache_data and not cfg.smoke, split="train")
    train = smoke_subset(subset(full, label_fraction_subset(len(full), cfg.probe_fraction, cfg.seed)), cfg)
    return len(full), train, chapter_dataset(cfg, "BigEarthNetMM", "BigEarthNet-MM", split="test")


def bigearthnet_splits(cfg: SoftConConfig) -> tuple[Dataset, Dataset]:
    """BigEarthNet-MM: ``cfg.probe_fraction`` of the training split (drawn without replacement, seeded
    ``cfg.seed``; the README's BigEarthNet-10%) and the whole test split, as the reader's default split scheme
    gives them (v1: the official ``train.csv`` / ``test.csv``; v2: reBEN's ``split`` column). A smoke run
    keeps the first few patches of that 10% draw and of the test split."""
    _, train, test = _bigearthnet(cfg)
    return train, test


def eurosat_splits(cfg: SoftConConfig) -> tuple[Dataset, Dataset]:
    """EuroSAT-MS train and test (13 L1C bands): the split lists ``eurosat-{train,test}.txt`` where the
    root has them (torchgeo's), else the reader's fixed 60/20/20 split by file-name hash."""
    return tuple(chapter_dataset(cfg, "EuroSATMS", "EuroSAT-MS", split=split) for split in ("train", "test"))


def data_splits(cfg: SoftConConfig) -> list[str]:
    """One line per evaluation dataset: the split it reads and how many samples, counted from what
    :func:`bigearthnet_splits` and :func:`eurosat_splits` hand the probes (the validation splits are not used)."""
    smoke = f" (smoke run: only the first {SMOKE_SAMPLES} samples of each are kept)" if cfg.smoke else ""
    ben_root = dataset_root(cfg, "BigEarthNet-MM")
    n_full, train, test = _bigearthnet(cfg)
    scheme = ("official split lists train.csv / test.csv (v1 layout)" if (ben_root / "BigEarthNet-v1.0").is_dir()
              else "the split column of metadata.parquet (v2, reBEN)")
    drawn = (f"all {n_full} training patches" if cfg.probe_fraction == 1 else
             f"{100 * cfg.probe_fraction:g}% of the {n_full} training patches, drawn without replacement with seed "
             f"{cfg.seed}")
    lines = [f"BigEarthNet-MM, {scheme}: the probe and fine-tuning train on {drawn}, and test on the test split; "
             f"this run reads {len(train)} training and {len(test)} test patches{smoke}"]
    if cfg.modality == "s2c":
        euro_root = dataset_root(cfg, "EuroSAT-MS")
        scheme = ("split lists eurosat-train.txt / eurosat-test.txt" if (euro_root / "eurosat-train.txt").is_file()
                  else "no split lists, so the reader's fixed 60/20/20 split by file-name hash")
        e_train, e_test = eurosat_splits(cfg)
        lines.append(f"EuroSAT-MS, {scheme}: this run reads {len(e_train)} training and {len(e_test)} test "
                     f"images{smoke}")
    else:
        lines.append("EuroSAT: not evaluated for SAR input (the README's SAR row needs a Sentinel-1 EuroSAT, "
                     "which the book has no reader for)")
    return lines


def model_input(batch: dict[str, Any], modality: str) -> torch.Tensor:
    """The pretraining modality's image from a downstream batch: S1 (VV, VH) as is; S2 with 13 L1C bands,
    inserting B10 at the normalised mean 0.5 where a dataset has only the 12 L2A bands (BigEarthNet)."""
    if modality == "s1":
        return batch["s1"]
    x = batch["s2"]                                                          # [B, 12 or 13, H, W]
    if x.shape[1] == 12:
        fill = torch.full_like(x[:, :1], 0.5)
        x = torch.cat([x[:, :B10_INDEX], fill, x[:, B10_INDEX:]], dim=1)
    if x.shape[1] != 13:
        raise ValueError(f"batch['s2']: expected 12 or 13 bands, got {x.shape[1]}")
    return x


def feature_fn(backbone: Backbone, modality: str, last_blocks: int = 1) -> Callable[[dict[str, Any]], torch.Tensor]:
    """An ``extract_features`` encoder: batch dict -> [B, D] frozen features."""
    def encode(batch: dict[str, Any]) -> torch.Tensor:
        backbone.eval()
        return backbone.features(model_input(batch, modality), last_blocks)
    return encode


# --------------------------------------------------------------------------------------------------
# The README's protocol: linear probes and fine-tuning on BigEarthNet-10% (and EuroSAT)
# --------------------------------------------------------------------------------------------------
def linear_probe_benchmarks(backbone: Backbone, cfg: SoftConConfig, device: str | torch.device = "cpu",
                            checkpoint_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """The paper's linear probing: BigEarthNet (``cfg.probe_fraction`` of train, macro mAP) and, for MS,
    EuroSAT (overall accuracy). Keys ``ben_mAP``, ``eurosat_OA`` (percent).

    Features: the CLS token of the frozen backbone (the last ``probe_blocks`` CLS tokens concatenated) or
    ResNet-50's pool; probe: SGD momentum 0.9, lr ``probe_lr`` cosine, no weight decay, features
    standardised where ``cfg.probe_standardize``. Each probe checkpoints into its own stage folder.
    """
    encode = feature_fn(backbone, cfg.modality, cfg.probe_blocks)
    loop = cfg.stage(epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, optimizer="sgd", lr=cfg.probe_lr,
                     momentum=0.9, weight_decay=0.0, device=str(device))

    def probe(splits: tuple[Dataset, Dataset], task: Task, stage: str) -> dict[str, float]:
        (train_x, train_y), (test_x, test_y) = (extract_features(encode, d, device=device) for d in splits)
        return linear_probe(train_x, train_y, test_x, test_y, task, loop, standardize_features=cfg.probe_standardize,
                            checkpoint_dir=stage_dir(checkpoint_dir, stage))

    results = {"ben_mAP": probe(bigearthnet_splits(cfg), Task("multilabel", len(BEN19_CLASSES)),
                                "bigearthnet-probe")["mAP_macro"]}
    if cfg.modality == "s2c":
        results["eurosat_OA"] = probe(eurosat_splits(cfg), Task("multiclass", len(EUROSAT_CLASSES)),
                                      "eurosat-probe")["OA"]
    return results


def fine_tune_bigearthnet(backbone: Backbone, cfg: SoftConConfig, device: str | torch.device = "cpu",
                          checkpoint_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """End-to-end fine-tuning of a copy of ``backbone`` + a linear head on the BigEarthNet label fraction
    (AdamW, lr ``finetune_lr`` cosine, weight decay 0.05); key ``ben_ft_mAP`` (percent)."""
    head = seeded(lambda: nn.Linear(backbone.embed_dim, len(BEN19_CLASSES)), cfg.seed)
    model = nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": head})

    def predict(model: nn.ModuleDict, batch: dict[str, Any]) -> torch.Tensor:
        return model["head"](model["backbone"].features(model_input(batch, cfg.modality)))  # [B, 19]

    loop = cfg.stage(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size, optimizer="adamw",
                     lr=cfg.finetune_lr, weight_decay=FINETUNE_WEIGHT_DECAY, device=str(device))
    train, test = bigearthnet_splits(cfg)
    metrics, _ = fine_tune(model, train, test, predict, Task("multilabel", len(BEN19_CLASSES)), loop,
                           checkpoint_dir=stage_dir(checkpoint_dir, "bigearthnet-finetune"))
    return {"ben_ft_mAP": metrics["mAP_macro"]}


def evaluate_backbone(backbone: Backbone, cfg: SoftConConfig, device: str | torch.device = "cpu",
                      checkpoint_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Linear probing (BigEarthNet, EuroSAT) and, when ``cfg.finetune_epochs`` > 0, fine-tuning; the keys
    of :data:`METRICS`. Every stage checkpoints into its own folder of ``checkpoint_dir`` and resumes."""
    results = linear_probe_benchmarks(backbone, cfg, device, checkpoint_dir)
    if cfg.finetune_epochs:
        results.update(fine_tune_bigearthnet(backbone, cfg, device, checkpoint_dir))
    return results


def init_name(cfg: SoftConConfig) -> str:
    """The row of the backbone before EO pretraining: random weights, or the foundation model's."""
    return "random init" if not cfg.weights else "foundation model (no EO pretraining)"


def random_init_evaluation(cfg: SoftConConfig, device: str | torch.device = "cpu",
                           checkpoint_dir: str | os.PathLike | None = None
                           ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The backbone at its initialisation, evaluated like the pretrained one: with random weights one per
    seed of ``cfg.random_init_seed_list`` (seed ``cfg.seed`` is the network pretraining starts from);
    with foundation weights once (every seed gives the same network). Returns the mean and each seed's
    scores."""
    seeds = cfg.random_init_seed_list if not cfg.weights else [cfg.seed]

    def score(backbone: nn.Module, seed: int) -> dict[str, float]:
        return evaluate_backbone(backbone, cfg, device, stage_dir(checkpoint_dir, f"seed{seed}"))

    return random_init_baseline(lambda: create_backbone(cfg), score, seeds)


def run_name(lam: float) -> str:
    """The row of a pretraining run with weight ``lam`` of InfoNCE."""
    return "InfoNCE only, lambda=1" if lam == 1 else f"SoftCon, lambda={lam:g}"


def lambda_ablation(cfg: SoftConConfig, pretrain: Pretrain, checkpoint_dir: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> dict[float, dict[str, float]]:
    """Pretrain once per lambda in ``cfg.ablation_lambdas`` (everything else equal, from the same
    initialisation) with ``pretrain`` (``CHAPTER.pretrain``) and evaluate each; each run and its
    evaluation stages go to ``<checkpoint_dir>/lambda<lambda>`` and resume like the main run."""
    results = {}
    for lam in cfg.ablation_lambdas:
        run_cfg = dataclasses.replace(cfg, lam=lam)
        folder = stage_dir(checkpoint_dir, f"lambda{lam:g}")
        module, _ = pretrain(run_cfg, folder, log=lambda _: None)
        results[lam] = evaluate_backbone(module.encoder, run_cfg, device, folder)
    return results


@dataclass
class Evaluation:
    """The chapter's evaluation: scores per run (``{row: {metric key: percent}}``, the initialisation
    first, then SoftCon, then the ablation runs), the initialisation's per-seed scores, and the rows
    that the verdicts compare."""

    scores: dict[str, dict[str, float]]
    init_per_seed: list[dict[str, float]]
    method: str
    baselines: list[str]

    def verdicts(self) -> list[str]:
        """One sentence per baseline saying whether SoftCon beats it, and the seed range of the
        random-init row where it has several seeds."""
        lines = [compare_to_baseline(self.scores[self.method], self.scores[b], self.method, b)[1]
                 for b in self.baselines]
        if len(self.init_per_seed) > 1:
            spread = score_ranges(self.init_per_seed)
            lines.append(f"{self.baselines[0]} over {len(self.init_per_seed)} seeds: " +
                         ", ".join(f"{METRICS[k]} {v}" for k, v in spread.items()))
        return lines

    def verdict(self) -> dict:
        """SoftCon against the initialisation (the first baseline), as ``metrics.json`` keeps it."""
        return verdict_record(*compare_to_baseline(self.scores[self.method], self.scores[self.baselines[0]],
                                                   self.method, self.baselines[0]))

    def table(self):
        """Rows = runs, columns = the metrics' names, in percent (rounded to 0.1)."""
        import pandas as pd

        return pd.DataFrame(self.scores).T.rename(columns=METRICS).round(1)


def evaluate_runs(module: SoftCon, cfg: SoftConConfig, pretrain: Pretrain,
                  checkpoint_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Evaluation:
    """The chapter's evaluation of a pretrained ``module``: the backbone at its initialisation, after
    SoftCon pretraining, and after pretraining with each lambda of ``cfg.ablation_lambdas``; every stage
    checkpoints under ``checkpoint_dir`` (``random/``, ``softcon/``, ``lambda<lambda>/``)."""
    baseline = init_name(cfg)
    init_mean, init_per_seed = random_init_evaluation(cfg, device, stage_dir(checkpoint_dir, "random"))
    method = encoder_name("SoftCon", cfg.init) if cfg.init != "pretrain" else f"SoftCon, lambda={cfg.lam:g}"
    scores = {baseline: init_mean, method: evaluate_backbone(module.encoder, cfg, device,
                                                             stage_dir(checkpoint_dir, "softcon"))}
    for lam, result in lambda_ablation(cfg, pretrain, checkpoint_dir, device).items():
        scores[run_name(lam)] = result
    infonce = run_name(1.0)
    baselines = [baseline] + ([infonce] if infonce in scores else [])
    return Evaluation(scores, init_per_seed, method, baselines)


def paper_table(ours: dict[str, float], cfg: SoftConConfig, baseline: dict[str, float] | None = None):
    """The README's table (BigEarthNet-10% linear mAP, EuroSAT linear accuracy per backbone and input) with
    this run's scores ``ours`` (keys of :data:`METRICS`) in the row of its backbone and modality, or in a
    row of its own for the custom CPU ViT; ``baseline`` (the same keys: the backbone at its initialisation,
    :func:`init_name`) goes beside them, so the paper's number, this run's and the baseline's read side by side."""
    import pandas as pd

    init, this_run = init_name(cfg), source_label(cfg.init)

    def row(backbone: str, modality: str, ben: float | None, euro: float | None, mine: bool) -> dict[str, Any]:
        cells = {"backbone": backbone, "input": "MS 13 bands" if modality == "s2c" else "SAR VV/VH"}
        for key, name, paper_name, paper in (("ben_mAP", "BigEarthNet mAP", "BigEarthNet-10% mAP", ben),
                                             ("eurosat_OA", "EuroSAT OA", "EuroSAT OA", euro)):
            cells[f"{paper_name} (paper)"] = paper
            cells[f"{name} ({this_run})"] = ours.get(key) if mine else None
            if baseline is not None:
                cells[f"{name} ({init})"] = baseline.get(key) if mine else None
        return cells

    rows = [row(arch, modality, ben, euro, (arch, modality) == (cfg.arch, cfg.modality))
            for (arch, modality), (ben, euro) in PAPER_RESULTS.items()]
    if cfg.arch == "vit":
        rows.append(row(f"vit (dim {cfg.vit_dim}, depth {cfg.vit_depth}, {cfg.img_size} px)", cfg.modality,
                        None, None, True))
    return pd.DataFrame(rows)
