"""Conversions between the project's NumPy types (4x4 mm transforms) and bag messages (metres).

The bag stores poses as ROS messages (metres, unit quaternion x, y, z, w); inside echo_guidance
transforms are 4x4 homogeneous matrices in millimetres (see CONVENTIONS.md).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

MM_PER_M = 1000.0
_RIGID_TOLERANCE = 1e-4
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_EYE3 = np.eye(3)


class InvalidPoseError(ValueError):
    """A pose given to the bag writer is not a finite rigid 4x4 transform."""


def check_rigid_matrix(matrix_mm, what='pose'):
    """Return ``matrix_mm`` as a float64 (4, 4) array after checking it is a finite rigid transform.

    Raises:
        InvalidPoseError: wrong shape, NaN/inf, last row not (0, 0, 0, 1), or rotation not orthonormal
            with determinant +1.
    """
    matrix = np.asarray(matrix_mm, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InvalidPoseError(
            f'{what}: expected a 4x4 homogeneous transform in mm, got shape {matrix.shape}'
        )
    # Plain max-abs checks: this runs for every 1 kHz pose sample, np.allclose is several times slower.
    if not np.isfinite(matrix).all():
        raise InvalidPoseError(f'{what}: transform contains NaN or inf: {matrix.tolist()}')
    if np.abs(matrix[3] - _LAST_ROW).max() > _RIGID_TOLERANCE:
        raise InvalidPoseError(f'{what}: last row must be (0, 0, 0, 1), got {matrix[3].tolist()}')
    rotation = matrix[:3, :3]
    if (
        np.abs(rotation @ rotation.T - _EYE3).max() > _RIGID_TOLERANCE
        or np.dot(np.cross(rotation[0], rotation[1]), rotation[2]) < 0
    ):
        raise InvalidPoseError(f'{what}: upper-left 3x3 is not a rotation matrix: {rotation.tolist()}')
    return matrix


def matrix_mm_to_position_quaternion(matrix_mm, what='pose'):
    """Return (position in metres (3,), quaternion x, y, z, w (4,)) of a 4x4 transform in mm."""
    matrix = check_rigid_matrix(matrix_mm, what)
    quaternion = rotation_matrix_to_quaternion(matrix[:3, :3])
    return matrix[:3, 3] / MM_PER_M, quaternion


def rotation_matrix_to_quaternion(rotation):
    """Return the unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix.

    Shepperd's method: pick the largest of 4w², 4x², 4y², 4z² to divide by, which keeps it stable
    (the result equals SciPy's Rotation.from_matrix(...).as_quat() up to sign, 10x faster here).
    """
    r = rotation
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    candidates = (trace, r[0, 0], r[1, 1], r[2, 2])
    k = max(range(4), key=candidates.__getitem__)
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
        q = 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
        q = (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s
    else:
        s = 2.0 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
        q = (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s
    quaternion = np.array(q, dtype=np.float64)
    quaternion /= np.linalg.norm(quaternion)
    # One sign for the same rotation makes bags comparable byte for byte.
    if quaternion[3] < 0:
        quaternion = -quaternion
    return quaternion


def position_quaternion_to_matrix_mm(position_m, quaternion_xyzw):
    """Return the 4x4 transform in mm of a position in metres and a quaternion (x, y, z, w)."""
    quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = np.linalg.norm(quaternion)
    if not np.isfinite(norm) or norm < 1e-9:
        raise InvalidPoseError(f'quaternion {quaternion.tolist()} has no orientation (norm {norm})')
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    matrix[:3, 3] = np.asarray(position_m, dtype=np.float64) * MM_PER_M
    return matrix


def pose_message_to_matrix_mm(pose):
    """Return the 4x4 transform in mm of a rosbags geometry_msgs/Pose object."""
    p, q = pose.position, pose.orientation
    return position_quaternion_to_matrix_mm((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def split_stamp_ns(stamp_ns):
    """Return (sec, nanosec) of a non-negative integer time in nanoseconds, for builtin_interfaces/Time."""
    stamp = int(stamp_ns)
    if stamp != stamp_ns or stamp < 0:
        raise ValueError(f'stamp_ns must be a non-negative integer number of nanoseconds, got {stamp_ns!r}')
    sec, nanosec = divmod(stamp, 1_000_000_000)
    if sec >= 2**31:
        raise ValueError(f'stamp_ns {stamp} is beyond the int32 seconds of builtin_interfaces/Time')
    return sec, nanosec


def stamp_to_ns(stamp):
    """Return the nanoseconds of a builtin_interfaces/Time object."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
