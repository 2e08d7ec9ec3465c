"""The dataset readers by name, as ``python -m eobook data list`` prints them and ``prepare`` / ``check`` take them."""
from .bigearthnet import BigEarthNetMM
from .dfc2020 import DFC2020
from .eurosat import EuroSATMS
from .fmow import FMoWSentinel
from .geobench import GeoBench
from .mmearth import MMEarth
from .noldo import NoLDOS12
from .sen12ms import SEN12MS
from .ssl4eo import SSL4EOS12

READERS = {cls.__name__: cls for cls in (BigEarthNetMM, SSL4EOS12, MMEarth, GeoBench, SEN12MS, DFC2020, EuroSATMS,
                                         NoLDOS12, FMoWSentinel)}
#: Each reader's folder under a data root (``cfg.data_root``, the sample world), as ``dataset_root`` takes it.
FOLDERS = {"BigEarthNetMM": "BigEarthNet-MM", "SSL4EOS12": "SSL4EO-S12", "MMEarth": "MMEarth", "GeoBench": "GEO-Bench",
           "SEN12MS": "SEN12MS", "DFC2020": "DFC2020", "EuroSATMS": "EuroSAT-MS", "NoLDOS12": "NoLDO-S12",
           "FMoWSentinel": "fMoW-Sentinel"}
