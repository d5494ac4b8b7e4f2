"""Arm backends: the scripted trajectory on its time grid, and libfranka (franky) against franky-sim."""

import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from echo_guidance.arm.backends import FrankyArmBackend, ScriptedArmBackend
from echo_guidance.arm.state import check_rigid_pose
from echo_guidance.arm.trajectory import SinusoidTrajectory


class FakeClock:
    """A clock that advances only when the backend sleeps, so the test is exact and instant."""

    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def run_scripted(backend, until_samples):
    samples, errors = [], []

    def on_sample(sample):
        samples.append(sample)
        if len(samples) >= until_samples:
            backend._stop.set()

    backend.start(on_sample, errors.append)
    backend._thread.join(10)
    return samples, errors


def test_scripted_backend_samples_the_trajectory_on_its_grid():
    trajectory = SinusoidTrajectory(epoch_s=1000.0)
    clock = FakeClock(1000.0123)
    backend = ScriptedArmBackend(trajectory, clock, rate_hz=1000.0, sleep=clock.sleep)
    samples, errors = run_scripted(backend, 200)
    assert not errors
    stamps = np.array([s.stamp_s for s in samples])
    np.testing.assert_allclose(np.diff(stamps), 1e-3, atol=1e-9)
    assert stamps[0] == pytest.approx(1000.013)
    for sample in samples[::50]:
        np.testing.assert_allclose(sample.T_base_flange_mm, trajectory.flange_pose(sample.stamp_s))
        check_rigid_pose(sample.T_base_flange_mm)
    assert backend.samples_skipped == 0


def test_scripted_backend_skips_rather_than_bursting_when_far_behind():
    trajectory = SinusoidTrajectory(epoch_s=0.0)
    clock = FakeClock(5.0)
    backend = ScriptedArmBackend(trajectory, clock, rate_hz=1000.0, max_lag_s=0.05, sleep=clock.sleep)
    samples = []

    def on_sample(sample):
        samples.append(sample)
        if len(samples) == 10:
            clock.now += 0.2  # the machine stalls for 200 ms
        if len(samples) >= 20:
            backend._stop.set()

    backend.start(on_sample, print)
    backend._thread.join(10)
    gap = samples[10].stamp_s - samples[9].stamp_s
    assert gap > 0.15
    assert backend.samples_skipped == round(gap * 1000) - 1


def test_trajectory_rejects_bad_config():
    with pytest.raises(ValueError, match='6 finite numbers'):
        SinusoidTrajectory(amplitude=(1, 2, 3))
    with pytest.raises(ValueError, match='unknown trajectory keys'):
        SinusoidTrajectory.from_config({'amplitudes': [0] * 6})


def test_franky_refuses_to_move_a_real_arm():
    with pytest.raises(ValueError, match='loopback'):
        FrankyArmBackend('172.16.0.2', time.time, sim_motion=[[0, 0, 10, 0, 0, 0]])
    with pytest.raises(ValueError, match='hostname'):
        FrankyArmBackend('', time.time)


@pytest.fixture
def franky_sim():
    """Start franky-sim (MuJoCo) on a free loopback address; yield that address."""
    executable = shutil.which('franky-sim', path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip('franky-sim is not installed')
    process = subprocess.Popen(
        [executable, '-s', 'mujoco'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    host = []

    def read_output():
        for line in process.stdout:
            lines.append(line)
            found = re.search(r"using '([0-9.]+)'", line)
            if found:
                host.append(found.group(1))

    threading.Thread(target=read_output, daemon=True).start()
    deadline = time.monotonic() + 30
    while not host and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    try:
        if not host:
            pytest.fail(f'franky-sim did not start: {"".join(lines)}')
        yield host[0]
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


def test_franky_backend_reads_franky_sim_and_plays_a_simulated_move(franky_sim):
    backend = FrankyArmBackend(
        franky_sim, time.time, sim_motion=[[0, 0, -20, 0, 0, 0], [0, 0, 20, 0, 0, 0]], dynamics_factor=0.1
    )
    samples, errors = [], []
    backend.start(samples.append, errors.append)
    time.sleep(1.5)
    backend.stop()
    assert not errors, errors
    assert not backend.motion_error, backend.motion_error
    # ~920 states/s on an idle machine; the bound leaves room for a loaded 2-core machine.
    assert len(samples) > 300, f'only {len(samples)} states in 1.5 s'
    stamps = np.array([s.stamp_s for s in samples])
    assert np.all(np.diff(stamps) > 0)
    assert abs(stamps[-1] - time.time()) < 1.0
    robot_times = np.array([s.source_time_s for s in samples])
    assert np.median(np.diff(robot_times)) == pytest.approx(0.001)
    for sample in samples[::100]:
        check_rigid_pose(sample.T_base_flange_mm)
        assert sample.wrench.shape == (6,)
    heights = np.array([s.T_base_flange_mm[2, 3] for s in samples])
    # The flange starts about half a metre up and the simulated move shifts it by millimetres.
    assert 300 < heights[0] < 800
    assert heights.max() - heights.min() > 2.0
