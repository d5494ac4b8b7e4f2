"""Live guidance: frame preprocessing, inference backends, temporal fusion and the guidance engine.

Plain Python (no ROS): the guidance node (``echo_guidance.nodes.guidance``), the display and the
benchmarks all call :class:`~echo_guidance.guidance.engine.GuidanceEngine`::

    from echo_guidance.guidance import GuidanceEngine, load_backend

    backend = load_backend('out/models/cpu_dreamer.onnx', 'onnxruntime-cpu', threads=2)
    engine = GuidanceEngine(backend, plane='PLAX')
    result = engine.step(frame_uint8, probe_pose_mm, stamp_s)   # -> GuidanceResult

See docs/guidance.md.
"""

from echo_guidance.guidance.backends import (
    BACKENDS,
    BackendError,
    DeviceUnavailableError,
    ModelFileError,
    load_backend,
)
from echo_guidance.guidance.engine import GuidanceEngine, GuidanceResult
from echo_guidance.guidance.fusion import FusionConfig, ReachedConfig
from echo_guidance.guidance.preprocess import FrameFormatError, frame_from_image_fields, prepare_frame

__all__ = [
    'BACKENDS',
    'BackendError',
    'DeviceUnavailableError',
    'FrameFormatError',
    'FusionConfig',
    'GuidanceEngine',
    'GuidanceResult',
    'ModelFileError',
    'ReachedConfig',
    'frame_from_image_fields',
    'load_backend',
    'prepare_frame',
]
