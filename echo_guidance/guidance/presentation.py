"""What a sonographer sees: the guidance action as arrows, dials and short instructions.

One function, :func:`guidance_graphics`, turns a 6-D action into drawing primitives in normalised
coordinates (0..1 of the drawing's width and height; v grows downward like image rows), so that the
browser display (``echo_guidance/display``, drawn on a canvas) and the ROS overlay image
(:func:`draw_overlay`, OpenCV) show the same arrows, and tests check them without a browser.

Geometry (probe frame, docs/conventions.md): the image is the probe's x–z plane, columns grow with +x
(image right), rows with depth +z (image down); +y = z × x points out of the screen, toward the viewer.
With R the rotation of U(a), the target's beam axis in the current probe frame is d = R·ẑ and its
array axis is e = R·x̂. Three views show the rotation without Euler-angle puzzles:

- **rock** (in the image plane): the beam swings toward image right by atan2(d_x, d_z); drawn as an
  arc around the sector apex (top centre) from straight down to the target beam direction.
- **tilt** (side view, +y to the right, depth down, i.e. seen from the image's −x side): the beam leans
  toward +y (out of the screen) by atan2(d_y, d_z).
- **rotate** (seen from the probe handle, looking along the beam: +x right, +y down): the array turns
  clockwise by atan2(e_y, e_x).

For small angles these are pitch, −roll and yaw of the action. Translation: an arrow in the image
plane from the image centre along (x, z), and a ⊙ (toward +y, out of the screen) or ⊗ (−y, into the
screen) for the out-of-plane part.
"""

import math

import numpy as np

from echo_guidance.geometry import action_to_matrix

TRANSLATION_COLOUR = (48, 209, 88)
"""RGB of the translation arrow and the out-of-plane symbol (a green no other element uses)."""
ROTATION_COLOUR = (255, 159, 10)
"""RGB of the rotation arcs and target axes (orange)."""
REFERENCE_COLOUR = (160, 160, 160)
"""RGB of the current-pose references in the dials (grey)."""

DEADBAND_MM = 1.0
"""Translations below this are shown as "hold" (no arrow)."""
DEADBAND_DEG = 1.0
"""Rotations below this are shown as "hold" (no arc)."""
FULL_SCALE_MM = 30.0
"""In-plane translation at which the arrow reaches its full length."""


def _hex(rgb):
    return '#%02x%02x%02x' % tuple(rgb)


def rotation_views(action):
    """Return (rock, tilt, rotate) in degrees for an action (see the module docstring)."""
    R = action_to_matrix(np.asarray(action, dtype=float))[:3, :3]
    d, e = R[:, 2], R[:, 0]
    rock = math.degrees(math.atan2(d[0], d[2]))
    tilt = math.degrees(math.atan2(d[1], d[2]))
    rotate = math.degrees(math.atan2(e[1], e[0]))
    return rock, tilt, rotate


def instructions(action):
    """Short instructions, one per motion that exceeds the dead band (empty list: hold still)."""
    x, y, z = (float(v) for v in np.asarray(action, dtype=float)[:3])
    rock, tilt, rotate = rotation_views(action)
    lines = []
    if abs(x) >= DEADBAND_MM:
        lines.append(
            f'slide {abs(x):.0f} mm toward image {"right" if x > 0 else "left"} ({"+" if x > 0 else "-"}x)'
        )
    if abs(y) >= DEADBAND_MM:
        lines.append(
            f'slide {abs(y):.0f} mm {"out of" if y > 0 else "into"} the screen ({"+" if y > 0 else "-"}y)'
        )
    if abs(z) >= DEADBAND_MM:
        lines.append(f'{"press" if z > 0 else "ease off"} {abs(z):.0f} mm ({"+" if z > 0 else "-"}z)')
    if abs(rock) >= DEADBAND_DEG:
        lines.append(f'rock {abs(rock):.0f}°: beam toward image {"right" if rock > 0 else "left"}')
    if abs(tilt) >= DEADBAND_DEG:
        lines.append(f'tilt {abs(tilt):.0f}°: beam {"out of" if tilt > 0 else "into"} the screen')
    if abs(rotate) >= DEADBAND_DEG:
        lines.append(
            f'rotate {abs(rotate):.0f}° {"clockwise" if rotate > 0 else "counter-clockwise"} '
            f'(seen from the handle)'
        )
    return lines


def _arc(centre, radius, start_deg, end_deg, colour, width, aspect=1.0):
    """An arc primitive; angles in drawing coordinates (0° = right, 90° = down), head at the end."""
    return {
        'kind': 'arc',
        'centre': list(centre),
        'radius': radius,
        'start_deg': start_deg,
        'end_deg': end_deg,
        'colour': _hex(colour),
        'width': width,
        'aspect': aspect,
        'head': True,
    }


def _line(start, end, colour, width, head=True):
    return {
        'kind': 'line',
        'from': list(start),
        'to': list(end),
        'colour': _hex(colour),
        'width': width,
        'head': head,
    }


def guidance_graphics(action, aspect=1.0):
    """Drawing primitives for ``action`` on an image of width/height ``aspect``, plus the three dials.

    Returns:
        dict with ``image`` (primitives over the frame), ``tilt`` and ``rotate`` (primitives of the two
        dials, each in its own unit square), ``views`` {rock, tilt, rotate} in degrees, ``translation``
        {x, y, z, in_plane} in mm, and ``instructions`` (list of str). Coordinates are (u, v) in 0..1
        of the drawing's width and height, v downward. Primitive kinds: ``line`` (from, to, head),
        ``arc`` (centre, radius as a fraction of the height, start_deg, end_deg, head at the end),
        ``dot`` / ``cross`` (centre, radius).
    """
    action = np.asarray(action, dtype=float)
    x, y, z = (float(v) for v in action[:3])
    rock, tilt, rotate = rotation_views(action)
    image = []
    # Lengths are fractions of the height; u spans aspect × the height.
    in_plane = math.hypot(x, z)
    centre = (0.5, 0.5)
    if in_plane >= DEADBAND_MM:
        length = 0.12 + 0.28 * min(1.0, in_plane / FULL_SCALE_MM)
        end = (0.5 + length * x / in_plane / aspect, 0.5 + length * z / in_plane)
        image.append(_line(centre, end, TRANSLATION_COLOUR, 0.018))
    if abs(y) >= DEADBAND_MM:
        radius = 0.035 + 0.035 * min(1.0, abs(y) / FULL_SCALE_MM)
        image.append(
            {
                'kind': 'dot' if y > 0 else 'cross',
                'centre': list(centre),
                'radius': radius,
                'colour': _hex(TRANSLATION_COLOUR),
                'width': 0.012,
            }
        )
    if abs(rock) >= DEADBAND_DEG:
        # Around the sector apex (top centre), from straight down toward the target beam.
        image.append(_arc((0.5, 0.0), 0.82, 90.0, 90.0 - rock, ROTATION_COLOUR, 0.014))
        direction = math.radians(90.0 - rock)
        image.append(
            _line(
                (0.5, 0.0),
                (0.5 + 0.9 * math.cos(direction) / aspect, 0.9 * math.sin(direction)),
                ROTATION_COLOUR,
                0.006,
                head=False,
            )
        )
    # Dials in their own unit squares.
    tilt_dial = [
        _line((0.5, 0.15), (0.5, 0.9), REFERENCE_COLOUR, 0.02, head=False),
        _line((0.2, 0.15), (0.8, 0.15), REFERENCE_COLOUR, 0.05, head=False),
    ]
    if abs(tilt) >= DEADBAND_DEG:
        direction = math.radians(90.0 - tilt)
        tilt_dial.append(
            _line(
                (0.5, 0.15),
                (0.5 + 0.75 * math.cos(direction), 0.15 + 0.75 * math.sin(direction)),
                ROTATION_COLOUR,
                0.03,
            )
        )
        tilt_dial.append(_arc((0.5, 0.15), 0.5, 90.0, 90.0 - tilt, ROTATION_COLOUR, 0.025))
    rotate_dial = [_line((0.15, 0.5), (0.85, 0.5), REFERENCE_COLOUR, 0.06, head=False)]
    if abs(rotate) >= DEADBAND_DEG:
        direction = math.radians(rotate)
        rotate_dial.append(
            _line(
                (0.5 - 0.38 * math.cos(direction), 0.5 - 0.38 * math.sin(direction)),
                (0.5 + 0.38 * math.cos(direction), 0.5 + 0.38 * math.sin(direction)),
                ROTATION_COLOUR,
                0.04,
                head=False,
            )
        )
        rotate_dial.append(_arc((0.5, 0.5), 0.44, 0.0, rotate, ROTATION_COLOUR, 0.03))
    return {
        'image': image,
        'tilt': tilt_dial,
        'rotate': rotate_dial,
        'views': {'rock': rock, 'tilt': tilt, 'rotate': rotate},
        'translation': {'x': x, 'y': y, 'z': z, 'in_plane': in_plane},
        'instructions': instructions(action),
    }


def _rgb(hex_colour):
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _arrow_head(canvas, tip, angle, size, colour, thickness):
    import cv2

    for side in (-1, 1):
        a = angle + math.pi + side * math.radians(28)
        point = (int(round(tip[0] + size * math.cos(a))), int(round(tip[1] + size * math.sin(a))))
        cv2.line(canvas, (int(round(tip[0])), int(round(tip[1]))), point, colour, thickness, cv2.LINE_AA)


def draw_primitives(canvas, primitives):
    """Draw primitives from :func:`guidance_graphics` on an RGB uint8 canvas (H, W, 3), in place."""
    import cv2

    height, width = canvas.shape[:2]

    def px(point):
        return (point[0] * width, point[1] * height)

    for p in primitives:
        colour = _rgb(p['colour'])
        thickness = max(1, int(round(p['width'] * height)))
        if p['kind'] == 'line':
            a, b = px(p['from']), px(p['to'])
            cv2.line(
                canvas,
                tuple(int(round(v)) for v in a),
                tuple(int(round(v)) for v in b),
                colour,
                thickness,
                cv2.LINE_AA,
            )
            if p['head']:
                _arrow_head(canvas, b, math.atan2(b[1] - a[1], b[0] - a[0]), 0.06 * height, colour, thickness)
        elif p['kind'] == 'arc':
            c = px(p['centre'])
            r = p['radius'] * height
            start, end = p['start_deg'], p['end_deg']
            angles = np.linspace(math.radians(start), math.radians(end), 40)
            points = np.stack([c[0] + r * np.cos(angles), c[1] + r * np.sin(angles)], axis=1)
            cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, colour, thickness, cv2.LINE_AA)
            if p['head']:
                tangent = angles[-1] + (math.pi / 2 if end >= start else -math.pi / 2)
                _arrow_head(canvas, points[-1], tangent, 0.05 * height, colour, thickness)
        elif p['kind'] in ('dot', 'cross'):
            c = tuple(int(round(v)) for v in px(p['centre']))
            r = max(2, int(round(p['radius'] * height)))
            cv2.circle(canvas, c, r, colour, thickness, cv2.LINE_AA)
            if p['kind'] == 'dot':
                cv2.circle(canvas, c, max(1, r // 3), colour, -1, cv2.LINE_AA)
            else:
                k = int(round(r * 0.7))
                cv2.line(canvas, (c[0] - k, c[1] - k), (c[0] + k, c[1] + k), colour, thickness, cv2.LINE_AA)
                cv2.line(canvas, (c[0] - k, c[1] + k), (c[0] + k, c[1] - k), colour, thickness, cv2.LINE_AA)
    return canvas


def draw_overlay(frame, result, min_side=384):
    """RGB uint8 overlay of a guidance result on its grey frame: arrows, numbers, plane, confidence.

    The frame is scaled up (nearest multiple) to at least ``min_side`` pixels high so text stays legible.
    ``result`` is a :class:`~echo_guidance.guidance.engine.GuidanceResult` (or anything with the same fields).
    """
    import cv2

    frame = np.asarray(frame)
    if frame.ndim == 3:
        frame = frame[:, :, 0]
    scale = max(1, int(math.ceil(min_side / max(frame.shape[0], 1))))
    grey = cv2.resize(
        frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST
    )
    canvas = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    height = canvas.shape[0]
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * height / 384
    thickness = max(1, int(round(height / 384)))
    line_h = int(round(16 * height / 384))

    def text(row, message, colour=(255, 255, 255)):
        cv2.putText(
            canvas, message, (6, row * line_h + line_h), font, size, (0, 0, 0), thickness + 2, cv2.LINE_AA
        )
        cv2.putText(canvas, message, (6, row * line_h + line_h), font, size, colour, thickness, cv2.LINE_AA)

    if not result.valid:
        text(0, f'{result.plane}: NO GUIDANCE', (255, 80, 80))
        text(1, (result.status or '')[:70], (255, 80, 80))
        return canvas
    graphics = guidance_graphics(result.action, canvas.shape[1] / canvas.shape[0])
    draw_primitives(canvas, graphics['image'])
    a = result.action
    text(
        0,
        f'{result.plane}  conf {result.confidence:.2f}' + ('  PLANE REACHED' if result.plane_reached else ''),
        (48, 209, 88) if result.plane_reached else (255, 255, 255),
    )
    text(1, f'x {a[0]:+.1f} y {a[1]:+.1f} z {a[2]:+.1f} mm')
    text(2, f'roll {a[3]:+.1f} pitch {a[4]:+.1f} yaw {a[5]:+.1f} deg')
    for i, line in enumerate(graphics['instructions'][:4]):
        text(3 + i, line.replace('°', ' deg'), (255, 220, 160))
    return canvas
