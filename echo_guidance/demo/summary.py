"""What one autonomous demo run achieved, computed from its recorded probe poses (no ROS needed).

Inputs are plain arrays and records read back from the run's bags: the probe poses (4×4, mm, in
``base``) with their stamps, the arm controller's state messages and the pedal events. The ground
truth is the simulator's target pose (``Patient.from_seed(seed).standard_plane_pose(plane)``).

Errors follow CONVENTIONS.md: translation error = distance between the probe positions (mm),
rotation error = geodesic angle between the orientations (degrees); success = final error within
5 mm and 5°, the closed-loop evaluation's criterion (docs/autonomous.md §6).
"""

import dataclasses
import math

import numpy as np

from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm

SUCCESS_TRANSLATION_MM = 5.0
SUCCESS_ROTATION_DEG = 5.0
# A pose this far from the pose at the press counts as the arm having moved (the kinematic arm is
# noise-free; a real arm's pose jitters by tenths of a millimetre).
MOTION_THRESHOLD_MM = 0.5
MOTION_THRESHOLD_DEG = 0.5

OUTCOME_REACHED = 'PLANE REACHED'
OUTCOME_NOT_REACHED = 'NOT REACHED'


@dataclasses.dataclass(frozen=True)
class StateRecord:
    """One ``/arm_control/state`` message: controller time (s), state, verdict, reason, detail."""

    stamp_s: float
    state: str
    verdict: str = ''
    reason: str = ''
    detail: str = ''


@dataclasses.dataclass
class RunSummary:
    """The figures the demo prints; times are seconds since the first recorded pose."""

    plane: str
    outcome: str
    reached: bool
    controller_reached: bool
    final_state: StateRecord
    start_error_mm: float
    start_error_deg: float
    final_error_mm: float
    final_error_deg: float
    within_tolerance: bool
    path_mm: float
    path_deg: float
    press_s: float = None
    first_motion_s: float = None
    reached_s: float = None
    duration_s: float = 0.0
    errors_t_s: np.ndarray = dataclasses.field(default=None, repr=False)
    errors_mm: np.ndarray = dataclasses.field(default=None, repr=False)
    errors_deg: np.ndarray = dataclasses.field(default=None, repr=False)

    @property
    def press_to_reached_s(self):
        """Seconds from the pedal press to the plane being reached (None when either is missing)."""
        if self.press_s is None or self.reached_s is None:
            return None
        return self.reached_s - self.press_s

    @property
    def motion_to_reached_s(self):
        """Seconds from the first motion to the plane being reached (None when either is missing)."""
        if self.first_motion_s is None or self.reached_s is None:
            return None
        return self.reached_s - self.first_motion_s

    def outcome_line(self):
        """The outcome in words, with the controller's final state and, for a miss, why."""
        final = self.final_state
        controller = f'controller {final.state}'
        if final.verdict or final.reason:
            controller += f' ({" ".join(t for t in (final.verdict, final.reason) if t)})'
        if final.detail:
            controller += f': {final.detail}'
        if self.reached:
            return f'{OUTCOME_REACHED}  ({controller})'
        if self.controller_reached:
            return (
                f'{OUTCOME_NOT_REACHED}: the controller declared the plane reached, but the probe is '
                f'{self.final_error_mm:.1f} mm / {self.final_error_deg:.1f} deg from the true plane, beyond '
                f'{SUCCESS_TRANSLATION_MM:g} mm / {SUCCESS_ROTATION_DEG:g} deg  ({controller})'
            )
        return f'{OUTCOME_NOT_REACHED} within the run  ({controller})'

    def as_dict(self):
        """The scalar figures as a JSON-ready dict."""
        values = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ('errors_t_s', 'errors_mm', 'errors_deg', 'final_state')
        }
        values['final_state'] = dataclasses.asdict(self.final_state)
        values['press_to_reached_s'] = self.press_to_reached_s
        values['motion_to_reached_s'] = self.motion_to_reached_s
        values['outcome_line'] = self.outcome_line()
        return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in values.items()}


def pose_errors(poses_mm, target_mm):
    """Translation (mm) and geodesic rotation (deg) errors of poses (N, 4, 4) against one target (4, 4)."""
    poses = np.asarray(poses_mm, dtype=float)
    target = np.broadcast_to(np.asarray(target_mm, dtype=float), poses.shape)
    return np.asarray(translation_error_mm(poses, target)), np.asarray(
        geodesic_rotation_error_deg(poses, target)
    )


def path_length(poses_mm):
    """Distance travelled (mm) and rotation swept (deg, sum of geodesic steps) along a pose sequence."""
    poses = np.asarray(poses_mm, dtype=float)
    if len(poses) < 2:
        return 0.0, 0.0
    return (
        float(np.sum(translation_error_mm(poses[:-1], poses[1:]))),
        float(np.sum(geodesic_rotation_error_deg(poses[:-1], poses[1:]))),
    )


def reached_episode_start(states):
    """Stamp (s) at which the controller entered the plane_reached state it ended in; None if it did not."""
    start = None
    for record in states:
        if record.state == 'plane_reached':
            if start is None:
                start = record.stamp_s
        else:
            start = None
    return start


def plane_reached_held(states, hold_s):
    """Whether the newest state records show plane_reached held for at least ``hold_s`` seconds."""
    if not states or states[-1].state != 'plane_reached':
        return False
    return states[-1].stamp_s - reached_episode_start(states) >= hold_s


def summarise_run(plane, pose_stamps_s, poses_mm, target_mm, states, press_stamps_s=()):
    """Compute a :class:`RunSummary` from a run's recorded probe poses, controller states and presses.

    Args:
        plane: the target plane's name.
        pose_stamps_s: (N,) stamps of the probe poses, seconds (any clock shared with the others).
        poses_mm: (N, 4, 4) probe poses in base, mm, in time order.
        target_mm: (4, 4) the ground-truth pose of the target plane in base, mm.
        states: the controller's :class:`StateRecord` messages in time order.
        press_stamps_s: stamps of the deadman presses (pedal events), seconds.

    Raises:
        ValueError: no poses, or stamps and poses of different lengths, or no controller state.
    """
    stamps = np.asarray(pose_stamps_s, dtype=float)
    poses = np.asarray(poses_mm, dtype=float)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) == 0:
        raise ValueError(f'summarise_run needs probe poses (N, 4, 4) with N >= 1, got shape {poses.shape}')
    if stamps.shape != (len(poses),):
        raise ValueError(f'{len(poses)} poses but {stamps.shape} stamps')
    if not states:
        raise ValueError('no controller state was recorded: the arm controller never reported')
    order = np.argsort(stamps, kind='stable')
    stamps, poses = stamps[order], poses[order]
    origin = stamps[0]
    errors_mm, errors_deg = pose_errors(poses, target_mm)

    reached_at = reached_episode_start(states)
    controller_reached = reached_at is not None
    within = bool(errors_mm[-1] <= SUCCESS_TRANSLATION_MM and errors_deg[-1] <= SUCCESS_ROTATION_DEG)

    # The press that counts is the last one before the controller began the motion that ended the
    # run (a press while a node was still starting is refused and pressed again later).
    last_arming = None
    for i, record in enumerate(states):
        if record.state == 'armed' and (i == 0 or states[i - 1].state != 'armed'):
            if reached_at is None or record.stamp_s <= reached_at:
                last_arming = record.stamp_s
    presses = sorted(float(p) for p in press_stamps_s)
    press = None
    if last_arming is not None:
        before = [p for p in presses if p <= last_arming + 1e-3]
        press = before[-1] if before else last_arming
    elif presses:
        press = presses[-1]

    first_motion = None
    if press is not None:
        after = np.flatnonzero(stamps >= press)
        if after.size:
            reference = poses[after[0]]
            moved_mm, moved_deg = pose_errors(poses[after], reference)
            moving = np.flatnonzero((moved_mm > MOTION_THRESHOLD_MM) | (moved_deg > MOTION_THRESHOLD_DEG))
            if moving.size:
                first_motion = float(stamps[after[moving[0]]])
    path_mm, path_deg = path_length(poses)

    def rel(t):
        return None if t is None else float(t - origin)

    reached = controller_reached and within
    final_state = states[-1]
    return RunSummary(
        plane=plane,
        outcome=OUTCOME_REACHED if reached else OUTCOME_NOT_REACHED,
        reached=reached,
        controller_reached=controller_reached,
        final_state=final_state,
        start_error_mm=float(errors_mm[0]),
        start_error_deg=float(errors_deg[0]),
        final_error_mm=float(errors_mm[-1]),
        final_error_deg=float(errors_deg[-1]),
        within_tolerance=within,
        path_mm=path_mm,
        path_deg=path_deg,
        press_s=rel(press),
        first_motion_s=rel(first_motion),
        reached_s=rel(reached_at),
        duration_s=float(stamps[-1] - origin),
        errors_t_s=stamps - origin,
        errors_mm=errors_mm,
        errors_deg=errors_deg,
    )


def _seconds(value):
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.1f} s'


def format_summary(summary, fields):
    """The summary as aligned text lines; ``fields`` adds (label, value) rows (model, bag, ...) in order.

    ``fields`` is a list of (label, text) pairs shown before and after the figures: entries whose
    label starts with ``'>'`` go after them (without the marker).
    """
    before = [(k, v) for k, v in fields if not k.startswith('>')]
    after = [(k[1:], v) for k, v in fields if k.startswith('>')]
    tolerance = (
        f'within {SUCCESS_TRANSLATION_MM:g} mm / {SUCCESS_ROTATION_DEG:g} deg: '
        f'{"yes" if summary.within_tolerance else "no"}'
    )
    timing = (
        f'pedal pressed at {_seconds(summary.press_s)}, first motion at {_seconds(summary.first_motion_s)}, '
        f'controller declared the plane reached at {_seconds(summary.reached_s)}'
    )
    if summary.press_to_reached_s is not None:
        timing += f' -> {summary.press_to_reached_s:.1f} s after the press'
        if summary.motion_to_reached_s is not None:
            timing += f' ({summary.motion_to_reached_s:.1f} s after the first motion)'
    rows = [
        *before,
        ('target plane', summary.plane),
        ('outcome', summary.outcome_line()),
        ('start error', f'{summary.start_error_mm:.1f} mm, {summary.start_error_deg:.1f} deg'),
        ('final error', f'{summary.final_error_mm:.1f} mm, {summary.final_error_deg:.1f} deg ({tolerance})'),
        ('timing', timing + f' (times from the first recorded pose; run {summary.duration_s:.1f} s)'),
        ('path length', f'{summary.path_mm:.1f} mm, {summary.path_deg:.1f} deg of rotation'),
        *after,
    ]
    width = max(len(k) for k, _ in rows)
    return [f'{k:<{width}}  {v}' for k, v in rows]


def plot_run(summary, poses_mm, target_mm, path, title=''):
    """Write a PNG: errors against time (mm and deg) and the probe path seen from above (base x, y)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    poses = np.asarray(poses_mm, dtype=float)
    target = np.asarray(target_mm, dtype=float)
    figure, (errors_axis, path_axis) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    t = summary.errors_t_s
    errors_axis.plot(t, summary.errors_mm, color='tab:blue', label='translation error (mm)')
    errors_axis.plot(t, summary.errors_deg, color='tab:orange', label='rotation error (deg)')
    errors_axis.axhline(SUCCESS_TRANSLATION_MM, color='grey', linestyle=':', linewidth=1)
    errors_axis.text(
        t[-1] if len(t) else 0,
        SUCCESS_TRANSLATION_MM,
        ' 5 mm / 5 deg',
        va='bottom',
        ha='right',
        fontsize=8,
        color='grey',
    )
    for stamp, label, colour in (
        (summary.press_s, 'pedal pressed', 'tab:green'),
        (summary.first_motion_s, 'first motion', 'tab:purple'),
        (summary.reached_s, 'plane reached (controller)', 'tab:red'),
    ):
        if stamp is not None:
            errors_axis.axvline(stamp, color=colour, linestyle='--', linewidth=1, label=label)
    errors_axis.set_xlabel('time since the first recorded pose (s)')
    errors_axis.set_ylabel('error to the true plane')
    errors_axis.set_ylim(bottom=0)
    errors_axis.grid(alpha=0.3)
    errors_axis.legend(fontsize=8, loc='upper right')
    errors_axis.set_title(f'{summary.plane}: {summary.outcome}', fontsize=10)

    xy = poses[:, :2, 3]
    path_axis.plot(xy[:, 0], xy[:, 1], color='tab:blue', linewidth=1.5, label='probe path')
    path_axis.plot(*xy[0], 'o', color='tab:green', label=f'start ({summary.start_error_mm:.1f} mm)')
    path_axis.plot(*xy[-1], 's', color='tab:blue', label=f'end ({summary.final_error_mm:.1f} mm)')
    path_axis.plot(*target[:2, 3], '*', color='tab:red', markersize=14, label=f'true {summary.plane} pose')
    # The beam direction (probe +z) seen from above shows the probe's tilt at start, end and target.
    for pose, colour in ((poses[0], 'tab:green'), (poses[-1], 'tab:blue'), (target, 'tab:red')):
        beam = pose[:2, 2] * 8.0
        path_axis.annotate(
            '',
            xy=pose[:2, 3] + beam,
            xytext=pose[:2, 3],
            arrowprops=dict(arrowstyle='->', color=colour, linewidth=1),
        )
    path_axis.set_aspect('equal', adjustable='datalim')
    path_axis.set_xlabel('base x (mm)')
    path_axis.set_ylabel('base y (mm)')
    path_axis.grid(alpha=0.3)
    path_axis.legend(fontsize=8, loc='best')
    path_axis.set_title('probe path from above (arrows: beam direction)', fontsize=10)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
