"""Ultrasound frame sources: capture devices, video files, DICOM cines, the simulator, test patterns.

Use :func:`open_source` to build one from a kind and a spec string (what the capture node's
parameters hold); every source implements :class:`FrameSource`. Crop, resize and mono8
conversion live in :mod:`echo_guidance.sources.crop`.
"""

from echo_guidance.sources.base import (
    EndOfStream,
    Frame,
    FrameReadError,
    FrameSource,
    FrameSourceError,
    Pacer,
    SourceSpecError,
)
from echo_guidance.sources.crop import (
    CropSpec,
    FrameFormatError,
    FramePreprocessor,
    ResolutionChangedError,
    crop_and_resize,
    to_mono8,
)
from echo_guidance.sources.frame_info import FRAME_INFO_FIELDS, FrameInfo, FrameLossTracker

SOURCE_KINDS = ('test_pattern', 'opencv', 'gstreamer', 'video', 'dicom', 'sim')

__all__ = [
    'CropSpec', 'EndOfStream', 'FRAME_INFO_FIELDS', 'Frame', 'FrameFormatError', 'FrameInfo',
    'FrameLossTracker', 'FramePreprocessor', 'FrameReadError', 'FrameSource', 'FrameSourceError',
    'Pacer', 'ResolutionChangedError', 'SOURCE_KINDS', 'SourceSpecError', 'crop_and_resize',
    'open_source', 'parse_test_pattern_spec', 'to_mono8']


def parse_test_pattern_spec(spec):
    """Parse a test-pattern spec: ``'640x480'`` plus optional ``',resize@N=WxH'`` / ``',uint16@N'``.

    Returns a dict of :class:`~echo_guidance.sources.test_pattern.TestPatternSource` options.
    """
    from echo_guidance.sources.test_pattern import parse_size
    parts = [p.strip() for p in (spec or '').split(',')]
    options = {}
    options['width'], options['height'] = parse_size(parts[0])
    for part in parts[1:]:
        try:
            if part.startswith('resize@'):
                at, size = part[len('resize@'):].split('=')
                options['resize_after'] = (int(at), parse_size(size))
            elif part.startswith('uint16@'):
                options['bad_dtype_after'] = int(part[len('uint16@'):])
            elif part.startswith('frames='):
                options['max_frames'] = int(part[len('frames='):])
            else:
                raise ValueError
        except ValueError:
            raise SourceSpecError(
                f'test pattern option {part!r} not understood; expected resize@N=WxH, uint16@N '
                f'or frames=N') from None
    return options


def open_source(kind, spec='', *, rate_hz=0.0, loop=False, realtime=True, pose_provider=None,
                sim_seed=0, sim_renderer_config=None):
    """Open a frame source.

    Args:
        kind: one of ``SOURCE_KINDS``.
        spec: kind-specific: ``test_pattern`` '640x480[,resize@N=WxH][,uint16@N][,frames=N]';
            ``opencv`` a device index, device path or stream URL; ``gstreamer`` a pipeline ending
            in appsink; ``video``/``dicom`` a file path; ``sim`` unused (may be empty).
        rate_hz: frame rate; 0 means the file's own timing (video, dicom), 30 Hz for generated
            sources, and "whatever the device gives" for capture devices.
        loop: replay files from the start when they end.
        realtime: pace generated/file sources in real time.
        pose_provider: for ``sim``: callable returning the 4x4 probe pose (mm) or None.
        sim_seed, sim_renderer_config: for ``sim``: patient seed and renderer config.

    Raises:
        SourceSpecError: unknown kind or a spec that cannot work, with the reason.
    """
    if rate_hz is None or rate_hz < 0:
        raise SourceSpecError(f'rate_hz must be >= 0 (0 = source default), got {rate_hz!r}')
    if kind == 'test_pattern':
        from echo_guidance.sources.test_pattern import TestPatternSource
        return TestPatternSource(rate_hz=rate_hz or 30.0, realtime=realtime,
                                 **parse_test_pattern_spec(spec))
    if kind in ('opencv', 'gstreamer'):
        from echo_guidance.sources.opencv_sources import OpenCVCaptureSource
        return OpenCVCaptureSource(spec, gstreamer=(kind == 'gstreamer'),
                                   requested_rate_hz=rate_hz or None)
    if kind == 'video':
        from echo_guidance.sources.opencv_sources import VideoFileSource
        return VideoFileSource(spec, rate_hz=rate_hz or None, loop=loop, realtime=realtime)
    if kind == 'dicom':
        from echo_guidance.sources.dicom_cine import DicomCineSource
        return DicomCineSource(spec, rate_hz=rate_hz or None, loop=loop, realtime=realtime)
    if kind == 'sim':
        from echo_guidance.sources.simulated import SimulatedProbeSource
        if pose_provider is None:
            raise SourceSpecError('the sim source needs a pose_provider (the arm pose)')
        return SimulatedProbeSource(pose_provider, seed=sim_seed, renderer_config=sim_renderer_config,
                                    rate_hz=rate_hz or 30.0, realtime=realtime)
    raise SourceSpecError(f'unknown source kind {kind!r}; expected one of {", ".join(SOURCE_KINDS)}')
