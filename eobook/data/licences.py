"""Licences of the data the book reads, and the attribution that goes wherever Sentinel pixels are shown.

The licence of every dataset in the registry is its entry's ``licence`` (``python -m eobook data list`` prints
them; ``data/README.md`` and the book's Data page carry the same table). Real Sentinel-1/-2 pixels, in a figure,
a table built from them or a page that shows them, carry the Copernicus attribution of the Sentinel data legal
notice: "Contains modified Copernicus Sentinel data [year]" (:func:`copernicus_attribution`); a run on real data
ends its captions with it (:meth:`eobook.runtime.Run.caption`), a run on the synthetic sample world does not.
"""
from __future__ import annotations

from ..attribution import COPERNICUS, copernicus_attribution

__all__ = ["COPERNICUS", "REAL_SAMPLES", "UNLISTED", "copernicus_attribution", "data_licences"]

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


def data_licences() -> dict[str, str]:
    """Every dataset the book reads -> its licence: the registry's entries and :data:`UNLISTED`."""
    from .download import registry

    return {**{name: entry["licence"] for name, entry in registry().items()}, **UNLISTED}
