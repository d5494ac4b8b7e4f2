"""Structure ids of the virtual patient and their acoustic properties, defined in one place.

Every label image, label volume, LV mask and bounding box in the simulator uses these ids. The
acoustic table gives each structure a backscatter level (dB relative to myocardium) and an
attenuation (dB per mm, round trip, at the simulated 2.5 MHz); bone and air attenuate so strongly
that everything behind them lies in an acoustic shadow.
"""

from enum import IntEnum

import numpy as np


class Structure(IntEnum):
    """Label ids of the structures of the virtual patient (0 = nothing: outside the body or the sector)."""

    NONE = 0
    SOFT_TISSUE = 1
    CHEST_WALL = 2
    RIB = 3
    LUNG = 4
    PERICARDIUM = 5
    MYOCARDIUM = 6
    LV = 7
    RV = 8
    LA = 9
    RA = 10
    AORTA = 11
    PULMONARY_ARTERY = 12
    VESSEL_WALL = 13
    AORTIC_VALVE = 14
    MITRAL_VALVE = 15
    CARTILAGE = 16


STRUCTURE_NAMES = {s: s.name for s in Structure}
"""Id -> upper-case name (the name used in bounding-box dictionaries)."""

BLOOD_POOLS = (
    Structure.LV,
    Structure.RV,
    Structure.LA,
    Structure.RA,
    Structure.AORTA,
    Structure.PULMONARY_ARTERY,
)
"""Structures filled with blood (dark on B-mode)."""

# (backscatter dB relative to myocardium, round-trip attenuation dB/mm). Blood is ~30 dB below
# tissue; costal cartilage is hypoechoic and only partly shadows; pericardium, valves and vessel
# walls are strong specular reflectors; bone and aerated lung reflect strongly at their surface and
# pass almost nothing (their attenuation makes the shadow).
ACOUSTIC_PROPERTIES = {
    Structure.NONE: (-120.0, 60.0),
    Structure.SOFT_TISSUE: (-11.0, 0.25),
    Structure.CHEST_WALL: (-3.0, 0.30),
    Structure.RIB: (14.0, 12.0),
    Structure.LUNG: (12.0, 30.0),
    Structure.PERICARDIUM: (16.0, 0.30),
    Structure.MYOCARDIUM: (0.0, 0.25),
    Structure.LV: (-32.0, 0.04),
    Structure.RV: (-32.0, 0.04),
    Structure.LA: (-32.0, 0.04),
    Structure.RA: (-32.0, 0.04),
    Structure.AORTA: (-32.0, 0.04),
    Structure.PULMONARY_ARTERY: (-32.0, 0.04),
    Structure.VESSEL_WALL: (8.0, 0.30),
    Structure.AORTIC_VALVE: (9.0, 0.25),
    Structure.MITRAL_VALVE: (9.0, 0.25),
    Structure.CARTILAGE: (-14.0, 0.7),
}


def acoustic_tables():
    """Return (backscatter_db, attenuation_db_per_mm) as float32 lookup tables indexed by structure id."""
    size = 256
    backscatter = np.full(size, ACOUSTIC_PROPERTIES[Structure.NONE][0], dtype=np.float32)
    attenuation = np.full(size, ACOUSTIC_PROPERTIES[Structure.NONE][1], dtype=np.float32)
    for structure, (bs, att) in ACOUSTIC_PROPERTIES.items():
        backscatter[int(structure)] = bs
        attenuation[int(structure)] = att
    return backscatter, attenuation


def structure_by_name(name):
    """Return the Structure called ``name`` (case-insensitive); raise ValueError for unknown names."""
    try:
        return Structure[str(name).upper().replace('-', '_')]
    except KeyError:
        raise ValueError(
            f'unknown structure {name!r}; known: {", ".join(s.name for s in Structure)}'
        ) from None
