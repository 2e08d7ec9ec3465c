"""Baselines and verdicts: the random-init baseline over seeds, averages and spreads, wins and losses."""
from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

Scores = TypeVar("Scores", bound=dict)


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``build()`` with torch's global generator seeded ``seed`` inside, and restored afterwards (so building
    a baseline never shifts the random state of the run around it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def random_init_baseline(build: Callable[[], nn.Module], score: Callable[[nn.Module, int], Scores],
                         seeds: Sequence[int]) -> tuple[Scores, list[Scores]]:
    """The "random init" row: ``score(network, seed)`` of a network built with random weights for each seed
    (the seed names the stage, e.g. its checkpoint folder).

    Every chapter uses the run's seed and the next ones (``cfg.seed``, ``cfg.seed + 1``, ...). Returns the
    per-column mean and each seed's scores: on little data one random network's probe moves by one to
    several points from seed to seed, and the spread is part of the result.
    """
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    per_seed = [score(seeded(build, seed), seed) for seed in seeds]
    return average_scores(per_seed), per_seed


def average_scores(runs: list[Scores]) -> Scores:
    """Column-wise mean of several runs' scores (e.g. random initialisations with different seeds); every
    run must have the same columns."""
    if not runs or any(set(run) != set(runs[0]) for run in runs):
        raise ValueError(f"expected one or more runs with the same columns, got {[sorted(map(str, run)) for run in runs]}")
    return {column: float(np.mean([run[column] for run in runs])) for column in runs[0]}


def score_ranges(runs: list[dict[Hashable, float]]) -> dict[Hashable, str]:
    """``{column: "min-max"}`` over several runs, to print the seed-to-seed spread beside their mean."""
    if not runs:
        raise ValueError("expected one or more runs, got none")
    return {column: f"{min(run[column] for run in runs):.1f}-{max(run[column] for run in runs):.1f}"
            for column in runs[0]}


def beats_baseline(wins: int, columns: int, mean_gain: float) -> bool:
    """The book's verdict rule: pretraining beats its baseline when it wins more than half the columns and
    gains on average (used by :func:`compare_to_baseline` and for the verdicts that runs keep)."""
    return wins > columns / 2 and mean_gain > 0


def compare_to_baseline(scores: dict[str, float], baseline: dict[str, float], name: str = "pretrained",
                        baseline_name: str = "random init") -> tuple[dict[str, float], str]:
    """Per-column gain of ``scores`` over ``baseline`` (higher is better), and a sentence saying who wins.

    Only the columns both share are compared. Returns ``({column: score - baseline}, sentence)``; the
    sentence counts the columns won and gives the mean gain, so that a chapter states its outcome
    instead of leaving the reader to diff two tables.
    """
    columns = [c for c in scores if c in baseline]
    if not columns:
        raise ValueError(f"scores and baseline share no column: {sorted(scores)} vs {sorted(baseline)}")
    gains = {c: float(scores[c]) - float(baseline[c]) for c in columns}
    wins = sum(g > 0 for g in gains.values())
    mean = sum(gains.values()) / len(gains)
    verdict = "beats" if beats_baseline(wins, len(gains), mean) else "does not beat"
    sentence = (f"{name} {verdict} {baseline_name}: higher in {wins} of {len(gains)} columns, "
                f"mean gain {mean:+.1f} points ({', '.join(f'{c} {g:+.1f}' for c, g in gains.items())}).")
    return gains, sentence


def verdict_record(gains: dict[str, float], sentence: str) -> dict:
    """What :func:`compare_to_baseline` found, as ``metrics.json`` keeps it for the book's overview and for
    comparing seeds: columns compared, columns won, mean gain (points) and the sentence."""
    return {"columns": len(gains), "wins": sum(g > 0 for g in gains.values()),
            "mean_gain": round(sum(gains.values()) / max(len(gains), 1), 2), "sentence": sentence}
