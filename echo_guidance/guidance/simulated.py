"""Simulated approaches to a standard plane, in process: frames, measured probe poses and ground truth.

Used by ``echo-guidance bench fusion`` (single-frame against fused guidance) and as calibration
frames for ``echo-guidance guidance quantize``. An approach is an expert-like path planned by
:func:`echo_guidance.sim.demonstrations.plan_trajectory` (the same kind of path the training
demonstrations follow), sampled at a fixed frame rate; each frame is rendered at the true pose at its
time (with the patient's heart beating), the *measured* pose carries the arm's sensor noise
(``DemoConfig.pose_noise_mm`` / ``pose_noise_deg``), and the ground-truth guidance is
â_t = U⁻¹(T_t⁻¹ · T*) from the true pose.
"""

import dataclasses
import math

import numpy as np

from echo_guidance.geometry import action_to_matrix, relative_action


@dataclasses.dataclass
class Approach:
    """One simulated approach (times in s from its start, poses 4x4 mm in base)."""

    patient_seed: int
    plane: str
    demo_index: int
    stamps: np.ndarray
    frames: np.ndarray
    true_poses: np.ndarray
    measured_poses: np.ndarray
    target: np.ndarray
    actions: np.ndarray
    reach_time: float


def _pose_noise(rng, count, noise_mm, noise_deg):
    noise = np.zeros((count, 6))
    noise[:, :3] = rng.normal(0.0, noise_mm, (count, 3))
    noise[:, 3:] = rng.normal(0.0, noise_deg, (count, 3))
    return action_to_matrix(noise)


def simulate_approach(
    patient,
    renderer,
    plane,
    demo_index=0,
    frame_rate_hz=30.0,
    base_seed=0,
    demo_config=None,
    pose_noise=True,
    max_duration_s=None,
):
    """Plan and render one approach of ``patient`` to ``plane``; return an :class:`Approach`.

    Deterministic for the same patient, plane, demo_index and base_seed.
    """
    from echo_guidance.sim.demonstrations import DemoConfig, demo_rng, plan_trajectory

    cfg = DemoConfig() if demo_config is None else demo_config
    # A different stream than the training demonstrations of the same (patient, plane, index).
    rng = demo_rng(patient.seed, plane, demo_index, base_seed + 7_000_003)
    trajectory = plan_trajectory(patient, plane, rng, cfg)
    cardiac_offset = float(rng.uniform(0.0, patient.cycle.period_s))
    duration = trajectory.duration if max_duration_s is None else min(trajectory.duration, max_duration_s)
    stamps = np.arange(0.0, duration, 1.0 / frame_rate_hz)
    true_poses = trajectory.pose_at(stamps)
    frames = np.stack([renderer.render(T, t + cardiac_offset) for T, t in zip(true_poses, stamps)])
    if pose_noise:
        measured = true_poses @ _pose_noise(rng, len(stamps), cfg.pose_noise_mm, cfg.pose_noise_deg)
    else:
        measured = true_poses.copy()
    target = trajectory.target
    actions = relative_action(true_poses, np.broadcast_to(target, true_poses.shape))
    return Approach(
        int(patient.seed),
        plane,
        int(demo_index),
        stamps,
        frames,
        true_poses,
        measured,
        target,
        actions,
        trajectory.reach_time,
    )


def approach_frames(size, count, seeds=(0, 1), seed=0, planes=None):
    """Return (frames (N, size, size) uint8, plane indices (N,)) sampled from simulated approaches.

    Frames are rendered at ``size``×``size`` (what ``sim demos --size`` writes for training) along one
    approach per patient seed and plane, and ``count`` of them are drawn at random.
    """
    from echo_guidance.planes import GUIDANCE_PLANES
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    planes = GUIDANCE_PLANES if planes is None else tuple(planes)
    frames, indices = [], []
    per_approach = max(1, math.ceil(count / (len(seeds) * len(planes))))
    rng = np.random.default_rng(seed)
    for patient_seed in seeds:
        patient = Patient.from_seed(int(patient_seed))
        renderer = ProbeRenderer(patient, ProbeConfig(width=size, height=size))
        for plane in planes:
            approach = simulate_approach(patient, renderer, plane, demo_index=seed)
            pick = rng.choice(
                len(approach.frames), size=min(per_approach, len(approach.frames)), replace=False
            )
            frames.extend(approach.frames[pick])
            indices.extend([GUIDANCE_PLANES.index(plane)] * len(pick))
    order = rng.permutation(len(frames))[:count]
    return np.stack(frames)[order], np.array(indices, dtype=np.int64)[order]
