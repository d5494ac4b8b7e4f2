"""Write-rate benchmark of DemonstrationBagWriter: mono8 frames at a frame rate plus 1 kHz probe poses."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from echo_guidance.bags.writer import DemonstrationBagWriter


def run_write_benchmark(
    seconds=10.0,
    width=640,
    height=480,
    fps=30.0,
    pose_hz=1000.0,
    fsync_interval_s=1.0,
    directory=None,
    paced=False,
):
    """Write ``seconds`` of simulated recording and return timing statistics.

    Per recorded second: ``fps`` frames (each followed by its synced pose) and ``pose_hz`` pose samples,
    interleaved in stamp order as a recorder receives them. Unpaced, messages are written as fast as
    possible (throughput); paced, each is written at its stamp's wall time as a live recorder would,
    so the per-message latencies include the periodic fsync of a second's data. The bag is written
    under ``directory`` (default a temporary folder) and deleted afterwards.

    Returns:
        dict with real_time_factor (recorded seconds per wall second), MB/s, per-message latencies (ms).
    """
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(8)]
    pose = np.eye(4)
    pose[:3, 3] = (400.0, 0.0, 300.0)
    session = dict(target_plane='PLAX', width=width, height=height, flange_to_probe=np.eye(4))
    workdir = Path(tempfile.mkdtemp(prefix='bag-bench-', dir=directory))
    pose_latency, frame_latency = [], []
    n_poses = int(seconds * pose_hz)
    frame_period_ns = int(1e9 / fps)
    pose_period_ns = int(1e9 / pose_hz)
    next_frame_ns = 0
    try:
        start = time.perf_counter()
        with DemonstrationBagWriter(workdir / 'bench', session, fsync_interval_s=fsync_interval_s) as writer:
            for k in range(n_poses):
                stamp = 1_000_000_000 + k * pose_period_ns
                if paced:
                    delay = start + k * pose_period_ns / 1e9 - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                t = time.perf_counter()
                writer.write_probe_pose(pose, stamp)
                pose_latency.append(time.perf_counter() - t)
                if k * pose_period_ns >= next_frame_ns:
                    t = time.perf_counter()
                    writer.write_image(frames[len(frame_latency) % len(frames)], stamp + 1)
                    writer.write_synced_pose(pose, stamp + 1, True, 0.0, 0.001)
                    frame_latency.append(time.perf_counter() - t)
                    next_frame_ns += frame_period_ns
        elapsed = time.perf_counter() - start
        size = writer.bytes_written
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pose_ms = np.asarray(pose_latency) * 1e3
    frame_ms = np.asarray(frame_latency) * 1e3
    return {
        'recorded_s': seconds,
        'frames': len(frame_latency),
        'poses': n_poses,
        'wall_s': elapsed,
        'real_time_factor': seconds / elapsed,
        'mb_per_s': size / 1e6 / elapsed,
        'bag_mb': size / 1e6,
        'pose_ms_median': float(np.median(pose_ms)),
        'pose_ms_p99': float(np.percentile(pose_ms, 99)),
        'pose_ms_max': float(pose_ms.max()),
        'frame_ms_median': float(np.median(frame_ms)),
        'frame_ms_p99': float(np.percentile(frame_ms, 99)),
        'frame_ms_max': float(frame_ms.max()),
        'fsync_interval_s': fsync_interval_s,
    }
