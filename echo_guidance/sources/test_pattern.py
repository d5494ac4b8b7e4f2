"""A synthetic test-pattern source whose frames carry their own index, for benchmarks and tests.

The top band of every frame (the top 1/8 of its height) holds the frame index as 32 binary
blocks of equal width, most significant bit first: white (255) = 1, black (0) = 0. Because the
blocks are defined in relative coordinates, :func:`decode_pattern_index` reads the index back from
any resized (but uncropped) copy, so a receiver can verify frame identity and detect gaps.
Below the band a gradient with a moving bar changes every frame.

Fault injection (for checking receivers): ``resize_after`` switches to another resolution and
``bad_dtype_after`` to uint16 pixels from a given frame index on.
"""

import time

import numpy as np

from echo_guidance.sources.base import EndOfStream, Frame, FrameSource, Pacer, SourceSpecError

INDEX_BITS = 32
BAND_FRACTION = 1 / 8


def render_pattern(index, width, height):
    """Return the H x W uint8 test-pattern frame number ``index``."""
    if not 0 <= index < 2 ** INDEX_BITS:
        raise ValueError(f'pattern index must be in [0, 2**{INDEX_BITS}), got {index}')
    cols = np.arange(width, dtype=np.float32)
    image = np.empty((height, width), np.uint8)
    image[:] = (cols * (200.0 / max(width - 1, 1)) + 20).astype(np.uint8)
    bar_x = (index * 7) % width
    image[:, bar_x:bar_x + max(width // 64, 2)] = 255
    band_h = max(int(round(height * BAND_FRACTION)), 2)
    bits = [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
    edges = np.round(np.linspace(0, width, INDEX_BITS + 1)).astype(int)
    for b, bit in enumerate(bits):
        image[:band_h, edges[b]:edges[b + 1]] = 255 if bit else 0
    return image


def decode_pattern_index(image):
    """Read the frame index from a (possibly resized) test-pattern image.

    Raises:
        ValueError: the band does not look like a test pattern (a block is neither black nor white).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f'expected a 2-D mono image, got shape {image.shape}')
    height, width = image.shape
    band_h = height * BAND_FRACTION
    row = int(band_h / 2)
    index = 0
    for b in range(INDEX_BITS):
        centre = int((b + 0.5) * width / INDEX_BITS)
        value = int(image[row, centre])
        if value >= 200:
            bit = 1
        elif value <= 55:
            bit = 0
        else:
            raise ValueError(
                f'pixel ({row}, {centre}) = {value} is neither black nor white: not a test pattern '
                f'(or it was cropped)')
        index = (index << 1) | bit
    return index


def parse_size(text, default=(640, 480)):
    """Parse ``'640x480'`` into (640, 480); empty text gives ``default``."""
    text = (text or '').strip()
    if not text:
        return default
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise SourceSpecError(f'size must look like 640x480, got {text!r}') from None
    if w < 32 or h < 16 or w > 8192 or h > 8192:
        raise SourceSpecError(f'size {w}x{h} out of range (32x16 .. 8192x8192)')
    return w, h


class TestPatternSource(FrameSource):
    """Generates numbered frames at ``rate_hz`` (or as fast as asked when ``realtime`` is False).

    Args:
        width, height: frame size in pixels.
        rate_hz: frame rate.
        realtime: sleep so frames come at ``rate_hz``; otherwise return immediately.
        max_frames: end the stream after this many frames (None = endless).
        resize_after: (index, (w, h)): from that index on, frames have the other size.
        bad_dtype_after: from that index on, frames are uint16 (a faulty source).
    """

    kind = 'test_pattern'
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, width=640, height=480, rate_hz=30.0, realtime=True, max_frames=None,
                 resize_after=None, bad_dtype_after=None):
        """Validate the options."""
        super().__init__()
        if width < 32 or height < 16:
            raise SourceSpecError(f'test pattern size {width}x{height} too small (min 32x16)')
        self.width, self.height = int(width), int(height)
        self._pacer = Pacer(rate_hz) if realtime else None
        self._rate_hz = float(rate_hz)
        self.max_frames = max_frames
        self.resize_after = resize_after
        self.bad_dtype_after = bad_dtype_after
        self._index = 0

    @property
    def description(self):
        """Kind and size."""
        return f'test_pattern {self.width}x{self.height} @ {self._rate_hz:g} Hz'

    @property
    def nominal_rate_hz(self):
        """The configured rate."""
        return self._rate_hz

    def read(self):
        """Return the next numbered frame."""
        self._check_open()
        if self.max_frames is not None and self._index >= self.max_frames:
            raise EndOfStream(f'test pattern reached max_frames={self.max_frames}')
        if self._pacer:
            self._pacer.wait()
        index = self._index
        self._index += 1
        width, height = self.width, self.height
        if self.resize_after is not None and index >= self.resize_after[0]:
            width, height = self.resize_after[1]
        image = render_pattern(index, width, height)
        if self.bad_dtype_after is not None and index >= self.bad_dtype_after:
            image = image.astype(np.uint16) * 257
        return Frame(image=image, acquisition_time_s=time.time(), index=index)
