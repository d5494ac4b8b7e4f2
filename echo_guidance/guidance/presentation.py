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

What is said, and how firmly, is decided here too (the page and the overlay only draw it):

* **Instructions**: at most :data:`MAX_INSTRUCTIONS`, the largest corrections first. The six
  corrections are the translations x, y, z (mm) and the rotation views rock, tilt, rotate (degrees);
  sizes are compared one millimetre to one degree, the ratio of the closed-loop success window
  (5 mm and 5°) and of the dead bands (1 mm, 1°). Ties keep the order x, y, z, rock, tilt, rotate.
* **States** (:func:`guidance_state`): ``waiting`` (no guidance yet), ``stale`` (no update for a
  while), ``no_guidance`` (the node said why), ``low_confidence`` (overall confidence below
  :data:`LOW_CONFIDENCE_BELOW`: no arrows, no instructions, the numbers greyed), ``plane_reached``,
  ``guiding``. :func:`guidance_view` says for each what the page shows.
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
MAX_INSTRUCTIONS = 2
"""Instructions shown at once: the largest corrections (more at once are not followed, issue 17)."""
MM_PER_DEG = 1.0
"""Ranking weight: one degree of rotation counts as much as this many millimetres of translation."""
LOW_CONFIDENCE_BELOW = 0.5
"""Overall confidence below which guidance is withheld (arm control's ``limits.min_confidence``; below
0.5 the measured errors are about twice as large, docs/guidance.md section 3)."""

STATE_BADGES = {
    'waiting': 'WAITING',
    'stale': 'STALE',
    'no_guidance': 'NO GUIDANCE',
    'low_confidence': 'LOW CONFIDENCE',
    'plane_reached': 'PLANE REACHED',
    'guiding': 'GUIDING',
}
"""The page's badge for each state of :func:`guidance_state`."""


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


def corrections(action):
    """Every motion beyond its dead band as (size, instruction), in the order x, y, z, rock, tilt, rotate.

    ``size`` is millimetres for translations and degrees × :data:`MM_PER_DEG` for rotations, so that
    sizes compare (see the module docstring).
    """
    x, y, z = (float(v) for v in np.asarray(action, dtype=float)[:3])
    rock, tilt, rotate = rotation_views(action)

    def sign(v):
        return '+' if v > 0 else '-'

    def side(v, positive, negative):
        return positive if v > 0 else negative

    mm, deg = (DEADBAND_MM, 1.0), (DEADBAND_DEG, MM_PER_DEG)  # (dead band, ranking weight)
    candidates = [
        (x, mm, f'slide {abs(x):.0f} mm toward image {side(x, "right", "left")} ({sign(x)}x)'),
        (y, mm, f'slide {abs(y):.0f} mm {side(y, "out of", "into")} the screen ({sign(y)}y)'),
        (z, mm, f'{side(z, "press", "ease off")} {abs(z):.0f} mm ({sign(z)}z)'),
        (rock, deg, f'rock {abs(rock):.0f}°: beam toward image {side(rock, "right", "left")}'),
        (tilt, deg, f'tilt {abs(tilt):.0f}°: beam {side(tilt, "out of", "into")} the screen'),
        (
            rotate,
            deg,
            f'rotate {abs(rotate):.0f}° {side(rotate, "clockwise", "counter-clockwise")} '
            '(seen from the handle)',
        ),
    ]
    return [(abs(v) * weight, text) for v, (deadband, weight), text in candidates if abs(v) >= deadband]


def ranked_corrections(action):
    """The instructions of :func:`corrections`, largest first (a stable sort: ties keep x, y, z, ...)."""
    return [text for _, text in sorted(corrections(action), key=lambda item: -item[0])]


def instructions(action, limit=MAX_INSTRUCTIONS):
    """The ``limit`` largest corrections as short instructions, largest first (empty list: hold still)."""
    return ranked_corrections(action)[: max(int(limit), 0)]


def guidance_state(guidance, stale=False, low_confidence_below=LOW_CONFIDENCE_BELOW):
    """The display state of a guidance dict (``valid``, ``confidence``, ``plane_reached``), see STATE_BADGES.

    In order: ``waiting`` (None), ``stale``, ``no_guidance`` (not valid), ``low_confidence``
    (confidence below ``low_confidence_below``, or not a number), ``plane_reached``, ``guiding``.
    """
    if guidance is None:
        return 'waiting'
    if stale:
        return 'stale'
    if not guidance.get('valid'):
        return 'no_guidance'
    confidence = guidance.get('confidence')
    if confidence is None or not float(confidence) >= float(low_confidence_below):
        return 'low_confidence'
    if guidance.get('plane_reached'):
        return 'plane_reached'
    return 'guiding'


def guidance_view(guidance, stale=False, low_confidence_below=LOW_CONFIDENCE_BELOW, age_s=None):
    """What the page shows for a guidance dict: the rule of every state, in one place.

    Returns a dict: ``state``, ``badge``, ``numbers`` (``'shown'``, ``'greyed'`` or ``'cleared'``: the
    six values, their bars and the overall confidence), ``arrows`` (draw the arrows and dials),
    ``instructions`` (list of str, at most :data:`MAX_INSTRUCTIONS`, largest first),
    ``instructions_omitted`` (smaller corrections not listed), ``banner`` (text over the image, or
    ''), ``note`` (a line under the numbers, or '').
    """
    state = guidance_state(guidance, stale, low_confidence_below)
    view = {
        'state': state,
        'badge': STATE_BADGES[state],
        'numbers': 'cleared',
        'arrows': False,
        'instructions': [],
        'instructions_omitted': 0,
        'banner': '',
        'note': '',
    }
    if state == 'waiting':
        view['banner'] = 'WAITING FOR GUIDANCE'
    elif state == 'stale':
        view['banner'] = 'GUIDANCE STALE'
        age = '' if age_s is None else f' for {age_s:.1f} s'
        view['note'] = f'No guidance update{age}: the last numbers are no longer valid and are not shown.'
    elif state == 'no_guidance':
        view['banner'] = 'NO GUIDANCE'
        view['note'] = f'No guidance: {guidance.get("status") or "no reason given"}'
    elif state == 'low_confidence':
        view['numbers'] = 'greyed'
        view['banner'] = 'LOW CONFIDENCE'
        view['note'] = (
            f'Confidence {100 * float(guidance.get("confidence") or 0.0):.0f} % is below '
            f'{100 * float(low_confidence_below):.0f} %: no instructions. Hold still or find a clearer view.'
        )
    else:
        ranked = ranked_corrections(guidance['action'])
        view['numbers'] = 'shown'
        view['arrows'] = True
        view['instructions'] = ranked[:MAX_INSTRUCTIONS] or ['hold still']
        view['instructions_omitted'] = max(len(ranked) - MAX_INSTRUCTIONS, 0)
    return view


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
    state = guidance_state(
        {'valid': True, 'confidence': result.confidence, 'plane_reached': result.plane_reached}
    )
    if state == 'low_confidence':  # the same rule as the page: no arrows, no instructions
        text(0, f'{result.plane}: LOW CONFIDENCE {100 * result.confidence:.0f} %', (255, 190, 60))
        text(1, 'no instructions: hold still or find a clearer view', (255, 190, 60))
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
    for i, line in enumerate(graphics['instructions']):
        text(3 + i, line.replace('°', ' deg'), (255, 220, 160))
    return canvas
