"""DAgger: the states the current policy visits, labelled by the simulator (Ross et al. 2011).

A policy trained on demonstrations and sampled poses still makes its own mistakes in closed loop,
and then sees frames no training set showed it. One DAgger round runs the policy in closed loop on
*training* patients (the same episodes as the evaluation: controller, planner, kinematic arm,
simulated time), keeps the probe pose and heart time of every frame it looked at, and labels each
with the simulator's ground truth (the action to the plane from that pose). Every episode becomes a
dataset "demonstration" whose source is ``dagger:<policy>:<patient>:<plane>:<start>``; frames are
rendered again at the recorded poses and times (the renderer is deterministic, so they are the
frames the policy saw). Retraining on the old data plus these closes the gap between the states
the policy was taught and the states it reaches.
"""

import dataclasses

import numpy as np

from echo_guidance.closed_loop.episode import ClosedLoopConfig, run_episode, sample_start


@dataclasses.dataclass
class DaggerEpisode:
    """The visited states of one closed-loop run."""

    patient_seed: int
    plane: str
    start_index: int
    poses: np.ndarray  # (N, 4, 4) mm, base
    times: np.ndarray  # (N,) s
    success: bool
    final_error_mm: float
    final_error_deg: float


def dagger_rng(seed, patient_seed, plane, start_index):
    """The generator of one DAgger start pose (apart from the evaluation's starts)."""
    from echo_guidance.planes import ALL_PLANES

    return np.random.default_rng(
        [int(seed), int(patient_seed), ALL_PLANES.index(plane), int(start_index), 0xDA66E2]
    )


def collect_visited_states(
    factory,
    patient_seeds,
    planes,
    starts,
    limits,
    planner_config,
    config=None,
    seed=0,
    progress=None,
):
    """Run ``factory``'s policy on each (patient, plane, start); return a list of :class:`DaggerEpisode`."""
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer

    config = config or ClosedLoopConfig()
    episodes = []
    for patient_seed in patient_seeds:
        patient = Patient.from_seed(int(patient_seed))
        renderer = ProbeRenderer(patient, ProbeConfig(width=config.image_size, height=config.image_size))
        for plane in planes:
            target = patient.standard_plane_pose(plane)
            for k in range(starts):
                start = sample_start(patient, plane, dagger_rng(seed, patient_seed, plane, k), config)
                visited = []
                result = run_episode(
                    patient,
                    renderer,
                    plane,
                    start,
                    factory(plane, target),
                    limits,
                    planner_config,
                    config,
                    start_index=k,
                    visited=visited,
                )
                episodes.append(
                    DaggerEpisode(
                        int(patient_seed),
                        plane,
                        k,
                        np.stack([pose for pose, _ in visited]),
                        np.array([t for _, t in visited]),
                        result.success,
                        result.final_error_mm,
                        result.final_error_deg,
                    )
                )
                if progress:
                    progress(
                        f'{patient.patient_id} {plane} start {k}: {len(visited)} frames, '
                        f'{"success" if result.success else "failure"} '
                        f'({result.final_error_mm:.1f} mm / {result.final_error_deg:.1f} deg)'
                    )
    return episodes


def dagger_demonstrations(episodes, policy_name, render_size=128):
    """Yield the episodes as dataset Demonstrations whose frames are rendered lazily."""
    from echo_guidance.data.dataset import Demonstration
    from echo_guidance.sim import Patient, ProbeConfig, ProbeRenderer
    from echo_guidance.sim.sampler import RenderedFrames

    renderers = {}
    for episode in episodes:
        if episode.patient_seed not in renderers:
            patient = Patient.from_seed(episode.patient_seed)
            renderers = {
                episode.patient_seed: (
                    patient,
                    ProbeRenderer(patient, ProbeConfig(width=render_size, height=render_size)),
                )
            }
        patient, renderer = renderers[episode.patient_seed]
        yield Demonstration(
            frames=RenderedFrames(renderer, episode.poses, episode.times),
            stamps=episode.times,
            poses=episode.poses,
            target_pose=patient.standard_plane_pose(episode.plane),
            subject=patient.patient_id,
            plane=episode.plane,
            source=f'dagger:{policy_name}:{patient.patient_id}:{episode.plane}:{episode.start_index}',
            target_source='simulator',
        )
