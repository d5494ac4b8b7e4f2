"""The decimated pose stream without ROS: samples kept, set-ups refused, profile wiring, accuracy."""

import math

import numpy as np
import pytest

from echo_guidance.nodes.arm_state import (
    DECIMATED_POSE_TOPIC,
    PoseDecimator,
    check_decimated_topic,
)

EPOCH_S = 1_795_427_502.0  # a whole second on today's ROS clock: stamps are large floats, as in the node


def grid_stamp_ns(index, rate_hz=1000.0, epoch_s=EPOCH_S):
    """The message stamp (int ns) of grid sample ``index``, rounded through float seconds like the node."""
    return int(round((epoch_s + index / rate_hz) * 1e9))


def kept_indices(decimator, indices, rate_hz=1000.0):
    return [i for i in indices if decimator.keep(grid_stamp_ns(i, rate_hz))]


def test_clean_1khz_grid_keeps_every_tenth_sample_on_the_10ms_grid():
    # Float seconds put 1 ms grid stamps a few hundred ns off the grid; the picks must not jitter.
    assert max(abs(grid_stamp_ns(i) - (int(EPOCH_S) * 10**9 + i * 10**6)) for i in range(5000)) > 0
    kept = kept_indices(PoseDecimator(100.0), range(3, 5003))
    # The stream starts mid-period: its first sample is that period's pick; then the 10 ms grid.
    assert kept[:3] == [3, 10, 20] and np.all(np.diff(kept[1:]) == 10) and len(kept) == 501
    assert kept_indices(PoseDecimator(250.0), range(0, 40)) == list(range(0, 40, 4))
    assert kept_indices(PoseDecimator(1000.0), range(0, 40)) == list(range(40))


def test_a_missing_sample_moves_only_its_own_pick():
    present = [i for i in range(200) if i not in (50, 51, 120, 133)]
    kept = kept_indices(PoseDecimator(100.0), present)
    # 50 and 51 are gone: period 5 takes 52; 120 is gone: period 12 takes 121; the rest stay on the grid.
    assert kept == [0, 10, 20, 30, 40, 52, 60, 70, 80, 90, 100, 110, 121, 130, 140, 150, 160, 170, 180, 190]


def test_an_irregular_stream_gives_at_most_one_sample_per_period():
    rng = np.random.default_rng(3)
    stamps_ns = np.cumsum(rng.integers(500_000, 9_000_000, size=2000)) + int(EPOCH_S) * 10**9
    decimator = PoseDecimator(100.0)
    kept = [int(s) for s in stamps_ns if decimator.keep(int(s))]
    periods = [s // 10_000_000 for s in kept]
    assert periods == sorted(set(periods)), "two picks in one 10 ms period"
    assert set(periods) == {int(s) // 10_000_000 for s in stamps_ns}, "a period with samples got no pick"
    assert not decimator.keep(kept[-1]) and not decimator.keep(kept[-1] - 10_000_000), "older stamps"


@pytest.mark.parametrize("rate", [0.0, 0.5, 1500.0, math.nan, math.inf, -100.0, "100"])
def test_bad_rates_are_refused_naming_the_range(rate):
    with pytest.raises(ValueError, match=r"decimated pose rate must be a number of Hz in \[1, 1000\]"):
        PoseDecimator(rate)


def test_set_ups_that_would_not_thin_the_stream_evenly_are_refused():
    check_decimated_topic(DECIMATED_POSE_TOPIC, "/arm/probe_pose", 100.0, 1000.0, "scripted.rate_hz")
    check_decimated_topic(DECIMATED_POSE_TOPIC, "/arm/probe_pose", 100.0, 100.0, "state_publish_rate_hz")
    check_decimated_topic(DECIMATED_POSE_TOPIC, "/arm/probe_pose", 100.0)  # real arm: rate unknown
    check_decimated_topic("", "/arm/probe_pose", 300.0, 1000.0, "scripted.rate_hz")  # off: nothing to check
    with pytest.raises(ValueError, match=r"decimated_pose_topic '/arm/probe_pose' is pose_topic"):
        check_decimated_topic("/arm/probe_pose", "/arm/probe_pose", 100.0)
    with pytest.raises(
        ValueError,
        match=r"decimated_pose_rate_hz = 300 Hz must be scripted.rate_hz \(1000 Hz\) divided by a whole "
        r"number.*e\.g\. 1000, 500, 200, 100",
    ):
        check_decimated_topic(DECIMATED_POSE_TOPIC, "/arm/probe_pose", 300.0, 1000.0, "scripted.rate_hz")
    with pytest.raises(ValueError, match=r"state_publish_rate_hz \(50 Hz\)"):
        check_decimated_topic(DECIMATED_POSE_TOPIC, "/arm/probe_pose", 100.0, 50.0, "state_publish_rate_hz")


def test_poses_at_30fps_frame_stamps_from_the_100hz_stream_match_the_trajectory():
    """The guidance node's lookup (its default tolerance) on the decimated stream: all paired, tiny error."""
    from echo_guidance.arm.calibration import FlangeToProbeCalibration
    from echo_guidance.arm.trajectory import SinusoidTrajectory
    from echo_guidance.geometry import geodesic_rotation_error_deg, rotation_to_quaternion
    from echo_guidance.guidance.pose_lookup import pose_at_stamp
    from echo_guidance.nodes.guidance import PARAMETERS

    tolerance_s = next(p.default for p in PARAMETERS if p.name == "pose_tolerance_s")
    calibration = FlangeToProbeCalibration.from_config(
        {"translation_mm": [0, 0, 135.0], "rpy_deg": [0, 0, 90.0]}
    )
    trajectory = SinusoidTrajectory(epoch_s=EPOCH_S)
    decimator = PoseDecimator(100.0)
    samples = []
    for i in range(0, 10_000):  # 10 s at 1 kHz, decimated as the node does
        stamp_ns = grid_stamp_ns(i)
        if decimator.keep(stamp_ns):
            T = trajectory.probe_pose(EPOCH_S + i / 1000.0, calibration)
            samples.append((stamp_ns * 1e-9, *(T[:3, 3] / 1000.0), *rotation_to_quaternion(T[:3, :3])))
    assert len(samples) == 1000
    frames = EPOCH_S + 0.05 + np.arange(270) / 30.0 + 0.0013  # off the pose grid
    worst_mm = worst_deg = 0.0
    for t in frames:
        pose, reason, _ = pose_at_stamp(samples, t, tolerance_s)
        assert pose is not None, reason
        truth = trajectory.probe_pose(t, calibration)
        worst_mm = max(worst_mm, float(np.linalg.norm(pose[:3, 3] - truth[:3, 3])))
        worst_deg = max(worst_deg, float(geodesic_rotation_error_deg(pose, truth)))
    # "Well under 0.1 mm": the built-in trajectory (up to ~40 mm/s) interpolated 10 ms apart.
    assert worst_mm < 0.01 and worst_deg < 0.01, (worst_mm, worst_deg)


# ------------------------------------------------------------------------------------------------
# Profile wiring


def effective_parameters(node_spec):
    """A profile node's parameters: the node's defaults, then its parameter files, then the profile's."""
    import importlib

    from echo_guidance.resources import config_path
    from echo_guidance.up.graph import parameters_in_file

    module = importlib.import_module(f"echo_guidance.nodes.{node_spec.node}")
    specs = module.parameter_specs() if hasattr(module, "parameter_specs") else module.PARAMETERS
    values = {spec.name: spec.default for spec in specs}
    for file_name in node_spec.params_files:
        values.update(parameters_in_file(config_path(file_name), node_spec.name))
    values.update(node_spec.parameters)
    return values


def profile_names():
    from echo_guidance.recording.profiles import available_profiles

    return sorted(available_profiles())


@pytest.mark.parametrize("profile_name", profile_names())
def test_every_profile_wires_its_pose_consumers_to_a_published_pose_topic(profile_name):
    from echo_guidance.recording.profiles import load_profile

    profile = load_profile(profile_name)
    published, consumers = {}, []
    for node in profile.nodes:
        p = effective_parameters(node)
        owns_arm = node.node == "arm_state" or (node.node == "arm_control" and p["backend"] != "ros2_control")
        if owns_arm:
            published[p["pose_topic"]] = "full"
            if p["decimated_pose_topic"].strip():
                published[p["decimated_pose_topic"].strip()] = "decimated"
        if node.node == "arm_control" and p["backend"] == "ros2_control":
            consumers.append((node.name, p["pose_topic"], "full"))
        if node.node == "recorder":
            consumers.append((node.name, p["pose_topic"], "full"))  # issue 4: the recording loses nothing
        if node.node == "guidance" and p["pose_topic"].strip():
            consumers.append((node.name, p["pose_topic"], "decimated"))
        if node.node == "capture" and p["source_kind"] == "sim":
            consumers.append((node.name, p["pose_topic"], "decimated"))
    for name, topic, wanted in consumers:
        assert topic in published, (
            f"{profile_name}: {name} reads {topic}, which no node of the profile publishes"
        )
        assert published[topic] == wanted, (
            f"{profile_name}: {name} reads the {published[topic]} stream {topic}"
        )
