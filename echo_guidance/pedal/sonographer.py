"""A simulated sonographer's foot: presses TARGET when the probe really is at the standard plane.

In the ``record_sim`` profile (docs/recording.md) the arm drives the probe to the virtual patient's
standard plane and away again; the pedal node in ``sim:sonographer`` mode feeds this class the probe
pose and the recorder's status, and presses the pedal's TARGET button when :meth:`on_pose` says so.
The mark is honest by construction: it is given only while the probe lies within ``tolerance_mm``
and ``tolerance_deg`` (translation norm, geodesic rotation) of the plane's true pose, computed from
the same virtual patient the capture node renders (``Patient.from_seed(seed).standard_plane_pose``),
and, like a sonographer who presses when the view is best, only once the probe stops getting closer
(at rest on the plane, or just past its closest point when it moves through).

Rules:

* marks are given only while the recorder is recording, for the plane of the bag being recorded
  (``RecorderStatus.target_plane``), so a mark never ends a demonstration of another plane;
* after a mark (and at the start of each bag) the sonographer re-arms only once the probe has been
  farther than ``rearm_mm`` or ``rearm_deg`` from the plane: one mark per arrival, and a bag that
  starts with the probe already at the plane does not end at once with an empty demonstration;
* planes the simulator does not know give no marks (the dataset then falls back to the declared
  target, see ``echo_guidance/data/from_bags.py``).

No ROS here: the node (``echo_guidance/nodes/pedal.py``) is a thin wrapper.
"""

import dataclasses
import functools

import numpy as np

from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm


@functools.lru_cache(maxsize=8)
def _patient(seed):
    from echo_guidance.sim import Patient

    return Patient.from_seed(int(seed))


def standard_plane_target(seed, plane):
    """The virtual patient's standard-plane probe pose (4x4, mm, base frame) for ``plane``.

    Raises:
        UnknownPlaneError: the simulator knows no such plane.
    """
    return np.array(_patient(seed).standard_plane_pose(plane), dtype=np.float64)


def simulated_patient_id(seed):
    """The subject id of the virtual patient drawn from ``seed`` (as ``sim demos`` writes it)."""
    return _patient(seed).patient_id


CLOSER_BY = 0.002
"""A pose counts as closer than the closest so far only by this fraction of the tolerance (noise floor)."""


@dataclasses.dataclass(frozen=True)
class Mark:
    """A TARGET press: the plane and how far the probe was from it when the press was decided."""

    plane: str
    translation_mm: float
    rotation_deg: float

    def describe(self):
        """One line for the log."""
        return (
            f'{self.plane} reached: probe {self.translation_mm:.2f} mm / {self.rotation_deg:.2f} deg '
            'from the plane, pressing TARGET'
        )


class SimulatedSonographer:
    """Decides when to press TARGET; see the module docstring.

    Args:
        plane_pose: function(plane) -> 4x4 pose (mm) of the target plane; raises ValueError for a
            plane it does not know.
        tolerance_mm, tolerance_deg: how close the probe must be to press.
        rearm_mm, rearm_deg: how far it must have gone (either one) before the next press.
    """

    def __init__(self, plane_pose, tolerance_mm=2.0, tolerance_deg=2.0, rearm_mm=6.0, rearm_deg=6.0):
        """Check the tolerances; nothing is marked until a recording is reported."""
        for name, value in (('tolerance_mm', tolerance_mm), ('tolerance_deg', tolerance_deg)):
            if not float(value) > 0:
                raise ValueError(f'sonographer {name} must be positive, got {value!r}')
        if not (float(rearm_mm) > float(tolerance_mm) and float(rearm_deg) > float(tolerance_deg)):
            raise ValueError(
                f'sonographer rearm distance ({rearm_mm} mm, {rearm_deg} deg) must exceed the tolerance '
                f'({tolerance_mm} mm, {tolerance_deg} deg), or one arrival gives several marks'
            )
        self._plane_pose = plane_pose
        self.tolerance_mm, self.tolerance_deg = float(tolerance_mm), float(tolerance_deg)
        self.rearm_mm, self.rearm_deg = float(rearm_mm), float(rearm_deg)
        self.recording = False
        self.bag = ''
        self.plane = ''
        self._target = None
        self._armed = False
        self._closest = None  # closest approach since arming, as max(mm / tolerance_mm, deg / tolerance_deg)
        self.marks = 0
        self.unknown_plane = ''

    def set_recording(self, recording, plane, bag=''):
        """The recorder's state: recording or not, the bag's target plane, the bag (a new bag re-arms)."""
        recording = bool(recording)
        if recording and (not self.recording or bag != self.bag or plane != self.plane):
            self._armed = False  # a new bag: wait until the probe has been away from the plane
            try:
                self._target = self._plane_pose(plane)
                self.unknown_plane = ''
            except ValueError as error:  # no such plane in the simulator: no marks, say why
                self._target = None
                self.unknown_plane = f'no marks for {plane!r}: {error}'
        self.recording, self.plane, self.bag = recording, plane, bag

    def distance(self, T_mm):
        """(translation mm, rotation deg) from the probe pose to the target plane, or None without one."""
        if self._target is None:
            return None
        T = np.asarray(T_mm, dtype=np.float64)
        mm = float(translation_error_mm(T, self._target))
        return mm, float(geodesic_rotation_error_deg(T, self._target))

    def on_pose(self, T_mm):
        """Take a probe pose (4x4, mm); return a :class:`Mark` when TARGET is to be pressed now, else None."""
        if not self.recording:
            return None
        distance = self.distance(T_mm)
        if distance is None:
            return None
        mm, deg = distance
        if mm > self.rearm_mm or deg > self.rearm_deg:
            self._armed, self._closest = True, None
            return None
        if not (self._armed and mm <= self.tolerance_mm and deg <= self.tolerance_deg):
            return None
        closeness = max(mm / self.tolerance_mm, deg / self.tolerance_deg)
        if self._closest is None or closeness < self._closest - CLOSER_BY:
            self._closest = closeness
            return None  # still getting closer: wait for the best view
        self._armed, self._closest = False, None
        self.marks += 1
        return Mark(self.plane, mm, deg)
