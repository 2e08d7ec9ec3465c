"""Profiles: overrides by name, type coercion from CLI strings, and errors that name the field."""
from dataclasses import dataclass

import pytest

from eobook.config import Chapter, ChapterConfig, ConfigError, Paper, Pretraining, apply_overrides, check_range


@dataclass(frozen=True)
class ToyConfig(ChapterConfig):
    mask_ratio: float = 0.75
    crops: tuple[int, int] = (2, 8)
    label_fraction: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "mask_ratio", 0.0, 1.0, high_open=True)


def no_pretraining(cfg: ToyConfig) -> Pretraining:
    raise NotImplementedError


@pytest.fixture
def toy_chapter():
    return Chapter(name="toy", number=99, title="Toy", notebook="toy.ipynb", config=ToyConfig,
                   profiles={"tiny": ToyConfig(), "small": ToyConfig(epochs=2), "full": ToyConfig(epochs=100)},
                   build_pretraining=no_pretraining, paper={"epochs": Paper(100, "Sec. 1"), "mask_ratio": Paper(0.5, "Sec. 2")},
                   deviations={"mask_ratio": "the book's choice"})


def test_override_by_name_coerces_cli_strings(toy_chapter):
    cfg = toy_chapter.profile("full", epochs="3", lr="1e-4", deterministic="true", crops="[1, 4]")
    assert (cfg.epochs, cfg.lr, cfg.deterministic, cfg.crops) == (3, 1e-4, True, (1, 4))
    assert cfg.profile == "full"
    assert toy_chapter.profile("full").epochs == 100  # the registered profile is untouched


def test_profile_name_is_not_a_parameter(toy_chapter):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['profile'\]"):
        toy_chapter.profile("tiny", profile="full")


def test_optional_field_accepts_none_and_numbers(toy_chapter):
    assert toy_chapter.profile("tiny", label_fraction="0.01").label_fraction == 0.01
    assert toy_chapter.profile("tiny", label_fraction="none").label_fraction is None


def test_unknown_parameter_lists_valid_names(toy_chapter):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['epoch'\].*valid parameters: .*'epochs'"):
        toy_chapter.profile("tiny", epoch=3)


def test_unknown_profile_and_chapter_list_valid_ones(toy_chapter):
    from eobook.chapters import get_profile

    with pytest.raises(ConfigError, match=r"unknown profile 'huge'.*\['tiny', 'small', 'full'\]"):
        toy_chapter.profile("huge")
    with pytest.raises(ConfigError, match=r"unknown chapter 'nope'.*'dino_mm'"):
        get_profile("nope")


def test_a_chapter_checks_its_profiles_and_its_paper_fields():
    profiles = {"tiny": ToyConfig(), "small": ToyConfig(), "full": ToyConfig()}
    with pytest.raises(ConfigError, match=r"missing profiles \['full'\]"):
        Chapter("toy", 1, "Toy", "toy.ipynb", ToyConfig, {"tiny": ToyConfig(), "small": ToyConfig()}, no_pretraining)
    with pytest.raises(ConfigError, match="profile 'full' is a ChapterConfig, expected ToyConfig"):
        Chapter("toy", 1, "Toy", "toy.ipynb", ToyConfig, {**profiles, "full": ChapterConfig()}, no_pretraining)
    with pytest.raises(ConfigError, match=r"unknown fields \['mask_ration'\]"):
        Chapter("toy", 1, "Toy", "toy.ipynb", ToyConfig, profiles, no_pretraining,
                paper={"mask_ration": Paper(0.75, "typo")})


def test_deviation_rows_list_departures_and_choices_with_their_reasons(toy_chapter):
    rows = toy_chapter.deviation_rows()
    assert rows == [{"field": "mask_ratio", "paper": 0.5, "source": "Sec. 2", "full": 0.75,
                     "reason": "the book's choice"}]                  # epochs equals the paper: not listed
    assert toy_chapter.unexplained_deviations() == []
    silent = Chapter("toy", 1, "Toy", "toy.ipynb", ToyConfig, toy_chapter.profiles, no_pretraining,
                     paper={"epochs": Paper(300, "Sec. 1")})
    assert silent.unexplained_deviations() == ["epochs"]


def test_pretrain_refuses_another_chapters_config(toy_chapter):
    with pytest.raises(ConfigError, match="expected a ToyConfig, got ChapterConfig"):
        toy_chapter.pretrain(ChapterConfig(), None)


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
        toy_chapter.profile("tiny", **{field: value})


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
    from eobook.chapters import get_profile

    with pytest.raises(ConfigError, match=message):
        get_profile(chapter, "tiny", **{field: value})
