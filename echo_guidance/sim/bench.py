"""Rendering speed of the simulator: frames per second per image size (``echo-guidance sim bench``)."""

import os
import time

import numpy as np


def benchmark(sizes=((128, 128), (256, 256)), seconds=2.0, seed=0, plane='PLAX'):
    """Render frames for ``seconds`` per size and return [(width, height, frames per second)].

    Poses wander around the standard ``plane`` (a few mm and degrees, changing every frame) and the
    heart beats, so the numbers include the motion model, the valves and the scan conversion. The
    patient's label volume is built before timing starts.
    """
    from echo_guidance.geometry import action_to_matrix
    from echo_guidance.sim.patient import Patient
    from echo_guidance.sim.probe import ProbeConfig, ProbeRenderer

    if not seconds > 0:
        raise ValueError(f'benchmark duration must be > 0 s, got {seconds}')
    patient = Patient.from_seed(seed)
    patient.volume  # noqa: B018  (build before timing)
    target = patient.standard_plane_pose(plane)
    rng = np.random.default_rng(0)
    wander = action_to_matrix(rng.uniform(-1, 1, (64, 6)) * np.array([5, 5, 1, 5, 5, 5]))
    poses = target[None] @ wander
    results = []
    for width, height in sizes:
        renderer = ProbeRenderer(patient, ProbeConfig(width=int(width), height=int(height)))
        renderer.render(poses[0], 0.0)
        frames, start = 0, time.perf_counter()
        while True:
            renderer.render(poses[frames % len(poses)], frames / 30.0)
            frames += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        results.append((int(width), int(height), frames / elapsed))
    return results


def machine_description():
    """One line about the machine: CPU count and load average (the bench shares the CPU)."""
    try:
        load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        load = 'unknown'
    return f'{os.cpu_count()} CPUs, load average {load}'
