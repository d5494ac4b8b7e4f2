"""Expert-like demonstrations on the virtual patient, recorded as demonstration bags.

A demonstration starts at a random pose near the target plane (by default up to +-30 mm along the
probe's x and y, +-5 mm along its beam axis and +-30 degrees about each axis, then slid along the
beam onto the skin) and ends holding the target plane, like a sonographer:

- a few minimum-jerk sub-movements: one or two exploratory moves that only partly reduce the error
  (with a random detour), an approach that overshoots the target by 10-30 %, then corrections of
  shrinking size, each followed by a short pause to look at the image; moves get shorter and slower
  near the target;
- physiological tremor (8-12 Hz, ~0.1 mm / 0.1 degree) all along;
- holding the target: after a reaction time the operator presses the pedal (TARGET_REACHED), holds
  a little longer, and the recording stops.

Offsets are applied in the target probe frame: pose = T_target . [R(rotvec), t], interpolated on the
6-vector (t, rotvec), so the path is smooth and ends exactly at the target.

Recording (what a real rig produces, see docs/simulator.md): frames at ~30 fps with timing jitter,
rendered at the true pose at their acquisition time (= header stamp); the recorder receives each
frame ``latency_s`` later (its bag log time). Probe poses at ~1 kHz with small sensor noise. One
synchronised pose per frame, computed with :func:`echo_guidance.sync.synchronise` from the noisy
1 kHz stream. The pedal mark is stamped when the pedal box reports it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from echo_guidance.planes import check_plane
from echo_guidance.sim.patient import SIM_PLANES
from echo_guidance.sim.probe import ProbeConfig, ProbeRenderer

TARGET_REACHED = 1
"""PedalEvent.TARGET_REACHED (msg/PedalEvent.msg)."""

OPERATOR_ID = 'sim-expert'
PROBE_MODEL = 'sim-phased-array-2.5MHz'
SESSION_EPOCH_NS = 1_700_000_000 * 10**9
"""Wall-clock time of the first simulated session; each demonstration starts at a distinct later time."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How demonstrations move and how the virtual rig records them (times in s, lengths in mm)."""

    max_start_offset_mm: float = 30.0
    max_start_offset_deg: float = 30.0
    max_start_depth_mm: float = 5.0
    frame_rate_hz: float = 30.0
    frame_jitter_s: float = 0.002
    pose_rate_hz: float = 1000.0
    pose_jitter_s: float = 0.00005
    pose_noise_mm: float = 0.05
    pose_noise_deg: float = 0.03
    latency_s: float = 0.08
    latency_jitter_s: float = 0.003
    tremor_mm: float = 0.1
    tremor_deg: float = 0.1
    reaction_s: tuple = (0.3, 0.7)
    hold_after_mark_s: tuple = (0.8, 1.5)

    def __post_init__(self):
        """Check the ranges; raise ValueError naming the bad field."""
        positive = ('frame_rate_hz', 'pose_rate_hz')
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f'demo setting {name} must be > 0, got {getattr(self, name)!r}')
        non_negative = (
            'max_start_offset_mm',
            'max_start_offset_deg',
            'max_start_depth_mm',
            'frame_jitter_s',
            'pose_jitter_s',
            'pose_noise_mm',
            'pose_noise_deg',
            'latency_s',
            'latency_jitter_s',
            'tremor_mm',
            'tremor_deg',
        )
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'demo setting {name} must be a finite number >= 0, got {value!r}')
        if self.max_start_offset_deg > 90:
            raise ValueError(f'max_start_offset_deg must be <= 90, got {self.max_start_offset_deg}')
        if self.frame_jitter_s >= 0.4 / self.frame_rate_hz:
            raise ValueError(
                'frame_jitter_s must be well below the frame interval '
                f'({1 / self.frame_rate_hz:.4f} s), got {self.frame_jitter_s}'
            )
        if self.pose_jitter_s >= 0.4 / self.pose_rate_hz:
            raise ValueError(
                'pose_jitter_s must be well below the pose interval '
                f'({1 / self.pose_rate_hz:.5f} s), got {self.pose_jitter_s}'
            )
        for name in ('reaction_s', 'hold_after_mark_s'):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(
                    f'demo setting {name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}'
                )


def _min_jerk(tau):
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau * tau)


def _offset_to_matrix(xi):
    """(..., 6) offsets (t mm, rotation vector rad) -> (..., 4, 4) transforms in the target frame."""
    xi = np.asarray(xi, dtype=float)
    out = np.zeros(xi.shape[:-1] + (4, 4))
    out[..., :3, :3] = (
        Rotation.from_rotvec(xi.reshape(-1, 6)[:, 3:]).as_matrix().reshape(xi.shape[:-1] + (3, 3))
    )
    out[..., :3, 3] = xi[..., :3]
    out[..., 3, 3] = 1.0
    return out


def _matrix_to_offset(T):
    """Inverse of :func:`_offset_to_matrix` for one 4x4 transform."""
    return np.concatenate([T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_rotvec()])


@dataclasses.dataclass
class Trajectory:
    """A planned probe path: waypoints of the offset from the target, and when each move starts and ends.

    ``offsets`` (K + 1, 6): translation (mm) and rotation vector (rad) in the target probe frame;
    sub-movement k (minimum jerk, from move_start[k] to move_end[k]) adds offsets[k + 1] - offsets[k].
    """

    target: np.ndarray  # T_base_target (4x4 mm)
    offsets: np.ndarray
    move_start: np.ndarray
    move_end: np.ndarray
    mark_time: float  # when the pedal is pressed (target reached and checked)
    duration: float
    tremor: tuple  # (frequencies (n,), phases (n, 6), amplitudes (6,))

    @property
    def reach_time(self):
        """Time the last move ends (the probe is at the target from then on)."""
        return float(self.move_end.max())

    def offset_at(self, t, tremor=True):
        """Offsets (N, 6) from the target at times ``t`` (N,).

        Sub-movements superpose (a new one may start before the previous has ended, as in human
        reaching): offset = offsets[0] + sum_k minjerk_k(t) * (offsets[k + 1] - offsets[k]).
        """
        t = np.atleast_1d(np.asarray(t, dtype=float))
        span = np.maximum(self.move_end - self.move_start, 1e-9)
        frac = _min_jerk((t[:, None] - self.move_start[None, :]) / span[None, :])  # (N, K)
        out = self.offsets[0][None, :] + frac @ np.diff(self.offsets, axis=0)
        if tremor:
            freqs, phases, amps = self.tremor
            wave = np.sin(2 * np.pi * freqs[None, :, None] * t[:, None, None] + phases[None, :, :]).sum(
                axis=1
            )
            out += wave * (amps / math.sqrt(len(freqs)))[None, :]
        return out

    def pose_at(self, t, tremor=True):
        """Probe poses (N, 4, 4) in the base frame at times ``t``."""
        return self.target[None] @ _offset_to_matrix(self.offset_at(t, tremor))


def plan_trajectory(patient, plane, rng, config=None):
    """Plan one expert-like path from a random start near ``plane`` to its standard pose.

    Args:
        patient: the :class:`~echo_guidance.sim.patient.Patient`.
        plane: PLAX, PSAX-AV, PSAX-MV or A4C.
        rng: numpy Generator (the path is a deterministic function of it).
        config: :class:`DemoConfig`.
    """
    cfg = DemoConfig() if config is None else config
    check_plane(plane, SIM_PLANES)
    target = patient.standard_plane_pose(plane)
    deg = math.radians(1.0)

    # Start: random offset in the target frame, then slid along the beam onto the skin.
    m, r = cfg.max_start_offset_mm, cfg.max_start_offset_deg
    start = np.array(
        [
            rng.uniform(-m, m),
            rng.uniform(-m, m),
            rng.uniform(-cfg.max_start_depth_mm, cfg.max_start_depth_mm),
        ]
    )
    euler = rng.uniform(-r, r, size=3)
    start_T = target @ _offset_to_matrix(
        np.concatenate([start, Rotation.from_euler('xyz', euler, degrees=True).as_rotvec()])
    )
    start_T = patient.in_contact(start_T)
    xi0 = _matrix_to_offset(np.linalg.inv(target) @ start_T)

    scale = np.array([1.0, 1.0, 1.0, 1 / deg, 1 / deg, 1 / deg])  # offsets in mm and degrees
    waypoints = [xi0]
    current = xi0.copy()
    n_explore = int(rng.integers(1, 3))
    for _ in range(n_explore):  # exploration
        keep = rng.uniform(0.35, 0.7)
        detour = rng.normal(0.0, 1.0, 6) * np.array([5, 5, 1.5, 5 * deg, 5 * deg, 5 * deg])
        current = keep * current + detour
        waypoints.append(current.copy())
    overshoot = rng.uniform(0.1, 0.3)  # approach past the target
    current = -overshoot * current + rng.normal(0.0, 1.0, 6) * np.array(
        [1.5, 1.5, 0.5, 1.5 * deg, 1.5 * deg, 1.5 * deg]
    )
    waypoints.append(current.copy())
    n_corrections = int(rng.integers(1, 4))
    for k in range(n_corrections - 1):  # corrections, shrinking
        current = -rng.uniform(0.1, 0.4) * current + rng.normal(0.0, 0.4 ** (k + 1), 6) * np.array(
            [2, 2, 0.5, 2 * deg, 2 * deg, 2 * deg]
        )
        waypoints.append(current.copy())
    waypoints.append(np.zeros(6))  # exactly at the target

    starts, ends = [], []
    t = rng.uniform(0.3, 0.8)  # looks before moving
    for k, (a, b) in enumerate(zip(waypoints[:-1], waypoints[1:])):
        delta = (b - a) * scale
        dist = np.linalg.norm(delta[:3]) + 0.8 * np.linalg.norm(delta[3:])
        # Fitts's law: coarse moves (exploration, approach) end anywhere within ~8 mm, corrections
        # within ~2 mm and the final one within ~1 mm, so fine moves are slow and careful.
        precision = 8.0 if k <= n_explore else (1.0 if k == len(waypoints) - 2 else 2.0)
        duration = 0.3 + 0.25 * math.log2(1.0 + dist / precision) + rng.uniform(0.0, 0.15)
        starts.append(t)
        ends.append(t + duration)
        if rng.uniform() < 0.5 and k < len(waypoints) - 3:  # blend into the next move (not the last)
            t += duration * rng.uniform(0.6, 0.95)
        else:  # or pause to look at the image
            t += duration + rng.uniform(0.08, 0.35)
    reach = max(ends)
    mark = reach + rng.uniform(*cfg.reaction_s)
    duration = mark + rng.uniform(*cfg.hold_after_mark_s)
    freqs = rng.uniform(8.0, 12.0, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=(3, 6))
    amps = np.array([cfg.tremor_mm] * 3 + [cfg.tremor_deg * deg] * 3)
    return Trajectory(
        target=target,
        offsets=np.array(waypoints),
        move_start=np.array(starts),
        move_end=np.array(ends),
        mark_time=float(mark),
        duration=float(duration),
        tremor=(freqs, phases, amps),
    )


@dataclasses.dataclass
class Recording:
    """Everything one demonstration bag holds, as arrays (times in s from the session start)."""

    frame_times: np.ndarray
    frames: np.ndarray  # (N, H, W) uint8
    frame_receive_times: np.ndarray
    true_frame_poses: np.ndarray  # (N, 4, 4) mm, the pose each frame was rendered at
    pose_times: np.ndarray
    poses: np.ndarray  # (M, 4, 4) noisy 1 kHz samples
    pose_receive_times: np.ndarray
    synced: tuple  # (poses (N,4,4) NaN where invalid, valid, gap_before, gap_after)
    mark_time: float
    mark_receive_time: float


def record(patient, trajectory, renderer, rng, config=None, cardiac_offset_s=0.0):
    """Simulate the rig recording ``trajectory``: frames, 1 kHz poses, synced poses, the pedal mark."""
    from echo_guidance.sync import synchronise

    cfg = DemoConfig() if config is None else config
    duration = trajectory.duration
    # Frames: nominal grid with jitter (never accumulating), first frame at a random sub-interval.
    n_frames = int(duration * cfg.frame_rate_hz)
    period = 1.0 / cfg.frame_rate_hz
    # (the first frame comes a few ms after the pose stream has started, as when a recording begins)
    frame_times = rng.uniform(0.005, period) + period * np.arange(n_frames)
    frame_times += np.clip(rng.normal(0, cfg.frame_jitter_s, n_frames), -0.3 * period, 0.3 * period)
    frame_times = frame_times[frame_times < duration]
    true_poses = trajectory.pose_at(frame_times)
    frames = np.stack([renderer.render(T, t + cardiac_offset_s) for T, t in zip(true_poses, frame_times)])
    frame_receive = (
        frame_times + cfg.latency_s + np.abs(rng.normal(0, cfg.latency_jitter_s, len(frame_times)))
    )

    # Poses: 1 kHz with jitter and sensor noise (small random rotation and translation).
    pose_period = 1.0 / cfg.pose_rate_hz
    n_poses = int(duration * cfg.pose_rate_hz) + 1
    pose_times = pose_period * np.arange(n_poses)
    pose_times += np.clip(rng.normal(0, cfg.pose_jitter_s, n_poses), -0.3 * pose_period, 0.3 * pose_period)
    poses = trajectory.pose_at(pose_times)
    noise = np.zeros((n_poses, 6))
    noise[:, :3] = rng.normal(0, cfg.pose_noise_mm, (n_poses, 3))
    noise[:, 3:] = rng.normal(0, math.radians(cfg.pose_noise_deg), (n_poses, 3))
    poses = poses @ _offset_to_matrix(noise)
    # Delivered in order (one stream over one connection), 0.6-0.9 ms after sampling.
    pose_receive = np.maximum.accumulate(pose_times + rng.uniform(0.0006, 0.0009, n_poses))

    synced = synchronise(frame_times, pose_times, poses)
    mark_receive = trajectory.mark_time + rng.uniform(0.002, 0.008)
    return Recording(
        frame_times,
        frames,
        frame_receive,
        true_poses,
        pose_times,
        poses,
        pose_receive,
        synced,
        trajectory.mark_time,
        mark_receive,
    )


def write_bag(path, recording, session, epoch_ns):
    """Write a :class:`Recording` to a new bag at ``path`` in log-time order; return the bag path."""
    from echo_guidance.bags import DemonstrationBagWriter

    def ns(t):
        return epoch_ns + int(round(float(t) * 1e9))

    events = []  # (log time s, order, kind, index)
    events += [(t, 1, 'pose', i) for i, t in enumerate(recording.pose_receive_times)]
    events += [(t, 2, 'image', i) for i, t in enumerate(recording.frame_receive_times)]
    # The recorder can pair a frame once it holds the frame and the first pose sample after it.
    after = np.searchsorted(recording.pose_times, recording.frame_times, side='left')
    for i, t in enumerate(recording.frame_receive_times):
        j = min(after[i], len(recording.pose_times) - 1)
        events.append((max(t, recording.pose_receive_times[j]) + 0.0002, 3, 'synced', i))
    events.append((recording.mark_receive_time, 4, 'pedal', 0))
    events.sort(key=lambda e: (e[0], e[1], e[3]))

    poses_sync, valid, gap_before, gap_after = recording.synced
    with DemonstrationBagWriter(path, session, fsync_interval_s=None) as bag:
        for log_t, _, kind, i in events:
            if kind == 'pose':
                bag.write_probe_pose(recording.poses[i], ns(recording.pose_times[i]), log_time_ns=ns(log_t))
            elif kind == 'image':
                bag.write_image(recording.frames[i], ns(recording.frame_times[i]), log_time_ns=ns(log_t))
            elif kind == 'synced':
                pose = poses_sync[i] if valid[i] else None
                bag.write_synced_pose(
                    pose,
                    ns(recording.frame_times[i]),
                    bool(valid[i]),
                    float(gap_before[i]),
                    float(gap_after[i]),
                    log_time_ns=ns(log_t),
                )
            else:
                bag.write_pedal_event(
                    TARGET_REACHED,
                    ns(recording.mark_receive_time),
                    source='sim-pedal',
                    detail='target reached',
                    log_time_ns=ns(log_t),
                )
    return Path(path)


@dataclasses.dataclass
class DemoResult:
    """Summary of one written demonstration."""

    path: str
    patient_id: str
    seed: int
    plane: str
    demo_index: int
    frames: int
    duration_s: float
    start_offset_mm: float
    start_offset_deg: float
    final_error_mm: float
    final_error_deg: float

    def as_dict(self):
        """Plain dict (for the manifest)."""
        return dataclasses.asdict(self)


def demo_rng(seed, plane, demo_index, base_seed=0):
    """Return the random generator of demonstration ``demo_index`` of ``plane`` on patient ``seed``."""
    plane_code = SIM_PLANES.index(check_plane(plane, SIM_PLANES))
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), plane_code, int(demo_index), int(base_seed), 0xDE70])
    )


def make_demonstration(
    patient,
    plane,
    path,
    demo_index=0,
    base_seed=0,
    probe_config=None,
    demo_config=None,
    split=None,
    renderer=None,
):
    """Plan, render and write one demonstration bag; return its :class:`DemoResult`.

    Deterministic: the same patient, plane, demo_index, base_seed and configs give the same bag.
    """
    from echo_guidance.geometry import geodesic_rotation_error_deg, translation_error_mm

    cfg = DemoConfig() if demo_config is None else demo_config
    probe_config = ProbeConfig() if probe_config is None else probe_config
    renderer = ProbeRenderer(patient, probe_config) if renderer is None else renderer
    if renderer.config != probe_config:
        raise ValueError('renderer was built with a different ProbeConfig than probe_config')
    rng = demo_rng(patient.seed, plane, demo_index, base_seed)
    trajectory = plan_trajectory(patient, plane, rng, cfg)
    cardiac_offset = float(rng.uniform(0, patient.cycle.period_s))
    rec = record(patient, trajectory, renderer, rng, cfg, cardiac_offset_s=cardiac_offset)
    session_index = (patient.seed * 16 + SIM_PLANES.index(plane)) * 1000 + demo_index + base_seed * 7919
    epoch_ns = SESSION_EPOCH_NS + session_index * 60 * 10**9
    start, target = trajectory.pose_at([0.0])[0], trajectory.target
    final = rec.true_frame_poses[-1]
    extra = {
        'simulator': {
            'patient_seed': int(patient.seed),
            'demo_index': int(demo_index),
            'base_seed': int(base_seed),
            'split': split,
            'heart_rate_bpm': round(float(patient.params.heart_rate_bpm), 3),
            'cardiac_offset_s': round(cardiac_offset, 6),
            'target_pose_mm': np.round(target, 6).tolist(),
            'mark_time_s': round(trajectory.mark_time, 6),
            'reach_time_s': round(trajectory.reach_time, 6),
            'probe': dataclasses.asdict(probe_config),
            'demo': dataclasses.asdict(cfg),
            'pixel_spacing_mm': round(renderer.pixel_spacing_mm, 6),
            'T_base_patient_mm': patient.T_base_patient.tolist(),
        }
    }
    session = {
        'operator_id': OPERATOR_ID,
        'subject_id': patient.patient_id,
        'target_plane': plane,
        'probe_model': PROBE_MODEL,
        'flange_to_probe': np.eye(4),
        'width': probe_config.width,
        'height': probe_config.height,
        'image_latency': cfg.latency_s,
        'extra_yaml': extra,
        'stamp_ns': epoch_ns,
    }
    write_bag(path, rec, session, epoch_ns)
    return DemoResult(
        path=str(path),
        patient_id=patient.patient_id,
        seed=int(patient.seed),
        plane=plane,
        demo_index=int(demo_index),
        frames=int(len(rec.frame_times)),
        duration_s=round(trajectory.duration, 4),
        start_offset_mm=round(float(translation_error_mm(start, target)), 3),
        start_offset_deg=round(float(geodesic_rotation_error_deg(start, target)), 3),
        final_error_mm=round(float(translation_error_mm(final, target)), 4),
        final_error_deg=round(float(geodesic_rotation_error_deg(final, target)), 4),
    )
