"""Arm samples: NaN, non-rigid and stale poses are refused and counted; good ones become probe poses."""

import numpy as np
import pytest

from echo_guidance.arm.backends import FrankaRos2Adapter, RobotClockMapper, pose_matrix_mm
from echo_guidance.arm.calibration import FlangeToProbeCalibration
from echo_guidance.arm.state import OK, STALE, WARN, ArmSample, ArmSampleRejected, ArmStateMonitor

CALIBRATION = FlangeToProbeCalibration.from_config({'translation_mm': [0, 0, 120], 'rpy_deg': [0, 0, 90]})


def flange(x=500.0):
    T = np.eye(4)
    T[:3, 3] = [x, 0.0, 300.0]
    return T


def test_good_sample_becomes_probe_pose():
    monitor = ArmStateMonitor(CALIBRATION, max_age_s=0.1, timeout_s=0.5)
    probe = monitor.accept(ArmSample(10.0, flange()), now_s=10.001)
    np.testing.assert_allclose(probe, flange() @ CALIBRATION.matrix_mm)
    assert monitor.diagnostics(10.002)[0] == OK


@pytest.mark.parametrize(
    'mutate, reason',
    [
        (lambda T: T.__setitem__((0, 3), np.nan), 'nan'),
        (lambda T: T.__setitem__((0, 0), 2.0), 'not_rigid'),
        (lambda T: T.__setitem__((3, 0), 1.0), 'not_rigid'),
    ],
)
def test_bad_pose_is_refused_and_reported(mutate, reason):
    monitor = ArmStateMonitor(CALIBRATION)
    T = flange()
    mutate(T)
    with pytest.raises(ArmSampleRejected) as caught:
        monitor.accept(ArmSample(1.0, T), now_s=1.0)
    assert caught.value.reason == reason
    assert monitor.rejected[reason] == 1
    monitor.accept(ArmSample(1.001, flange()), now_s=1.001)
    level, message, values = monitor.diagnostics(1.002)
    assert level == WARN and values[f'rejected_{reason}'] == '1' and 'refused' in message


def test_repeated_old_and_silent_arm_count_as_stale():
    monitor = ArmStateMonitor(CALIBRATION, max_age_s=0.05, timeout_s=0.2)
    assert monitor.diagnostics(0.0)[0] == STALE  # nothing yet
    monitor.accept(ArmSample(5.0, flange()), now_s=5.0)
    with pytest.raises(ArmSampleRejected, match='does not advance'):
        monitor.accept(ArmSample(5.0, flange()), now_s=5.001)
    with pytest.raises(ArmSampleRejected, match='old when it arrives'):
        monitor.accept(ArmSample(5.01, flange()), now_s=5.2)
    assert monitor.rejected['stale'] == 2
    level, message, _ = monitor.diagnostics(5.5)
    assert level == STALE and 'no valid pose for' in message


def test_wrench_with_nan_is_refused():
    monitor = ArmStateMonitor(CALIBRATION)
    with pytest.raises(ArmSampleRejected, match='wrench'):
        monitor.accept(ArmSample(1.0, flange(), wrench=np.array([0, 0, np.nan, 0, 0, 0])), now_s=1.0)


def test_pose_matrix_from_message_numbers():
    T = pose_matrix_mm([0.5, 0.0, 0.3], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    np.testing.assert_allclose(T[:3, 3], [500, 0, 300])
    np.testing.assert_allclose(T[:3, 0], [0, 1, 0], atol=1e-12)
    with pytest.raises(ArmSampleRejected, match='unit quaternion'):
        pose_matrix_mm([0, 0, 0], [0, 0, 0, 0.5])
    with pytest.raises(ArmSampleRejected, match='NaN'):
        pose_matrix_mm([np.nan, 0, 0], [0, 0, 0, 1])


def test_franka_adapter_attaches_recent_wrench_only():
    adapter = FrankaRos2Adapter(wrench_max_age_s=0.01)
    adapter.on_wrench(1.0, [1, 2, 3], [0.1, 0.2, 0.3])
    sample = adapter.on_pose(1.005, [0.4, 0, 0.3], [0, 0, 0, 1], receive_time_s=1.006)
    np.testing.assert_allclose(sample.wrench, [1, 2, 3, 0.1, 0.2, 0.3])
    late = adapter.on_pose(1.5, [0.4, 0, 0.3], [0, 0, 0, 1], receive_time_s=1.5)
    assert late.wrench is None
    unstamped = adapter.on_pose(0.0, [0.4, 0, 0.3], [0, 0, 0, 1], receive_time_s=7.0)
    assert unstamped.stamp_s == 7.0


def test_clock_mapper_uses_fastest_delivery_and_never_goes_back():
    mapper = RobotClockMapper(window_s=1.0)
    # Robot time 0..; ROS clock = robot + 100 s; transport delay 0.5..3 ms.
    delays = [0.0005, 0.003, 0.002, 0.001]
    stamps = [mapper.to_ros_time(k * 0.001, 100.0 + k * 0.001 + d) for k, d in enumerate(delays)]
    np.testing.assert_allclose(stamps, [100.0005 + k * 0.001 for k in range(4)], atol=1e-9)
    # A faster delivery later lowers the estimate, but a stamp never goes back.
    late = mapper.to_ros_time(0.004, 100.004 + 0.0001)
    assert late == pytest.approx(100.0041) and late > stamps[-1]
    again = mapper.to_ros_time(0.0041, 100.0041 + 0.0001)
    assert again > late


def test_clock_mapper_follows_a_simulator_running_slower_than_real_time():
    rng = np.random.default_rng(0)
    mapper = RobotClockMapper(window_s=1.0)
    # The simulated arm's clock advances 0.7 s per real second; deliveries take 0.2..3 ms.
    errors = []
    for k in range(5000):
        robot = k * 0.001
        true_time = 50.0 + robot / 0.7
        stamp = mapper.to_ros_time(robot, true_time + rng.uniform(0.0002, 0.003))
        errors.append(stamp - true_time)
    assert mapper.rate == pytest.approx(1 / 0.7, rel=1e-3)
    assert np.max(np.abs(errors[2000:])) < 0.001  # within a millisecond once the window is full
