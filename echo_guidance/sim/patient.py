"""A virtual patient: anatomy, label volume, beating heart and the standard planes' probe poses.

Frames (all transforms 4x4, millimetres):

- ``patient``: see :mod:`echo_guidance.sim.anatomy` (+X patient's left, +Y head, +Z anterior/up;
  anterior skin over the sternum at X = 0, Z = 0; Y = 0 at the mitral annulus).
- ``base``: the robot base. The patient lies at ``T_base_patient`` (default
  :data:`DEFAULT_T_BASE_PATIENT`: the patient frame shifted 500 mm along base +x and 150 mm up,
  same orientation, which puts the windows within a Franka arm's reach). Every public pose of the
  simulator (standard planes, renderer input, demonstrations) is ``T_base_probe`` in this frame.
- ``probe``: as in docs/CONVENTIONS: origin at the centre of the transducer face, +z the beam axis
  into the body, +x along the array (image columns to the right).
"""

from __future__ import annotations

import collections
import functools
import threading

import numpy as np

from echo_guidance.planes import ALL_PLANES, check_plane
from echo_guidance.sim.anatomy import Anatomy, PatientParameters, build_label_volume
from echo_guidance.sim.cardiac import CardiacCycle

DEFAULT_T_BASE_PATIENT = np.array(
    [[1.0, 0.0, 0.0, 500.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 150.0], [0.0, 0.0, 0.0, 1.0]]
)
"""Where the patient frame lies in the robot base frame unless told otherwise (mm)."""

PROBE_INDENTATION_MM = 2.0
"""How far the transducer face presses into the skin at the standard poses and when in contact."""

SIM_PLANES = ALL_PLANES
"""Standard planes the virtual patient knows: the guidance planes plus A4C."""

_VOLUME_CACHE_SIZE = 4
_volume_cache = collections.OrderedDict()
_volume_lock = threading.Lock()


def patient_id_for_seed(seed):
    """Return the pseudonymous subject id of the virtual patient with this seed (``sim-000042``)."""
    return f'sim-{int(seed):06d}'


def _unit(v):
    return v / np.linalg.norm(v)


def _probe_pose(origin, z_axis, x_hint):
    """Return the 4x4 probe pose with beam axis ``z_axis`` and image +x as close as possible to ``x_hint``."""
    z = _unit(np.asarray(z_axis, dtype=float))
    x = np.asarray(x_hint, dtype=float)
    x = _unit(x - (x @ z) * z)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, origin
    return pose


class Patient:
    """One virtual patient.

    Args:
        params: the patient's :class:`~echo_guidance.sim.anatomy.PatientParameters`.
        voxel_mm: voxel size of the label volume (built on first use, cached per process).
        T_base_patient: 4x4 pose of the patient frame in the robot base frame (mm).
    """

    def __init__(self, params: PatientParameters, voxel_mm=1.0, T_base_patient=None):  # noqa: N803
        """Derive the anatomy; the label volume is built lazily."""
        self.params = params
        self.seed = params.seed
        self.patient_id = patient_id_for_seed(params.seed)
        self.voxel_mm = float(voxel_mm)
        if not 0.5 <= self.voxel_mm <= 4.0:
            raise ValueError(f'voxel_mm must be 0.5..4 mm, got {voxel_mm}')
        self.anatomy = Anatomy(params)
        self.cycle = CardiacCycle(params.heart_rate_bpm)
        T = DEFAULT_T_BASE_PATIENT if T_base_patient is None else np.asarray(T_base_patient, dtype=float)
        if (
            T.shape != (4, 4)
            or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
            or not np.allclose(T[3], [0, 0, 0, 1])
        ):
            raise ValueError('T_base_patient must be a 4x4 rigid transform (mm)')
        self.T_base_patient = T.copy()
        self.T_patient_base = np.linalg.inv(T)

    @classmethod
    def from_seed(cls, seed, voxel_mm=1.0, T_base_patient=None):  # noqa: N803
        """Return the virtual patient drawn from ``seed`` (deterministic)."""
        return cls(PatientParameters.from_seed(seed), voxel_mm=voxel_mm, T_base_patient=T_base_patient)

    def __repr__(self):
        """Short description."""
        return f'Patient({self.patient_id}, heart rate {self.params.heart_rate_bpm:.0f} bpm)'

    @property
    def volume(self):
        """The label volume (built on first use; shared by Patients with the same seed and voxel size)."""
        key = (self.params, self.voxel_mm)
        with _volume_lock:
            if key in _volume_cache:
                _volume_cache.move_to_end(key)
                return _volume_cache[key]
        volume = build_label_volume(self.anatomy, spacing=self.voxel_mm)
        with _volume_lock:
            _volume_cache[key] = volume
            while len(_volume_cache) > _VOLUME_CACHE_SIZE:
                _volume_cache.popitem(last=False)
        return volume

    # ------------------------------------------------------------------------ frames

    def to_patient(self, T_base_probe):  # noqa: N803
        """Express a base-frame pose in the patient frame."""
        return self.T_patient_base @ np.asarray(T_base_probe, dtype=float)

    def to_base(self, T_patient_probe):  # noqa: N803
        """Express a patient-frame pose in the base frame."""
        return self.T_base_patient @ np.asarray(T_patient_probe, dtype=float)

    # ----------------------------------------------------------------- standard planes

    @functools.cached_property
    def _standard_poses_patient(self):
        """Standard-plane probe poses in the patient frame, from the anatomy."""
        an = self.anatomy
        h, s = an.heart, an.scale
        left = np.array([1.0, 0.0, 0.0])
        poses = {}

        w = an.parasternal_window
        # PLAX: the plane holding the LV long axis, the mitral and the aortic valve (r = 0 in the
        # heart frame, which also holds the window); apex left, aorta right of the image.
        aim = h.point(12.0 * s, 8.0 * s, 0.0)
        poses['PLAX'] = _probe_pose(w, aim - w, -h.e_l)

        # PSAX-AV: through the aortic valve centre, as close to perpendicular to the aortic root as a
        # plane through the window can be; image right = patient's left.
        z = _unit(an.aortic_center - w)
        n = _unit(an.aortic_axis - (an.aortic_axis @ z) * z)
        x = np.cross(z, n)
        poses['PSAX-AV'] = _probe_pose(w, z, x if x @ left > 0 else -x)

        # PSAX-MV: short-axis cut of the LV at the mitral leaflet tips (12 mm below the annulus).
        z = _unit(h.point(12.0 * s, 0.0, 0.0) - w)
        n = _unit(h.e_l - (h.e_l @ z) * z)
        x = np.cross(z, n)
        poses['PSAX-MV'] = _probe_pose(w, z, x if x @ left > 0 else -x)

        # A4C: from the apical window along the long axis, through both atrioventricular valves.
        wa = an.apical_window
        z = _unit(h.point(-4.0 * s, 8.0 * s, 12.0 * s) - wa)
        u = 20.0 * h.e_a + 30.0 * h.e_r
        u = _unit(u - (u @ z) * z)
        poses['A4C'] = _probe_pose(wa, z, u if u @ left > 0 else -u)

        for name, pose in poses.items():
            pose[:3, 3] += PROBE_INDENTATION_MM * pose[:3, 2]
        return poses

    def standard_plane_pose(self, name):
        """Return the 4x4 probe pose (base frame, mm) that images standard plane ``name``.

        Known planes: PLAX, PSAX-AV, PSAX-MV (parasternal window) and A4C (apical window).

        Raises:
            UnknownPlaneError: for any other name.
        """
        check_plane(name, SIM_PLANES)
        return self.to_base(self._standard_poses_patient[name])

    def in_contact(self, T_base_probe, indentation_mm=PROBE_INDENTATION_MM):  # noqa: N803
        """Return the pose moved along its beam axis so the transducer face touches the skin.

        The orientation is kept; the origin slides along the probe's z axis to the skin (plus the
        indentation), as a hand holding the probe against the chest does.
        """
        T = self.to_patient(T_base_probe)
        z = T[:3, 2]
        inside_point = T[:3, 3] + 200.0 * z
        skin = self.anatomy.skin_intersection(inside_point, -z)
        out = T.copy()
        out[:3, 3] = skin + indentation_mm * z
        return self.to_base(out)


def clear_volume_cache():
    """Forget the cached label volumes (frees memory)."""
    with _volume_lock:
        _volume_cache.clear()
