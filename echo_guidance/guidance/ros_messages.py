"""Guidance results as ROS messages, and back: Guidance, MarkerArray, overlay Image (ROS imported lazily).

Units follow the conventions: the action stays in mm / degrees (as Guidance.msg documents), poses in
messages are in metres (``echo_guidance.geometry`` converts). An invalid result becomes the published
"no guidance" state: ``valid=False``, ``status`` set, zero action and confidence, identity pose.
"""

import numpy as np

from echo_guidance.geometry import action_to_matrix, matrix_to_pose_msg

MARKER_NAMESPACE = 'guidance'
MARKER_LIFETIME_S = 0.5
"""Markers vanish this long after the last guidance, so a stopped node leaves no stale arrow."""


def guidance_message(result, stamp, frame_id):
    """echo_guidance/msg/Guidance for a GuidanceResult; ``stamp`` is the frame's builtin_interfaces/Time."""
    from echo_guidance.msg import Guidance

    msg = Guidance()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.target_plane = result.plane
    msg.valid = bool(result.valid)
    msg.status = result.status
    msg.model_id = result.model_id
    msg.stage = result.stage
    msg.distance = float(result.distance) if result.valid else float('nan')
    if result.valid:
        msg.target_in_probe = matrix_to_pose_msg(action_to_matrix(result.action))
        msg.action = [float(v) for v in result.action]
        msg.axis_confidence = [float(min(1.0, max(0.0, v))) for v in result.axis_confidence]
        msg.confidence = float(min(1.0, max(0.0, result.confidence)))
        msg.plane_reached = bool(result.plane_reached)
    else:
        msg.target_in_probe.orientation.w = 1.0
    return msg


def guidance_to_dict(msg):
    """Plain-Python dict of a Guidance message (for the display and benchmarks)."""
    return {
        'stamp_ns': int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec),
        'frame_id': msg.header.frame_id,
        'target_plane': msg.target_plane,
        'valid': bool(msg.valid),
        'status': msg.status,
        'action': [float(v) for v in msg.action],
        'axis_confidence': [float(v) for v in msg.axis_confidence],
        'confidence': float(msg.confidence),
        'plane_reached': bool(msg.plane_reached),
        'distance': float(msg.distance) if np.isfinite(msg.distance) else None,
        'stage': msg.stage,
        'model_id': msg.model_id,
    }


def _duration(seconds):
    from builtin_interfaces.msg import Duration

    return Duration(sec=int(seconds), nanosec=int(round((seconds - int(seconds)) * 1e9)))


def guidance_markers(result, stamp, frame_id):
    """visualization_msgs/MarkerArray: motion arrow, target beam axis and a text label, in the probe frame.

    An invalid result clears the namespace (DELETEALL) and shows the "no guidance" reason instead.
    """
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    def marker(marker_id, kind):
        m = Marker()
        m.header.stamp = stamp
        m.header.frame_id = frame_id
        m.ns = MARKER_NAMESPACE
        m.id = marker_id
        m.type = kind
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.lifetime = _duration(MARKER_LIFETIME_S)
        return m

    markers = MarkerArray()
    if not result.valid:
        clear = Marker()
        clear.header.stamp = stamp
        clear.header.frame_id = frame_id
        clear.ns = MARKER_NAMESPACE
        clear.action = Marker.DELETEALL
        text = marker(2, Marker.TEXT_VIEW_FACING)
        text.pose.position.z = -0.02
        text.scale.z = 0.006
        text.color.r, text.color.g, text.color.b, text.color.a = 1.0, 0.3, 0.3, 1.0
        text.text = f'{result.plane}: no guidance ({result.status})'
        markers.markers = [clear, text]
        return markers
    T = action_to_matrix(result.action)
    target = T[:3, 3] / 1000.0
    beam = T[:3, 2]
    move = marker(0, Marker.ARROW)
    move.points = [
        Point(x=0.0, y=0.0, z=0.0),
        Point(x=float(target[0]), y=float(target[1]), z=float(target[2])),
    ]
    move.scale.x, move.scale.y, move.scale.z = 0.002, 0.004, 0.005
    move.color.r, move.color.g, move.color.b, move.color.a = 0.19, 0.82, 0.35, 1.0
    axis = marker(1, Marker.ARROW)
    tip = target + 0.03 * beam
    axis.points = [
        Point(x=float(target[0]), y=float(target[1]), z=float(target[2])),
        Point(x=float(tip[0]), y=float(tip[1]), z=float(tip[2])),
    ]
    axis.scale.x, axis.scale.y, axis.scale.z = 0.0015, 0.003, 0.004
    axis.color.r, axis.color.g, axis.color.b, axis.color.a = 1.0, 0.62, 0.04, 1.0
    text = marker(2, Marker.TEXT_VIEW_FACING)
    text.pose.position.z = -0.02
    text.scale.z = 0.006
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    a = result.action
    text.text = (
        f'{result.plane} conf {result.confidence:.2f}{" REACHED" if result.plane_reached else ""}\n'
        f'x {a[0]:+.1f} y {a[1]:+.1f} z {a[2]:+.1f} mm  r {a[3]:+.1f} p {a[4]:+.1f} y {a[5]:+.1f} deg'
    )
    markers.markers = [move, axis, text]
    return markers


def rgb_image_message(rgb, stamp, frame_id):
    """sensor_msgs/Image (rgb8) of an RGB uint8 (H, W, 3) array."""
    from sensor_msgs.msg import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg
