"""Frame sources backed by OpenCV: capture devices / streams, and video files with nominal timing."""

import os
import time

from echo_guidance.sources.base import EndOfStream, Frame, FrameReadError, FrameSource, Pacer, SourceSpecError


def _cv2():
    import cv2
    return cv2


def opencv_has_backend(name):
    """Return True when this OpenCV build includes the named video backend (e.g. 'GStreamer')."""
    for line in _cv2().getBuildInformation().splitlines():
        if line.strip().startswith(f'{name}:'):
            return 'YES' in line.split(':', 1)[1]
    return False


class OpenCVCaptureSource(FrameSource):
    """A frame grabber, camera, stream URL or GStreamer pipeline opened with ``cv2.VideoCapture``.

    The frame is stamped with the system time right after ``grab()`` returns, before decoding,
    which is the closest this process gets to acquisition; the device latency configured in the
    capture node is subtracted from it. Failed reads raise :class:`FrameReadError`; after
    ``reopen_after_failures`` failures in a row the device is closed and opened again.

    Args:
        spec: device index (int or digit string), device path (/dev/video0), stream URL, or a
            GStreamer pipeline when ``gstreamer`` is True.
        gstreamer: open ``spec`` with the GStreamer backend.
        requested_rate_hz: asked of the device with CAP_PROP_FPS (devices may ignore it).
        requested_size: (width, height) asked of the device, or None.
    """

    kind = 'opencv'

    def __init__(self, spec, gstreamer=False, requested_rate_hz=None, requested_size=None,
                 reopen_after_failures=30):
        """Open the device; raise :class:`SourceSpecError` if it cannot be opened."""
        super().__init__()
        cv2 = _cv2()
        spec = str(spec).strip()
        if not spec:
            raise SourceSpecError('opencv source needs a device index, device path, URL or pipeline')
        if gstreamer and not opencv_has_backend('GStreamer'):
            raise SourceSpecError(
                'this OpenCV build has no GStreamer backend (cv2.getBuildInformation() says '
                "GStreamer: NO); install an OpenCV built with GStreamer or use kind 'opencv'")
        self.spec = spec
        self._target = int(spec) if spec.isdigit() else spec
        self._api = cv2.CAP_GSTREAMER if gstreamer else cv2.CAP_ANY
        if isinstance(self._target, str) and spec.startswith('/dev/') and not os.path.exists(spec):
            raise SourceSpecError(f'capture device {spec} does not exist')
        self._requested_rate_hz = requested_rate_hz
        self._requested_size = requested_size
        self._reopen_after = int(reopen_after_failures)
        self._failures = 0
        self._index = 0
        self._cap = None
        self._open()

    def _open(self):
        cv2 = _cv2()
        cap = cv2.VideoCapture(self._target, self._api)
        if not cap.isOpened():
            cap.release()
            raise SourceSpecError(f'OpenCV could not open capture source {self.spec!r}')
        if self._requested_size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._requested_size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._requested_size[1])
        if self._requested_rate_hz:
            cap.set(cv2.CAP_PROP_FPS, float(self._requested_rate_hz))
        self._cap = cap

    @property
    def description(self):
        """Kind and spec."""
        return f'opencv {self.spec}'

    @property
    def nominal_rate_hz(self):
        """The rate the device reports, or the requested one."""
        if self._cap is not None:
            fps = self._cap.get(_cv2().CAP_PROP_FPS)
            if fps and 0 < fps < 1000:
                return float(fps)
        return self._requested_rate_hz

    def read(self):
        """Grab, stamp and decode the next frame."""
        self._check_open()
        if self._cap is None:
            try:
                self._open()
            except SourceSpecError as err:
                time.sleep(0.2)
                raise FrameReadError(f'reopening {self.spec!r} failed: {err}') from None
        ok = self._cap.grab()
        stamp = time.time()
        if ok:
            ok, image = self._cap.retrieve()
        if not ok or image is None:
            self._failures += 1
            if self._failures >= self._reopen_after:
                self._cap.release()
                self._cap = None
                self._failures = 0
            raise FrameReadError(f'no frame from {self.spec!r} ({self._failures} failures in a row)')
        self._failures = 0
        index = self._index
        self._index += 1
        return Frame(image=image, acquisition_time_s=stamp, index=index, color_order='bgr')

    def close(self):
        """Release the device."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        super().close()


class VideoFileSource(FrameSource):
    """A video file played with its own nominal timing (frame ``n`` at ``n / fps``).

    Args:
        path: the video file.
        rate_hz: playback rate; None uses the file's frame rate.
        loop: start again at the end instead of raising :class:`EndOfStream`. Indices keep
            increasing across loops; ``media_time_s`` restarts.
        realtime: pace frames at ``rate_hz``; when False frames come as fast as they decode and
            ``acquisition_time_s`` follows the nominal timeline from the moment of opening.
    """

    kind = 'video'

    def __init__(self, path, rate_hz=None, loop=False, realtime=True):
        """Open the file and read its frame rate."""
        super().__init__()
        cv2 = _cv2()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise SourceSpecError(f'video file {self.path!r} does not exist')
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise SourceSpecError(f'OpenCV/FFmpeg cannot read {self.path!r} as a video')
        file_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.file_rate_hz = float(file_fps) if file_fps and 0 < file_fps < 1000 else None
        rate = rate_hz or self.file_rate_hz
        if not rate or rate <= 0:
            raise SourceSpecError(
                f'{self.path!r} states no frame rate; give rate_hz explicitly')
        self.rate_hz = float(rate)
        self.loop = bool(loop)
        self._pacer = Pacer(self.rate_hz) if realtime else None
        self._index = 0
        self._position = 0
        self._t0 = time.time()
        ok, first = self._cap.read()
        if not ok:
            raise SourceSpecError(f'{self.path!r} contains no decodable frame')
        self._pending = first

    @property
    def description(self):
        """Kind and path."""
        return f'video {self.path}'

    @property
    def nominal_rate_hz(self):
        """Playback rate."""
        return self.rate_hz

    def _next_image(self):
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._cap.read()
        if ok:
            return image
        if not self.loop:
            raise EndOfStream(f'end of video {self.path!r} after {self._index} frames')
        self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
        self._position = 0
        ok, image = self._cap.read()
        if not ok:
            raise EndOfStream(f'{self.path!r} could not be rewound')
        return image

    def read(self):
        """Return the next frame at its nominal time."""
        self._check_open()
        image = self._next_image()
        media_time = self._position / self.rate_hz
        if self._pacer:
            self._pacer.wait()
            stamp = time.time()
        else:
            stamp = self._t0 + self._index / self.rate_hz
        frame = Frame(image=image, acquisition_time_s=stamp, index=self._index,
                      media_time_s=media_time, color_order='bgr')
        self._index += 1
        self._position += 1
        return frame

    def close(self):
        """Release the file."""
        self._cap.release()
        super().close()
