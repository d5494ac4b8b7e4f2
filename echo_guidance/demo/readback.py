"""Read a demo run back from its bags with the independent reader (rosbags), and check them.

Two checks, neither using the code that wrote the bags: ``echo-guidance bag check`` on the
demonstration bag (the format's own validator, run as a command), and rosbags' ``AnyReader`` over
both bags, which must decode every message and find the expected topics with messages in them.
The summary's figures are computed from what this module reads back, not from what the run saw live.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np

from echo_guidance.demo.run import GUIDANCE_TOPIC, STATE_TOPIC, state_record

EXPECTED_TOPICS = ('/us/image', '/arm/probe_pose', '/recorder/synced_pose', GUIDANCE_TOPIC, STATE_TOPIC)
PEDAL_TOPIC = '/pedal/event'
DEADMAN_PRESSED = 4  # PedalEvent.DEADMAN_PRESSED


class RunBagError(RuntimeError):
    """A run's bags are unreadable, or lack a topic the demo must have recorded."""


@dataclasses.dataclass
class RunData:
    """A run as read back: message counts per topic, probe poses, controller states, presses."""

    counts: dict
    pose_stamps_s: np.ndarray
    poses_mm: np.ndarray
    states: list
    press_stamps_s: list
    model_ids: set


def _stamp_s(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def read_run(bags):
    """Read the run's bags (paths) together with rosbags' AnyReader; return :class:`RunData`.

    Raises:
        RunBagError: a bag cannot be read, or an expected topic is missing or empty.
    """
    from rosbags.highlevel import AnyReader

    from echo_guidance.geometry import pose_msg_to_matrix

    counts, stamps, poses, states, presses, model_ids = {}, [], [], [], [], set()
    try:
        with AnyReader([Path(b) for b in bags]) as reader:
            for connection, _log_time, raw in reader.messages():
                message = reader.deserialize(raw, connection.msgtype)
                topic = connection.topic
                counts[topic] = counts.get(topic, 0) + 1
                if topic == '/arm/probe_pose':
                    stamps.append(_stamp_s(message.header))
                    poses.append(pose_msg_to_matrix(message.pose))
                elif topic == STATE_TOPIC:
                    record = state_record(message.data)
                    if record is not None:
                        states.append(record)
                elif topic == PEDAL_TOPIC and message.event == DEADMAN_PRESSED:
                    presses.append(_stamp_s(message.header))
                elif topic == GUIDANCE_TOPIC and message.model_id:
                    model_ids.add(message.model_id)
    except Exception as error:  # rosbags raises its own error types for unreadable bags
        raise RunBagError(
            f'cannot read the run bags {[str(b) for b in bags]}: {type(error).__name__}: {error}'
        )
    missing = [t for t in EXPECTED_TOPICS if not counts.get(t)]
    if missing:
        raise RunBagError(f'the run bags have no messages on {missing}; counts: {counts}')
    states.sort(key=lambda r: r.stamp_s)
    return RunData(
        counts=counts,
        pose_stamps_s=np.asarray(stamps, dtype=float),
        poses_mm=np.asarray(poses, dtype=float).reshape(-1, 4, 4),
        states=states,
        press_stamps_s=presses,
        model_ids=model_ids,
    )


def check_demonstration_bag(path):
    """Run ``echo-guidance bag check PATH``; return (ok, its output)."""
    result = subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'bag', 'check', str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()
