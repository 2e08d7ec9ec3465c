"""Band and class tables of the datasets the book uses.

Every table here is data, not logic: band orders as they lie on disk, class nomenclatures and the
official mappings between them. Sources: BigEarthNet (Sumbul et al., 2019; 2021, BigEarthNet-MM),
SSL4EO-S12 (Wang et al., 2023), Dynamic World (Brown et al., 2022), ESA WorldCover (Zanaga et al.,
2022), MMEarth (Nedungadi et al., 2024), SEN12MS (Schmitt et al., 2019) and the IEEE GRSS DFC2020,
EuroSAT (Helber et al., 2019), GEO-Bench (Lacoste et al., 2023).
"""
from __future__ import annotations

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
