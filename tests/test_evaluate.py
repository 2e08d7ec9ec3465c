"""Evaluation metrics against hand-computed values; probes beat chance on separable features."""
import numpy as np
import pytest
import torch

from eobook.evaluate import (Task, classification_metrics, knn_classify, label_fraction_subset, linear_probe,
                             multilabel_map, segmentation_metrics)
from eobook.train import TrainConfig, list_checkpoints


def loop(**settings):
    return TrainConfig(device="cpu", log_every=0, **settings)


def test_multilabel_map_hand_computed():
    # class 0: positives ranked 1st and 3rd of 3 -> AP = (1/1 + 2/3) / 2 = 5/6
    # class 1: its only positive ranked 1st -> AP = 1;  class 2: no positive -> left out of the macro mean
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.1, 0.2], [0.4, 0.3, 0.3]])
    targets = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    out = multilabel_map(scores, targets)
    assert out["mAP_macro"] == pytest.approx(100 * (5 / 6 + 1) / 2)
    # micro: all 9 scores pooled; positives 0.9, 0.8, 0.4 at ranks 1, 2, 4 -> (1 + 1 + 3/4) / 3
    assert out["mAP_micro"] == pytest.approx(100 * (1 + 1 + 0.75) / 3)


def test_multilabel_map_refuses_bad_input():
    with pytest.raises(ValueError, match="no positive label"):
        multilabel_map(torch.rand(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        multilabel_map(torch.tensor([[float("nan")]]), torch.ones(1, 1))


def test_classification_metrics_hand_computed():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    targets = torch.tensor([0, 2, 2, 1])  # predictions 0, 1, 2, 0 -> 2 of 4 right
    out = classification_metrics(logits, targets, 3, top_k=(1, 3))
    assert out["top1"] == out["OA"] == pytest.approx(50.0)
    assert out["top3"] == pytest.approx(100.0)
    # recalls: class 0 1/1, class 1 0/1, class 2 1/2 -> AA = 50%; weighted recall = OA
    assert out["AA"] == pytest.approx(50.0)
    assert out["recall_w"] == pytest.approx(50.0)
    # precisions: class 0 1/2, class 1 0/1, class 2 1/1; weights 1/4, 1/4, 2/4
    assert out["precision_w"] == pytest.approx(100 * (0.5 * 0.25 + 0 + 1.0 * 0.5))


def test_segmentation_metrics_hand_computed_with_ignore_index():
    target = torch.tensor([[0, 0, 1, 255], [1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]])
    out = segmentation_metrics(pred, target, num_classes=3, ignore_index=255)
    # 7 scored pixels, 5 right
    assert out["OA"] == pytest.approx(100 * 5 / 7)
    # IoU: c0 1/(2+2-1)=1/3, c1 2/(3+3-2)=1/2, c2 2/(2+2-2)=1
    assert out["mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1) / 3)
    # F1: c0 2/4, c1 4/6, c2 4/4; AA: recalls 1/2, 2/3, 1
    assert out["mF1"] == pytest.approx(100 * (0.5 + 4 / 6 + 1) / 3)
    assert out["AA"] == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 3)


def test_label_fraction_subset_without_replacement():
    idx = label_fraction_subset(1000, 0.01, seed=1)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert np.array_equal(idx, label_fraction_subset(1000, 0.01, seed=1))
    assert not np.array_equal(idx, label_fraction_subset(1000, 0.01, seed=2))
    with pytest.raises(ValueError, match=r"label fraction: expected a value in \(0, 1\], got 0"):
        label_fraction_subset(1000, 0, seed=1)


def _separable(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + 3 * torch.nn.functional.one_hot(y, 8).float()
    return x, y


def test_linear_probe_and_knn_beat_chance():
    (xtr, ytr), (xte, yte) = _separable(300, 0), _separable(100, 1)
    sgd = loop(epochs=20, batch_size=32, optimizer="sgd", lr=0.1)
    out = linear_probe(xtr, ytr, xte, yte, Task("multiclass", 3), sgd, standardize_features=True)
    assert out["top1"] > 90
    scores = knn_classify(xtr, ytr, xte, k=10)
    assert (scores.argmax(1) == yte).float().mean() > 0.9
    multi = torch.nn.functional.one_hot(ytr, 3).float()
    out = linear_probe(xtr, multi, xte, torch.nn.functional.one_hot(yte, 3).float(), Task("multilabel", 3), sgd)
    assert out["mAP_macro"] > 90


def test_linear_probe_keeps_the_last_partial_batch():
    xtr, ytr = _separable(10, 0)
    from eobook.evaluate import Supervised, TensorBatches, train_supervised

    head = torch.nn.Linear(8, 3)
    result = train_supervised(head, TensorBatches(x=xtr, label=ytr), lambda m, b: m(b["x"]), Task("multiclass", 3),
                              loop(epochs=2, batch_size=4, optimizer="sgd", lr=0.1), collate_fn=TensorBatches.collate)
    assert result.steps == 2 * 3                                # 4 + 4 + 2 samples an epoch
    assert isinstance(Supervised(head, lambda m, b: m(b["x"]), Task("multiclass", 3)), torch.nn.Module)


def test_an_interrupted_probe_resumes_to_the_uninterrupted_result(tmp_path):
    """A probe trains in the loop pretraining uses: killed after a checkpoint, the same call resumes there and
    ends exactly where an uninterrupted probe ends."""
    from eobook.runtime import set_deterministic

    set_deterministic(True)
    (xtr, ytr), (xte, yte) = _separable(96, 0), _separable(40, 1)
    sgd = loop(epochs=4, batch_size=16, optimizer="sgd", lr=0.05, checkpoint_every=5)
    task = Task("multiclass", 3)
    straight = linear_probe(xtr, ytr, xte, yte, task, sgd, checkpoint_dir=tmp_path / "a")
    linear_probe(xtr, ytr, xte, yte, task, sgd, checkpoint_dir=tmp_path / "b", stop_after_steps=10)
    assert [p.name for p in list_checkpoints(tmp_path / "b")][-1] == "ckpt-00000010.pt"
    resumed = linear_probe(xtr, ytr, xte, yte, task, sgd, checkpoint_dir=tmp_path / "b")
    assert resumed == straight
    a, b = (torch.load(list_checkpoints(tmp_path / d)[-1], weights_only=False)["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_with_frozen_encoder_keeps_its_batchnorm_statistics():
    from torch import nn

    from eobook.evaluate import fine_tune

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
    model = nn.Sequential(encoder, nn.Linear(8, 2))
    data = [{"x": torch.randn(4) + 3, "label": torch.tensor(i % 2)} for i in range(32)]
    before = encoder[1].running_mean.clone()
    task, adamw = Task("multiclass", 2), loop(epochs=2, batch_size=8, lr=1e-2)
    weights = encoder[0].weight.detach().clone()
    fine_tune(model, data, data, lambda m, b: m(b["x"]), task, adamw, frozen=list(encoder.parameters()))
    assert torch.equal(encoder[1].running_mean, before) and torch.equal(encoder[0].weight, weights)
    fine_tune(model, data, data, lambda m, b: m(b["x"]), task, adamw)
    assert not torch.equal(encoder[1].running_mean, before)   # end to end they adapt, as they should


def test_random_init_baseline_seeds_each_network_and_leaves_the_global_state_alone():
    from eobook.evaluate import random_init_baseline

    torch.manual_seed(123)
    state = torch.get_rng_state()
    mean, per_seed = random_init_baseline(lambda: torch.nn.Linear(3, 1),
                                          lambda net, seed: {"w": float(net.weight.detach().sum()), "seed": seed}, [0, 1, 0])
    assert torch.equal(torch.get_rng_state(), state)
    assert per_seed[0] == per_seed[2] != per_seed[1]                 # a seed always builds the same network
    assert mean["w"] == pytest.approx(sum(r["w"] for r in per_seed) / 3)
    torch.manual_seed(0)
    assert per_seed[0]["w"] == pytest.approx(float(torch.nn.Linear(3, 1).weight.detach().sum()))


def test_average_scores_and_ranges_over_seeds():
    from eobook.evaluate import average_scores, score_ranges

    runs = [{"a": 70.0, "b": 50.0}, {"a": 74.0, "b": 53.0}, {"a": 72.5, "b": 50.5}]
    assert average_scores(runs) == pytest.approx({"a": 72.166667, "b": 51.166667})
    assert score_ranges(runs) == {"a": "70.0-74.0", "b": "50.0-53.0"}
    with pytest.raises(ValueError, match="same columns"):
        average_scores([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError, match="one or more"):
        average_scores([])
    with pytest.raises(ValueError, match="one or more"):
        score_ranges([])


def test_compare_to_baseline_counts_wins_and_states_the_outcome():
    from eobook.evaluate import compare_to_baseline

    gains, sentence = compare_to_baseline({"a": 80.0, "b": 70.0, "c": 60.0, "only here": 1.0},
                                          {"a": 75.0, "b": 71.0, "c": 50.0}, "SoftCon")
    assert gains == {"a": 5.0, "b": -1.0, "c": 10.0}
    assert sentence.startswith("SoftCon beats random init: higher in 2 of 3 columns, mean gain +4.7")
    _, sentence = compare_to_baseline({"a": 70.0, "b": 72.0}, {"a": 75.0, "b": 71.0})
    assert "does not beat" in sentence and "1 of 2" in sentence
    with pytest.raises(ValueError, match="share no column"):
        compare_to_baseline({"a": 1.0}, {"b": 1.0})


def test_the_verdict_rule_needs_most_columns_and_a_positive_mean():
    from eobook.evaluate import beats_baseline, compare_to_baseline, verdict_record

    assert beats_baseline(2, 3, 0.1) and not beats_baseline(2, 4, 5.0) and not beats_baseline(3, 3, -0.1)
    for scores in ({"a": 80.0, "b": 70.0, "c": 60.0}, {"a": 80.0, "b": 60.0}, {"a": 76.0, "b": 60.0, "c": 40.0}):
        record = verdict_record(*compare_to_baseline(scores, {"a": 75.0, "b": 71.0, "c": 50.0}))
        assert beats_baseline(record["wins"], record["columns"], record["mean_gain"]) == (" beats " in record["sentence"])


def test_segmentation_means_run_over_the_evaluated_classes_only():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 2, 1, 1]])                          # class 2 predicted once, never in the targets
    everything = segmentation_metrics(pred, target, num_classes=3)
    assert everything["mIoU"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)   # class 2 enters as IoU 0
    evaluated = segmentation_metrics(pred, target, num_classes=3, classes=(0, 1))
    assert evaluated["mIoU"] == pytest.approx(100 * (1 / 2 + 1) / 2) and evaluated["OA"] == pytest.approx(75.0)
    assert evaluated["AA"] == pytest.approx(100 * (1 / 2 + 1) / 2) and evaluated["classes"] == 2
    # an evaluated class absent from the test labels does not enter the means as a zero
    assert segmentation_metrics(pred, target, num_classes=3, classes=(0, 1, 2)) == evaluated


def test_fine_tuning_augments_training_batches_only():
    from eobook.evaluate import fine_tune

    seen = []

    def augment(batch, ctx):
        seen.append(ctx.rand(len(batch["x"])).shape[0])           # draws from the step (the RNG contract)
        return {**batch, "x": batch["x"] * 0}                     # a transform the model must learn around

    data = [{"x": torch.randn(4), "label": torch.tensor(i % 2)} for i in range(16)]
    model = torch.nn.Linear(4, 2)
    scores, result = fine_tune(model, data, data, lambda m, b: m(b["x"]), Task("multiclass", 2),
                               loop(epochs=2, batch_size=8, lr=0.1), augment=augment)
    assert seen == [8] * result.steps and result.steps == 4        # every training batch, none of the test set
    assert "OA" in scores


def test_verdict_record_counts_what_the_sentence_says():
    from eobook.evaluate import compare_to_baseline, verdict_record

    gains, sentence = compare_to_baseline({"a": 80.0, "b": 70.0, "c": 60.0}, {"a": 75.0, "b": 71.0, "c": 50.0})
    record = verdict_record(gains, sentence)
    assert (record["columns"], record["wins"], record["mean_gain"]) == (3, 2, 4.67) and record["sentence"] == sentence


def test_a_probe_stage_folder_refuses_another_probe(tmp_path):
    from eobook.train import CheckpointError

    (xtr, ytr), (xte, yte) = _separable(40, 0), _separable(20, 1)
    sgd, task = loop(epochs=2, batch_size=16, optimizer="sgd", lr=0.05), Task("multiclass", 3)
    linear_probe(xtr, ytr, xte, yte, task, sgd, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="samples: expected 20, checkpoint has 40"):
        linear_probe(xtr[:20], ytr[:20], xte, yte, task, sgd, checkpoint_dir=tmp_path)
    one = linear_probe(xtr[:1], ytr[:1], xte, yte, task, sgd, standardize_features=True)   # one sample: no NaN
    assert 0 <= one["OA"] <= 100


def test_segmentation_scores_accumulated_by_batch_equal_the_whole_set():
    from eobook.evaluate import SegmentationScores

    g = torch.Generator().manual_seed(0)
    preds, targets = torch.randint(0, 4, (6, 5, 5), generator=g), torch.randint(-1, 4, (6, 5, 5), generator=g)
    whole = segmentation_metrics(preds, targets, 4, ignore_index=-1)
    running = SegmentationScores(4, ignore_index=-1)
    for i in range(0, 6, 2):
        running.update(preds[i:i + 2], targets[i:i + 2])
    assert running.compute() == pytest.approx(whole)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 4\)"):
        running.update(preds[:1], torch.full((1, 5, 5), 7))
