"""The book's chapters, in order: one :class:`~eobook.config.Chapter` record per paper, each defined in its
paper's package (``eobook.methods.<paper>``) together with the paper's model, loss, profiles and evaluation."""
from __future__ import annotations

from typing import Any

from .config import Chapter, ChapterConfig, ConfigError
from .methods import cromss, dino_mm, fus_mae, multimae_eo, side_by_side, softcon

CHAPTERS: dict[str, Chapter] = {c.name: c for c in sorted(
    (dino_mm.CHAPTER, fus_mae.CHAPTER, multimae_eo.CHAPTER, softcon.CHAPTER, cromss.CHAPTER, side_by_side.CHAPTER),
    key=lambda c: c.number)}


def chapter_names() -> list[str]:
    return list(CHAPTERS)


def get_chapter(name: str) -> Chapter:
    if name not in CHAPTERS:
        raise ConfigError(f"unknown chapter {name!r}; valid chapters: {chapter_names()}")
    return CHAPTERS[name]


def get_profile(chapter: str, profile: str = "tiny", **overrides: Any) -> ChapterConfig:
    """Chapter ``chapter``'s profile ``profile`` with ``overrides`` applied by field name."""
    return get_chapter(chapter).profile(profile, **overrides)
