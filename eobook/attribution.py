"""The Copernicus attribution that goes wherever real Sentinel-1/-2 pixels appear (the Sentinel data legal notice):
in the data licences (:mod:`eobook.data.licences`) and under every results table of a run on real data
(:meth:`eobook.runtime.Run.caption`)."""
from __future__ import annotations

COPERNICUS = "Contains modified Copernicus Sentinel data"


def copernicus_attribution(years: str | int | None = None) -> str:
    """``"Contains modified Copernicus Sentinel data"``, with the acquisition year(s) when known (``2017-2018``)."""
    return f"{COPERNICUS} {years}" if years else COPERNICUS
