"""Shared helpers of the bag tests: a session, deterministic frames and poses, and a demo writer."""

import numpy as np
from scipy.spatial.transform import Rotation

WIDTH, HEIGHT = 64, 48
T0_NS = 1_700_000_000_000_000_000


def make_session(**overrides):
    """Return a valid session dict for small 64x48 frames."""
    flange_to_probe = np.eye(4)
    flange_to_probe[:3, 3] = (0.0, 0.0, 120.0)
    session = dict(
        target_plane='PSAX-AV',
        width=WIDTH,
        height=HEIGHT,
        flange_to_probe=flange_to_probe,
        operator_id='op-7',
        subject_id='sim-0003',
        probe_model='sim-phased-array',
        crop=(10, 20, 300, 200),
        image_latency=0.012,
        extra_yaml={'simulator_seed': 3},
    )
    session.update(overrides)
    return session


def frame(index):
    """Return a frame whose pixels encode its index (so a recovered frame can be identified)."""
    image = np.full((HEIGHT, WIDTH), index % 256, dtype=np.uint8)
    image[0, :4] = np.frombuffer(int(index).to_bytes(4, 'little'), dtype=np.uint8)
    image[1:, 0] = np.arange(HEIGHT - 1, dtype=np.uint8)
    return image


def frame_index(image):
    """Return the index encoded by :func:`frame`."""
    return int.from_bytes(image[0, :4].tobytes(), 'little')


def pose(index):
    """Return a rigid 4x4 pose in mm that changes with ``index``."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler(
        'xyz', [index * 0.7, -20 + index * 0.1, 170 + index * 0.3], degrees=True
    ).as_matrix()
    matrix[:3, 3] = (400.0 + index * 0.25, -50.0 + index * 0.1, 300.0 - index * 0.05)
    return matrix


def write_demo(writer, frames, poses_per_frame=4):
    """Write ``frames`` frames, each preceded by pose samples and followed by its synced pose and a wrench."""
    pose_index = 0
    for i in range(frames):
        for _ in range(poses_per_frame):
            writer.write_probe_pose(pose(pose_index), T0_NS + pose_index * 1_000_000)
            pose_index += 1
        stamp = T0_NS + (pose_index - 1) * 1_000_000 - 400_000
        writer.write_image(frame(i), stamp)
        valid = i % 5 != 4
        writer.write_synced_pose(
            pose(pose_index - 1) if valid else None, stamp, valid, 0.0006 if valid else -1.0, 0.0004
        )
        writer.write_wrench((0.1 * i, 0.0, -2.0), (0.0, 0.01, 0.0), stamp + 1)
    return pose_index
