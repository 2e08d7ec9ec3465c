"""Band and class tables of the datasets the book uses.

Every table here is data, not logic: band orders as they lie on disk, class nomenclatures and the
official mappings between them. Sources: BigEarthNet (Sumbul et al., 2019; 2021, BigEarthNet-MM),
SSL4EO-S12 (Wang et al., 2023), Dynamic World (Brown et al., 2022), ESA WorldCover (Zanaga et al.,
2022), MMEarth (Nedungadi et al., 2024), SEN12MS (Schmitt et al., 2019) and the IEEE GRSS DFC2020,
EuroSAT (Helber et al., 2019), GEO-Bench (Lacoste et al., 2023).
"""
from __future__ import annotations

from typing import NamedTuple

# --------------------------------------------------------------------------------------------------
# Sentinel-2 band names
# --------------------------------------------------------------------------------------------------
#: All 13 Sentinel-2 L1C bands in wavelength order (SSL4EO-S12 ``s2c``, EuroSAT-MS, SEN12MS, GEO-Bench).
S2_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: The 12 L2A bands (no cirrus B10): BigEarthNet and SSL4EO-S12 ``s2a``. Also the 12 S2 channels
#: of DINO-MM's 14-channel input, in this order, followed by S1 VH, VV.
S2_L2A_BANDS = tuple(b for b in S2_L1C_BANDS if b != "B10")
#: Ground sampling distance (m) of each band.
S2_BAND_GSD = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
               "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
#: File stems in SSL4EO-S12 folders (no zero padding: ``B1.tif`` ... ``B8A.tif``).
SSL4EO_BAND_FILE = {b: b.replace("B0", "B") for b in S2_L1C_BANDS}
#: The 9-band S2 set of CromSS (B2-B8, B11, B12).
CROMSS_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")

#: MMEarth ``sentinel2`` band order in the HDF5 (note B8A before B08).
MMEARTH_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B08", "B09", "B10", "B11", "B12")
#: MultiMAE-meets-EO spectral groups (name -> S2 bands, in channel order).
MODALITY_BANDS = {
    "rgb": ("B04", "B03", "B02"),
    "ired": ("B05", "B06", "B07"),
    "sired": ("B11", "B12"),
    "eb": ("B8A", "B08"),
}

#: GEO-Bench band dataset names of the 13 Sentinel-2 bands, in L1C order.
GEOBENCH_S2_BANDS = ("01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red",
                     "05 - Vegetation Red Edge", "06 - Vegetation Red Edge", "07 - Vegetation Red Edge",
                     "08 - NIR", "08A - Vegetation Red Edge", "09 - Water vapour", "10 - SWIR - Cirrus",
                     "11 - SWIR", "12 - SWIR")

#: Sentinel-1 polarisations in the order readers return them.
S1_BANDS = ("VV", "VH")

# --------------------------------------------------------------------------------------------------
# BigEarthNet: 43 CORINE Land Cover level-3 names and the official 19-class nomenclature
# (Sumbul et al., 2021, "BigEarthNet-MM", Table 1)
# --------------------------------------------------------------------------------------------------
BEN43_CLASSES = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities",
    "Non-irrigated arable land", "Permanently irrigated land", "Rice fields", "Vineyards",
    "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland",
    "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub",
    "Beaches, dunes, sands", "Bare rock", "Sparsely vegetated areas", "Burnt areas", "Inland marshes",
    "Peatbogs", "Salt marshes", "Salines", "Intertidal flats", "Water courses", "Water bodies",
    "Coastal lagoons", "Estuaries", "Sea and ocean",
)
BEN19_CLASSES = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
)
#: For each of the 19 classes, the indices of the 43 CORINE classes it merges. The 11 classes that
#: appear in no list (roads, ports, airports, mines, dumps, construction, green urban, sport,
#: bare rock, burnt areas, intertidal flats) are dropped by the official nomenclature.
BEN19_FROM_43 = (
    (0, 1), (2,), (11, 12, 13), (14, 15, 16, 18), (17,), (19,), (20,), (21,), (22,), (23,), (24,),
    (25, 31), (26, 27), (28,), (29,), (33, 34), (35, 36), (38, 39), (40, 41, 42),
)
BEN43_TO_19 = {i43: i19 for i19, group in enumerate(BEN19_FROM_43) for i43 in group}

# --------------------------------------------------------------------------------------------------
# Dynamic World, ESA WorldCover, simplified IGBP, EuroSAT
# --------------------------------------------------------------------------------------------------
DW_CLASSES = ("water", "trees", "grass", "flooded vegetation", "crops", "shrub and scrub", "built area",
              "bare ground", "snow and ice")
DW_COLORS = ("#419bdf", "#397d49", "#88b053", "#7a87c6", "#e49635", "#dfc35a", "#c4281b", "#a59b8f",
             "#b39fe1")
#: Integer class maps returned by readers mark unlabelled pixels with this value (torch's
#: ``ignore_index`` convention in ``cross_entropy``).
IGNORE_INDEX = -1

#: ESA WorldCover codes in class order; MMEarth's SEG modality maps them to 0..10 and no-data to 11.
WORLDCOVER_CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
WORLDCOVER_CLASSES = ("tree cover", "shrubland", "grassland", "cropland", "built-up", "bare / sparse",
                      "snow and ice", "permanent water", "herbaceous wetland", "mangroves", "moss and lichen",
                      "no data")
WORLDCOVER_COLORS = ("#006400", "#ffbb22", "#ffff4c", "#f096ff", "#fa0000", "#b4b4b4", "#f0f0f0",
                     "#0064c8", "#0096a0", "#00cf75", "#fae6a0", "#000000")
WORLDCOVER_NODATA_CLASS = 11

#: Simplified IGBP scheme of SEN12MS / DFC2020 (file values 1..10; readers return 0..9).
DFC_CLASSES = ("forest", "shrubland", "savanna", "grassland", "wetlands", "croplands", "urban / built-up",
               "snow / ice", "barren", "water")
DFC_COLORS = ("#009900", "#c6b044", "#fbff13", "#b6ff05", "#27ff87", "#c24f44", "#a5a5a5", "#69fff8",
              "#f9ffa4", "#1c0dff")
#: Full IGBP (SEN12MS ``lc`` band 1, values 1..17) -> simplified IGBP value (1..10).
IGBP_TO_SIMPLIFIED = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2, 7: 2, 8: 3, 9: 3, 10: 4, 11: 5, 12: 6, 13: 7,
                      14: 6, 15: 8, 16: 9, 17: 10}

EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")

#: Full IGBP classes of SEN12MS ``lc`` band 1 (values 1..17, MODIS MCD12Q1).
IGBP_CLASSES = ("evergreen needleleaf forests", "evergreen broadleaf forests", "deciduous needleleaf forests",
                "deciduous broadleaf forests", "mixed forests", "closed shrublands", "open shrublands",
                "woody savannas", "savannas", "grasslands", "permanent wetlands", "croplands",
                "urban and built-up lands", "cropland/natural vegetation mosaics", "permanent snow and ice",
                "barren", "water bodies")

# --------------------------------------------------------------------------------------------------
# NoLDO-S12 downstream (CromSS): SSL4EO-S12@DW and SSL4EO-S12@OSM label files
# --------------------------------------------------------------------------------------------------
#: ``label_dw`` files: 0 = not annotated, 1..9 = ``DW_CLASSES``, 10 = cloud (not annotated either: the
#: authors' loader ``dataset/dwosm_dataset_lmdb.py`` sets it to background before subtracting 1).
NOLDO_DW_UNLABELLED, NOLDO_DW_CLOUD = 0, 10
#: ``label_osm`` files: 0 = no OSM label, 1..13 the OSMlanduse classes. The book names them by their ID and the
#: Dynamic World classes the paper relates them to (CromSS, Table I); the names of the OSMlanduse legend are not
#: in the paper or the authors' code (they come from the WMS legend image), so they are not guessed here.
OSM_TO_DW = {1: ("built area",), 2: ("built area",), 3: ("crops",), 4: ("trees", "grass"), 5: ("trees",),
             6: ("bare ground",), 7: ("water",), 8: ("bare ground", "snow and ice"), 9: ("grass",),
             10: ("grass", "shrub and scrub"), 11: ("trees", "crops"), 12: ("flooded vegetation",),
             13: ("water", "flooded vegetation")}
OSM_CLASSES = tuple(f"OSM {i} ({' / '.join(dw)})" for i, dw in OSM_TO_DW.items())

# --------------------------------------------------------------------------------------------------
# fMoW-Sentinel (Cong et al., 2022, SatMAE): the 62 fMoW categories in the order of SatMAE's
# ``util/datasets.py`` CATEGORIES (label = index)
# --------------------------------------------------------------------------------------------------
FMOW_CLASSES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site", "barn",
    "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
    "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant", "fire_station",
    "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station", "helipad",
    "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse", "military_facility",
    "multi-unit_residential", "nuclear_powerplant", "office_building", "oil_or_gas_facility", "park",
    "parking_lot_or_garage", "place_of_worship", "police_station", "port", "prison", "race_track",
    "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard", "shopping_mall",
    "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium", "storage_tank",
    "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening", "waste_disposal",
    "water_treatment_facility", "wind_farm", "zoo",
)

# --------------------------------------------------------------------------------------------------
# GEO-Bench tasks (Lacoste et al., 2023; github.com/ServiceNow/geo-bench make_benchmark/dataset_converters)
# --------------------------------------------------------------------------------------------------
#: GEO-Bench band dataset names of So2Sat's 8 Sentinel-1 channels (``geobench.dataset.sentinel1_8_bands``).
GEOBENCH_S1_BANDS = ("01 - VH.Real", "02 - VH.Imaginary", "03 - VV.Real", "04 - VV.Imaginary",
                     "05 - VH.LEE Filtered", "06 - VV.LEE Filtered", "07 - VH.LEE Filtered.Real",
                     "08 - VV.LEE Filtered.Imaginary")
GEOBENCH_CLOUD_BAND = "Cloud Probability"
#: So2Sat's 17 local climate zones (label 0..16).
LCZ_CLASSES = ("compact high-rise", "compact mid-rise", "compact low-rise", "open high-rise", "open mid-rise",
               "open low-rise", "lightweight low-rise", "large low-rise", "sparsely built", "heavy industry",
               "dense trees", "scattered trees", "bush, scrub", "low plants", "bare rock or paved",
               "bare soil or sand", "water")
#: Benin smallholder cashews (``benin_smallholder_cashews.py`` LABELS), class 0 = no data.
CASHEW_CLASSES = ("no data", "well-managed plantation", "poorly-managed plantation", "non-plantation",
                  "residential", "background", "uncertain")
#: South Africa crop types (``crop_type_south_africa.py`` crop_labels), class 0 = no data.
SA_CROP_CLASSES = ("no data", "lucerne/medics", "planted pastures (perennial)", "fallow", "wine grapes", "weeds",
                   "small grain grazing", "wheat", "canola", "rooibos")


class GeoBenchTask(NamedTuple):
    """A GEO-Bench task's label kind ("multiclass", "multilabel" or "segmentation"), class names and bands."""
    kind: str
    classes: tuple[str, ...]
    bands: tuple[str, ...]


_S2_NO_CIRRUS = tuple(b for b in GEOBENCH_S2_BANDS if "Cirrus" not in b)
#: The tasks the book reads: label kind, class names (the count is the task's) and the band datasets a
#: sample holds, from each task's converter. m-cashew-plantation stores every band with its acquisition date
#: appended (``"02 - Blue_2019-11-05"``, ``Band.get_descriptor``); the reader matches such names.
GEOBENCH_TASKS = {
    "m-eurosat": GeoBenchTask("multiclass", EUROSAT_CLASSES, GEOBENCH_S2_BANDS),
    "m-bigearthnet": GeoBenchTask("multilabel", BEN43_CLASSES, _S2_NO_CIRRUS),
    "m-brick-kiln": GeoBenchTask("multiclass", ("not brick kiln", "brick kiln"), GEOBENCH_S2_BANDS),
    "m-so2sat": GeoBenchTask("multiclass", LCZ_CLASSES,
                             GEOBENCH_S1_BANDS + GEOBENCH_S2_BANDS[1:9] + GEOBENCH_S2_BANDS[-2:]),
    "m-cashew-plantation": GeoBenchTask("segmentation", CASHEW_CLASSES, _S2_NO_CIRRUS + (GEOBENCH_CLOUD_BAND,)),
    "m-SA-crop-type": GeoBenchTask("segmentation", SA_CROP_CLASSES, _S2_NO_CIRRUS + (GEOBENCH_CLOUD_BAND,)),
    "m-landcover-seg": GeoBenchTask("segmentation", DW_CLASSES, GEOBENCH_S2_BANDS),  # the sample world's own task
}
