"""Licences of the data the book reads, and the attribution that goes wherever Sentinel pixels are shown.

The licence of every dataset in the registry is its entry's ``licence`` (``python -m eobook data list`` prints
them; ``data/README.md`` and the book's Data page carry the same table). Real Sentinel-1/-2 pixels, in a figure,
a table built from them or a page that shows them, carry the Copernicus attribution of the Sentinel data legal
notice: "Contains modified Copernicus Sentinel data [year]". :func:`data_credit` is the sentence a caption ends
with; it is empty for the synthetic sample world, which holds no real pixel.
"""
from __future__ import annotations

from ..attribution import COPERNICUS, copernicus_attribution

__all__ = ["COPERNICUS", "REAL_SAMPLES", "SENTINEL_DATASETS", "UNLISTED", "copernicus_attribution", "data_credit",
           "data_licences"]

#: Datasets the book reads that the registry does not list (no public download), with their licences.
UNLISTED = {"DFC2020": "CC-BY-4.0 (IEEE GRSS Data Fusion Contest 2020, distributed through IEEE DataPort)"}

#: The real samples the tests read (../shared/data/real; licences from its README).
REAL_SAMPLES = {
    "bigearthnet-mm-v1": "BigEarthNet data CDLA-Permissive-1.0 (example archives of the bigearthnet-common package, Apache-2.0)",
    "ssl4eo-s12": "Sentinel-2 L1C (Copernicus, open); test data of sig-gis/sig-ssl4eo, no top-level licence stated",
    "geobench/brick_kiln_v1.0": "GEO-Bench test fixtures (Apache-2.0); data licence per GEO-Bench task",
    "esa-worldcover": "CC-BY-4.0 (ESA WorldCover 2021 v200)",
    "eo-learn-slovenia": "MIT (eo-learn example data; NDVI from Sentinel-2)",
}

#: Which datasets hold Sentinel-1/-2 pixels (all of the registry's, and DFC2020's).
SENTINEL_DATASETS = ("BigEarthNet-MM", "SSL4EO-S12", "MMEarth", "GEO-Bench", "SEN12MS", "DFC2020", "EuroSAT-MS",
                     "NoLDO-S12", "fMoW-Sentinel")


def data_licences() -> dict[str, str]:
    """Every dataset the book reads -> its licence: the registry's entries and :data:`UNLISTED`."""
    from .download import registry

    return {**{name: entry["licence"] for name, entry in registry().items()}, **UNLISTED}


def data_credit(synthetic: bool, datasets: tuple[str, ...] | list[str] = (), years: str | int | None = None) -> str:
    """The sentence a figure or table caption ends with: nothing for the synthetic sample world; for real data the
    Copernicus attribution (where Sentinel pixels appear) and each dataset's licence."""
    if synthetic:
        return ""
    licences = data_licences()
    parts = []
    if not datasets or any(name in SENTINEL_DATASETS for name in datasets):
        parts.append(copernicus_attribution(years) + ".")
    named = [f"{name}: {licences[name]}" for name in datasets if name in licences]
    if named:
        parts.append("Data licences: " + "; ".join(named) + ".")
    return " ".join(parts)
