"""The frame-source interface every ultrasound image source implements.

A source yields :class:`Frame` objects, one per call to :meth:`FrameSource.read`. Sources that
produce frames from files or generators pace themselves in real time when asked to (``realtime``),
so the capture node treats every source the same way: call ``read()`` in a loop.

Timing: ``Frame.acquisition_time_s`` is either ``None`` (the source knows nothing better than the
moment the caller receives the frame) or seconds on the system clock (``time.time()``) at which
the source believes the image was acquired. The capture node converts it to the ROS clock by
its age (see docs/capture.md), so sources never need to know which clock ROS runs on.
"""

import abc
import dataclasses
import time

import numpy as np


class FrameSourceError(Exception):
    """Base class of every error raised by a frame source."""


class SourceSpecError(FrameSourceError, ValueError):
    """A source was configured with a spec or option that cannot work (bad path, bad size, ...)."""


class FrameReadError(FrameSourceError):
    """No frame could be read this time; the caller may retry (device glitch, no pose yet, ...)."""


class EndOfStream(FrameSourceError):
    """A finite source (file, cine loop without looping) has no more frames."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One image from a source.

    Attributes:
        image: the pixels as delivered by the source (uint8, H x W mono or H x W x 3 colour; a
            faulty source may deliver something else, which the preprocessing step rejects).
        acquisition_time_s: system-clock time (seconds since the epoch) the image was acquired, or
            None when the source cannot tell (the receiver then uses its receive time).
        index: the source's own frame counter (0-based). Gaps in it are frames the source lost.
        media_time_s: position in a recording (file/cine sources), else None.
        color_order: 'mono', 'bgr' or 'rgb': how to read a 3-channel ``image``.
    """

    image: np.ndarray
    acquisition_time_s: float | None
    index: int
    media_time_s: float | None = None
    color_order: str = 'mono'


class FrameSource(abc.ABC):
    """A source of ultrasound frames; use as a context manager or call :meth:`close`."""

    #: Short name of the source kind, e.g. 'dicom'.
    kind = 'abstract'

    def __init__(self):
        """Set up the bookkeeping shared by all sources."""
        self._closed = False

    @property
    def description(self):
        """Human-readable identity of the source (shown in diagnostics as hardware id)."""
        return self.kind

    @property
    def nominal_rate_hz(self):
        """Frame rate the source aims for, or None when it does not know."""
        return None

    @abc.abstractmethod
    def read(self):
        """Return the next :class:`Frame`, blocking until it is due.

        Raises:
            FrameReadError: no frame this time; retrying may succeed.
            EndOfStream: a finite source is exhausted.
        """

    def close(self):
        """Release the device or file; further reads raise :class:`EndOfStream`."""
        self._closed = True

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self):
        if self._closed:
            raise EndOfStream(f'{self.description}: source is closed')

    def __enter__(self):
        """Return the source itself."""
        return self

    def __exit__(self, *exc):
        """Close the source."""
        self.close()
        return False

    def __iter__(self):
        """Yield frames until the source ends."""
        while True:
            try:
                yield self.read()
            except EndOfStream:
                return


class Pacer:
    """Sleeps so that frame ``n`` is released at ``start + n / rate``, without cumulative drift.

    When the caller falls behind by more than one period the schedule is re-anchored instead of
    releasing a burst of late frames.
    """

    def __init__(self, rate_hz, clock=time.monotonic, sleep=time.sleep):
        """Pace at ``rate_hz`` frames per second (must be > 0)."""
        if not rate_hz or rate_hz <= 0:
            raise SourceSpecError(f'frame rate must be > 0 Hz, got {rate_hz!r}')
        self.period_s = 1.0 / float(rate_hz)
        self._clock = clock
        self._sleep = sleep
        self._next = None

    def wait(self):
        """Block until the next frame is due; return the monotonic time it was due."""
        now = self._clock()
        if self._next is None or now - self._next > self.period_s:
            self._next = now
        else:
            delay = self._next - now
            if delay > 0:
                self._sleep(delay)
        due = self._next
        self._next += self.period_s
        return due
