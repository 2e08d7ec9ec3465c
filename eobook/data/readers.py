"""The dataset readers by name, as ``python -m eobook data list`` prints them and ``prepare`` takes them."""
from .bigearthnet import BigEarthNetMM
from .eurosat import EuroSATMS
from .geobench import GeoBench
from .mmearth import MMEarth
from .sen12ms import SEN12MS
from .ssl4eo import SSL4EOS12

READERS = {cls.__name__: cls for cls in (BigEarthNetMM, SSL4EOS12, MMEarth, GeoBench, SEN12MS, EuroSATMS)}
