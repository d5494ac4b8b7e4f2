"""A multi-frame DICOM ultrasound cine (e.g. an exported echo loop) played as a frame source.

Grayscale conversion by photometric interpretation:

- MONOCHROME2: as stored; MONOCHROME1: inverted (0 is white there).
- YBR_FULL, YBR_FULL_422, YBR_PARTIAL_*, YBR_ICT, YBR_RCT: the Y (luma) channel, read without
  converting to RGB and back.
- RGB: BT.601 luma. PALETTE COLOR: the palette is applied, then luma.
- More than 8 bits stored: scaled to 8 bits by dropping the low bits.

Frame timing, first tag present wins: FrameTime (0018,1063, ms per frame), FrameTimeVector
(0018,1065, ms since the previous frame), CineRate (0018,0040, frames/s), RecommendedDisplayFrameRate
(0008,2144). With none of them the caller must give ``rate_hz``.
"""

import os
import time

import numpy as np

from echo_guidance.sources.base import EndOfStream, Frame, FrameSource, SourceSpecError


def _luma(rgb):
    import cv2
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _to_uint8(pixels, bits_stored):
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind not in 'ui':
        raise SourceSpecError(f'DICOM pixel data of type {pixels.dtype} is not supported')
    shift = max(int(bits_stored) - 8, 0)
    return np.clip(pixels.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def cine_frame_offsets_s(ds, n_frames, rate_hz=None):
    """Return each frame's time from the first frame (seconds) from the DICOM timing tags.

    ``rate_hz`` overrides the tags. Raises :class:`SourceSpecError` when no timing is known.
    """
    if rate_hz:
        return np.arange(n_frames) / float(rate_hz)
    frame_time = ds.get('FrameTime')
    if frame_time not in (None, ''):
        if float(frame_time) <= 0:
            raise SourceSpecError(f'DICOM FrameTime {frame_time} ms is not positive')
        return np.arange(n_frames) * float(frame_time) / 1000.0
    vector = ds.get('FrameTimeVector')
    if vector not in (None, ''):
        increments = np.asarray([float(v) for v in vector]) / 1000.0
        if len(increments) != n_frames:
            raise SourceSpecError(
                f'DICOM FrameTimeVector has {len(increments)} entries for {n_frames} frames')
        increments[0] = 0.0
        if np.any(increments[1:] <= 0):
            raise SourceSpecError('DICOM FrameTimeVector has non-positive increments')
        return np.cumsum(increments)
    for tag in ('CineRate', 'RecommendedDisplayFrameRate'):
        rate = ds.get(tag)
        if rate not in (None, '') and float(rate) > 0:
            return np.arange(n_frames) / float(rate)
    raise SourceSpecError(
        'DICOM file has no FrameTime, FrameTimeVector, CineRate or RecommendedDisplayFrameRate; '
        'give the frame rate explicitly (rate_hz)')


def load_cine_mono8(path):
    """Read a DICOM file; return (frames uint8 N x H x W, dataset)."""
    import pydicom
    from pydicom.pixels import apply_color_lut, pixel_array

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SourceSpecError(f'DICOM file {path!r} does not exist')
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises several types for non-DICOM input
        raise SourceSpecError(f'{path!r} is not a readable DICOM file: {err}') from None
    if 'PixelData' not in ds:
        raise SourceSpecError(f'DICOM file {path!r} has no pixel data')
    photometric = str(ds.get('PhotometricInterpretation', 'MONOCHROME2')).upper()
    n_frames = int(ds.get('NumberOfFrames', 1) or 1)
    try:
        if photometric.startswith('YBR'):
            pixels = pixel_array(ds, as_rgb=False)
        else:
            pixels = pixel_array(ds)
    except Exception as err:
        raise SourceSpecError(f'cannot decode pixel data of {path!r}: {err}') from None
    samples = int(ds.get('SamplesPerPixel', 1))
    if n_frames == 1:
        pixels = pixels[np.newaxis]
    if photometric == 'PALETTE COLOR':
        pixels = apply_color_lut(pixels, ds)
        samples = 3
        photometric = 'RGB'
        pixels = _to_uint8(pixels, 16 if pixels.dtype != np.uint8 else 8)
    else:
        pixels = _to_uint8(pixels, int(ds.get('BitsStored', 8)))
    if samples == 1:
        frames = pixels
        if photometric == 'MONOCHROME1':
            frames = 255 - frames
    elif photometric.startswith('YBR'):
        frames = pixels[..., 0]
    elif photometric == 'RGB':
        frames = np.stack([_luma(f) for f in pixels])
    else:
        raise SourceSpecError(f'unsupported PhotometricInterpretation {photometric!r} in {path!r}')
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 3 or frames.shape[0] != n_frames:
        raise SourceSpecError(
            f'{path!r}: expected {n_frames} frames, decoded an array of shape {frames.shape}')
    return frames, ds


class DicomCineSource(FrameSource):
    """Plays the frames of a DICOM cine with the file's frame timing.

    Frames are decoded to mono8 when the file is opened (a typical echo loop of a few hundred
    frames fits in memory comfortably).

    Args:
        path: the DICOM file.
        rate_hz: override the file's timing with a constant rate.
        loop: start again after the last frame; indices keep increasing.
        realtime: wait for each frame's due time; when False frames come at once with
            ``acquisition_time_s`` on the nominal timeline from the moment of opening.
    """

    kind = 'dicom'

    def __init__(self, path, rate_hz=None, loop=False, realtime=True):
        """Decode the file and its timing."""
        super().__init__()
        self.path = os.fspath(path)
        self.frames, ds = load_cine_mono8(self.path)
        self.offsets_s = cine_frame_offsets_s(ds, len(self.frames), rate_hz)
        self.modality = str(ds.get('Modality', ''))
        self.photometric_interpretation = str(ds.get('PhotometricInterpretation', ''))
        n = len(self.frames)
        mean_period = (self.offsets_s[-1] / (n - 1)) if n > 1 else (1.0 / rate_hz if rate_hz else 0.0)
        self._period_s = mean_period if mean_period > 0 else 1.0 / 30.0
        # One loop lasts the last offset plus one mean period, so the wrap keeps the rhythm.
        self.loop_duration_s = float(self.offsets_s[-1] + self._period_s)
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self._index = 0
        self._t0 = None

    @property
    def description(self):
        """Kind and path."""
        return f'dicom {self.path}'

    @property
    def nominal_rate_hz(self):
        """Mean frame rate of the cine."""
        return 1.0 / self._period_s

    @property
    def frame_count(self):
        """Number of frames in one pass of the cine."""
        return len(self.frames)

    def read(self):
        """Return the next cine frame when it is due."""
        self._check_open()
        n = len(self.frames)
        if self._index >= n and not self.loop:
            raise EndOfStream(f'end of DICOM cine {self.path!r} after {n} frames')
        position = self._index % n
        due = (self._index // n) * self.loop_duration_s + self.offsets_s[position]
        if self._t0 is None:
            self._t0 = time.time()
        stamp = self._t0 + due
        if self.realtime:
            delay = stamp - time.time()
            if delay > 0:
                time.sleep(delay)
            elif delay < -self._period_s:
                # Fell behind (e.g. the reader was paused): re-anchor rather than burst.
                self._t0 -= delay
                stamp = self._t0 + due
        frame = Frame(image=self.frames[position], acquisition_time_s=float(stamp),
                      index=self._index, media_time_s=float(self.offsets_s[position]),
                      color_order='mono')
        self._index += 1
        return frame
