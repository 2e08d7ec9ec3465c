"""Profiles: overrides by name, type coercion from CLI strings, and errors that name the field."""
from dataclasses import dataclass

import pytest

from eobook.config import (CHAPTERS, ChapterConfig, ConfigError, apply_overrides, check_range, get_profile,
                           register_chapter)


@dataclass(frozen=True)
class ToyConfig(ChapterConfig):
    mask_ratio: float = 0.75
    crops: tuple[int, int] = (2, 8)
    label_fraction: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "mask_ratio", 0.0, 1.0, high_open=True)


@pytest.fixture
def toy_chapter():
    register_chapter("toy", 99, "Toy", "toy.ipynb", tiny=ToyConfig(), small=ToyConfig(epochs=2), full=ToyConfig(epochs=100))
    yield "toy"
    CHAPTERS.pop("toy")


def test_override_by_name_coerces_cli_strings(toy_chapter):
    cfg = get_profile(toy_chapter, "full", epochs="3", lr="1e-4", deterministic="true", crops="[1, 4]")
    assert (cfg.epochs, cfg.lr, cfg.deterministic, cfg.crops) == (3, 1e-4, True, (1, 4))
    assert cfg.profile_name == "full"
    assert get_profile(toy_chapter, "full").epochs == 100  # the registered profile is untouched


def test_optional_field_accepts_none_and_numbers(toy_chapter):
    assert get_profile(toy_chapter, "tiny", label_fraction="0.01").label_fraction == 0.01
    assert get_profile(toy_chapter, "tiny", label_fraction="none").label_fraction is None


def test_unknown_parameter_lists_valid_names(toy_chapter):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['epoch'\].*valid parameters: .*'epochs'"):
        get_profile(toy_chapter, "tiny", epoch=3)


def test_unknown_profile_and_chapter_list_valid_ones(toy_chapter):
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'.*\['tiny', 'small', 'full'\]"):
        get_profile(toy_chapter, "huge")
    with pytest.raises(ConfigError, match=r"unknown chapter 'nope'.*'toy'"):
        get_profile("nope")


@pytest.mark.parametrize("field, value, message", [
    ("mask_ratio", "1.5", r"mask_ratio: expected a value in \[0.0, 1.0\), got 1.5"),
    ("epochs", "0", r"epochs: expected a value > 0, got 0"),
    ("epochs", "2.5", r"epochs: expected an integer, got '2.5'"),
    ("lr", "fast", r"lr: expected a number, got 'fast'"),
    ("deterministic", "maybe", r"deterministic: expected true or false"),
    ("optimizer", "lion", r"optimizer: expected one of \['adamw', 'adam', 'sgd'\], got 'lion'"),
    ("crops", "[1, 2, 3]", r"crops: expected 2 values, got 3"),
])
def test_bad_values_name_the_field(toy_chapter, field, value, message):
    with pytest.raises(ConfigError, match=message):
        get_profile(toy_chapter, "tiny", **{field: value})


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ConfigError, match="warmup_epochs: expected at most epochs=2"):
        apply_overrides(ToyConfig(epochs=2), {"warmup_epochs": 3})


def test_profiles_are_frozen():
    with pytest.raises(Exception):
        ToyConfig().epochs = 5


@pytest.mark.parametrize("chapter, field, value, message", [
    ("fus_mae", "mask_ratio", "1.5", r"mask_ratio: expected a value in \[0.0, 1.0\), got 1.5"),
    ("fus_mae", "probe_label_fraction", "0", r"probe_label_fraction: expected"),
    ("dino_mm", "label_fractions", "[0]", r"label_fractions: expected values in \(0, 1\], got \(0.0,\)"),
    ("multimae_eo", "num_visible", "0", r"num_visible: expected a value > 0, got 0"),
    ("softcon", "lam", "2", r"lam: expected a value in \[0.0, 1.0\], got 2.0"),
    ("cromss", "alpha_0", "1.5", r"alpha_0: expected a value in \[0.0, 1.0\], got 1.5"),
])
def test_every_chapter_refuses_out_of_range_parameters(chapter, field, value, message):
    with pytest.raises(ConfigError, match=message):
        get_profile(chapter, "tiny", **{field: value})
