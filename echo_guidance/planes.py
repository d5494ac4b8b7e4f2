"""The standard planes, by name, with the query index each has in the guidance model."""

GUIDANCE_PLANES = ('PLAX', 'PSAX-AV', 'PSAX-MV')
"""Targets of the guidance model, in query-index order (0, 1, 2)."""

SEGMENTATION_PLANES = ('A4C',)
"""Planes used by the LV segmentation module only."""

ALL_PLANES = GUIDANCE_PLANES + SEGMENTATION_PLANES


class UnknownPlaneError(ValueError):
    """A plane name that is not one of the known standard planes."""


def check_plane(name, allowed=GUIDANCE_PLANES):
    """Return ``name`` if it is one of ``allowed``; raise UnknownPlaneError naming the choices otherwise."""
    if name not in allowed:
        raise UnknownPlaneError(
            f'unknown target plane {name!r}: expected one of {", ".join(allowed)}')
    return name


def plane_index(name):
    """Query index of a guidance plane: PLAX 0, PSAX-AV 1, PSAX-MV 2."""
    return GUIDANCE_PLANES.index(check_plane(name))
