"""What the sonographer's page shows, kept up to date from guidance messages and frames (thread-safe, no ROS).

:class:`DisplayState` holds the newest guidance and the recent frames, pairs each guidance with the
frame it answers (same stamp), and builds the JSON the page draws: the frame as a JPEG data URL, the
numbers, confidences, target plane, "plane reached", the arrows from
:func:`echo_guidance.guidance.presentation.guidance_graphics`, and ``view``: what the page shows in
the current state (waiting, stale, no guidance, low confidence, plane reached, guiding), decided by
:func:`echo_guidance.guidance.presentation.guidance_view`; ``stale_view`` is the view the page
switches to by itself when the event stream goes quiet. Readers wait for the next change with
:meth:`DisplayState.wait_for_change` (the server's Server-Sent Events stream does).
"""

import base64
import collections
import threading
import time

import numpy as np

from echo_guidance.guidance.presentation import LOW_CONFIDENCE_BELOW, guidance_graphics, guidance_view

GUIDANCE_FIELDS = (
    'target_plane',
    'valid',
    'status',
    'action',
    'axis_confidence',
    'confidence',
    'plane_reached',
    'model_id',
)
MAX_FRAMES_KEPT = 60
"""Frames kept for pairing with guidance (2 s at 30 fps)."""


def encode_jpeg(frame, quality=85, max_side=640):
    """A grey uint8 frame as JPEG bytes, scaled down to at most ``max_side`` pixels wide or high."""
    import cv2

    frame = np.asarray(frame)
    scale = max(frame.shape[:2]) / max_side
    if scale > 1.0:
        frame = cv2.resize(
            frame,
            (int(round(frame.shape[1] / scale)), int(round(frame.shape[0] / scale))),
            interpolation=cv2.INTER_AREA,
        )
    ok, data = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'cannot encode a {frame.dtype} {frame.shape} frame as JPEG')
    return data.tobytes()


class DisplayState:
    """The newest guidance and recent frames; every update bumps ``seq`` and wakes the waiting readers."""

    def __init__(self, stale_after_s=1.0, low_confidence_below=LOW_CONFIDENCE_BELOW):
        """Start empty; guidance older than ``stale_after_s`` is stale, below the confidence it is low."""
        self.stale_after_s = float(stale_after_s)
        self.low_confidence_below = float(low_confidence_below)
        self._lock = threading.Condition()
        self._frames = collections.OrderedDict()  # stamp_ns -> uint8 frame
        self._guidance = None
        self._guidance_wall = None
        self._jpeg_cache = (None, None)
        self.seq = 0
        self.frames_received = 0
        self.guidance_received = 0

    def update_frame(self, stamp_ns, frame):
        """Add a frame (uint8 (H, W)) with its stamp (integer ns)."""
        frame = np.asarray(frame)
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError(
                f'display frames must be uint8 (H, W) grey images, got {frame.dtype} {frame.shape}'
            )
        with self._lock:
            self._frames[int(stamp_ns)] = frame
            while len(self._frames) > MAX_FRAMES_KEPT:
                self._frames.popitem(last=False)
            self.frames_received += 1
            if self._guidance is None:
                self._bump()

    def update_guidance(self, guidance):
        """Set the newest guidance: ``stamp_ns`` and the Guidance fields (ros_messages.guidance_to_dict)."""
        missing = [k for k in ('stamp_ns',) + GUIDANCE_FIELDS if k not in guidance]
        if missing:
            raise ValueError(f'guidance dict lacks {", ".join(missing)}')
        with self._lock:
            self._guidance = dict(guidance)
            self._guidance_wall = time.time()
            self.guidance_received += 1
            self._bump()

    def _bump(self):
        self.seq += 1
        self._lock.notify_all()

    def wake_all(self):
        """Wake every waiting reader (e.g. when the server stops)."""
        with self._lock:
            self._lock.notify_all()

    def wait_for_change(self, seq, timeout):
        """Block until ``self.seq`` differs from ``seq`` or ``timeout`` s pass; return the current seq."""
        with self._lock:
            self._lock.wait_for(lambda: self.seq != seq, timeout)
            return self.seq

    def _frame_for(self, stamp_ns):
        """(stamp, frame, matched): the frame of this stamp, else the newest not after it, else the newest."""
        if not self._frames:
            return None, None, False
        if stamp_ns in self._frames:
            return stamp_ns, self._frames[stamp_ns], True
        earlier = [s for s in self._frames if stamp_ns is not None and s <= stamp_ns]
        stamp = max(earlier) if earlier else next(reversed(self._frames))
        return stamp, self._frames[stamp], False

    def snapshot(self):
        """The page's JSON-able state (see the module docstring)."""
        with self._lock:
            guidance = dict(self._guidance) if self._guidance is not None else None
            wall = self._guidance_wall
            stamp, frame, matched = self._frame_for(guidance['stamp_ns'] if guidance else None)
            seq = self.seq
            cached_stamp, cached_jpeg = self._jpeg_cache
        image = None
        if frame is not None:
            if cached_stamp != stamp:
                cached_jpeg = base64.b64encode(encode_jpeg(frame)).decode('ascii')
                with self._lock:
                    self._jpeg_cache = (stamp, cached_jpeg)
            image = {
                'src': 'data:image/jpeg;base64,' + cached_jpeg,
                'width': int(frame.shape[1]),
                'height': int(frame.shape[0]),
                'stamp_ns': int(stamp),
                'matched': bool(matched),
            }
        state = {'seq': seq, 'server_time': time.time(), 'image': image, 'guidance': None}
        stale = False
        if guidance is not None:
            age = time.time() - wall
            aspect = image['width'] / image['height'] if image else 1.0
            stale = age > self.stale_after_s
            guidance['age_s'] = age
            guidance['stale'] = stale
            guidance['graphics'] = (
                guidance_graphics(guidance['action'], aspect) if guidance['valid'] else None
            )
            state['guidance'] = guidance
        age_s = guidance['age_s'] if guidance else None
        state['view'] = guidance_view(guidance, stale, self.low_confidence_below, age_s)
        state['stale_view'] = guidance_view(guidance, True, self.low_confidence_below) if guidance else None
        return state
