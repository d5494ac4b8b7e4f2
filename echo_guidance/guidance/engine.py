"""The guidance engine: one frame (+ probe pose) in, one guidance result out; no ROS.

``GuidanceEngine.step(frame_uint8, probe_pose_mm_or_None, stamp_s)`` preprocesses the frame with the
training contract, runs the backend for the selected target plane, fuses recent predictions
(:mod:`echo_guidance.guidance.fusion`), computes confidence and "plane reached", and returns a
:class:`GuidanceResult`. With a second, *fine* backend the engine guides coarse-to-fine: the coarse
model answers until its estimate says the plane is near, then the fine model takes over
(:mod:`echo_guidance.guidance.stages`); each stage has its own fusion history. A model with the stop
judgement's distance head decides "plane reached" together with the action (``ReachedConfig``).

It never raises on bad input: a frame of the wrong type or size, a model that fails, or a NaN/inf
output gives a result with ``valid=False`` and a ``status`` naming the problem (the published "no
guidance" state). Only configuration errors raise: an unknown plane
(:class:`~echo_guidance.planes.UnknownPlaneError`) or a bad fusion setting (ValueError).

The guidance node, the closed-loop evaluation and ``echo-guidance bench fusion`` all use it.
"""

import dataclasses
import math
import time

import numpy as np

from echo_guidance.geometry import GeometryError, action_to_matrix, check_transform
from echo_guidance.guidance.echo import EchoConfig, echo_fraction, has_echo
from echo_guidance.guidance.fusion import (
    FusionConfig,
    PlaneReachedJudge,
    ReachedConfig,
    TemporalFusion,
)
from echo_guidance.guidance.preprocess import FrameFormatError, prepare_frame
from echo_guidance.guidance.stages import StageSwitch
from echo_guidance.planes import GUIDANCE_PLANES, UnknownPlaneError, check_plane

NO_CONFIDENCE = np.zeros(6)


@dataclasses.dataclass
class GuidanceResult:
    """Guidance for one frame (the content of one echo_guidance/msg/Guidance).

    Attributes:
        stamp_s: the frame's acquisition time (s), which the guidance answers.
        plane: the target plane.
        valid: False is the "no guidance" state; then ``status`` says why and the numbers are zeros.
        status: why guidance is not valid ('' when valid).
        action: (6,) guidance x, y, z mm, roll, pitch, yaw deg in the current probe frame (fused).
        raw_action: (6,) this frame's own model prediction (NaN where the model gave NaN).
        axis_confidence: (6,) per-axis confidence in [0, 1].
        confidence: overall confidence in [0, 1].
        plane_reached: the probe is judged at the target plane.
        distance: the stop judgement's distance to the plane (median of the still frames; units of
            the success window, <= 1 inside it), NaN when the answering model has no distance head.
        stage: which model answered: ``coarse`` or ``fine`` (``coarse`` with a single model).
        frames_fused: frames that went into ``action`` (1 = single-frame guidance).
        pose_used: a probe pose was available, so past predictions were moved by the probe's motion.
        pose_status: why no pose was used ('' when one was).
        model_id: the backend's model id.
        inference_s: model time (s); step_s: the whole step (s).
    """

    stamp_s: float
    plane: str
    valid: bool
    status: str
    action: np.ndarray
    raw_action: np.ndarray
    axis_confidence: np.ndarray
    confidence: float
    plane_reached: bool
    frames_fused: int
    pose_used: bool
    pose_status: str
    model_id: str
    inference_s: float
    step_s: float
    distance: float = math.nan
    stage: str = 'coarse'

    @property
    def target_in_probe_mm(self):
        """U(action): the target plane's probe pose in the current probe frame (4x4, mm)."""
        return action_to_matrix(self.action)

    def as_dict(self):
        """Plain-Python form (lists, floats) for JSON (display, benchmarks)."""
        out = dataclasses.asdict(self)
        out['distance'] = float(self.distance) if math.isfinite(self.distance) else None
        for key in ('action', 'raw_action', 'axis_confidence'):
            out[key] = [None if not math.isfinite(v) else float(v) for v in np.asarray(out[key], dtype=float)]
        return out


class GuidanceEngine:
    """Runs a backend on frames for one selected target plane, with fusion, confidence and "reached".

    Args:
        backend: an :class:`~echo_guidance.guidance.backends.InferenceBackend`.
        plane: the initial target plane (must be one of the model's planes).
        fusion: a :class:`FusionConfig` (None = defaults).
        reached: a :class:`ReachedConfig` (None = defaults).
        expected_size: (width, height) every frame must have, or None to take any size (frames are
            resized to the model's input by the preprocessing contract either way).
        fine_backend: optional fine model (coarse-to-fine guidance); it must know ``plane`` too.
        stages: a :class:`~echo_guidance.guidance.stages.StageConfig` (None = defaults).
        echo: an :class:`~echo_guidance.guidance.echo.EchoConfig`: a frame with less echo is answered
            with confidence 0 and the model is not run (None = defaults).
    """

    def __init__(
        self,
        backend,
        plane='PLAX',
        fusion=None,
        reached=None,
        expected_size=None,
        fine_backend=None,
        stages=None,
        echo=None,
    ):
        """Set up fusion and judgement for ``plane``."""
        self.backend = backend
        self.echo = echo if echo is not None else EchoConfig()
        self.fine_backend = fine_backend
        self.switch = StageSwitch(stages, has_fine=fine_backend is not None)
        self.fusion = TemporalFusion(fusion if fusion is not None else FusionConfig())
        self.fine_fusion = TemporalFusion(self.fusion.config)
        self.judge = PlaneReachedJudge(reached if reached is not None else ReachedConfig())
        if expected_size is not None:
            width, height = (int(v) for v in expected_size)
            if width <= 0 or height <= 0:
                raise ValueError(f'expected frame size must be positive, got {width}x{height}')
            expected_size = (width, height)
        self.expected_size = expected_size
        self.plane = None
        self._plane_index = None
        self.set_plane(plane)

    @property
    def model_id(self):
        """The backend's model id (``coarse + fine`` ids for coarse-to-fine guidance)."""
        if self.fine_backend is None:
            return self.backend.model_id
        return f'{self.backend.model_id} + {self.fine_backend.model_id}'

    @property
    def stage(self):
        """The stage that answers the next frame: ``coarse`` or ``fine``."""
        return self.switch.stage

    def set_fusion(self, config):
        """New fusion settings for both stages (histories start empty)."""
        self.fusion = TemporalFusion(config)
        self.fine_fusion = TemporalFusion(config)

    def set_plane(self, name):
        """Select the target plane; the history of the previous plane is dropped.

        Raises:
            UnknownPlaneError: not a guidance plane, or a plane this model was not trained for.
        """
        check_plane(name, GUIDANCE_PLANES)
        for which, backend in (('model', self.backend), ('fine model', self.fine_backend)):
            if backend is not None and name not in backend.planes:
                raise UnknownPlaneError(
                    f'target plane {name!r} is not one of the planes this {which} was trained '
                    f'for: {", ".join(backend.planes)}'
                )
        if name != self.plane:
            self.reset()
        self.plane = name
        self._plane_index = self.backend.planes.index(name)
        self._fine_index = None if self.fine_backend is None else self.fine_backend.planes.index(name)

    def reset(self):
        """Forget past frames, the stage and the "reached" state."""
        self.fusion.reset()
        self.fine_fusion.reset()
        self.switch.reset()
        self.judge.reset()

    def no_guidance(self, stamp_s, status):
        """The "no guidance" result for a frame that could not even be read (e.g. a wrong image encoding)."""
        return self._invalid(stamp_s, status, time.perf_counter())

    def _invalid(self, stamp_s, status, started, raw=None, inference_s=0.0, pose_status=''):
        self.judge.reset()
        self.switch.update(None, valid=False)
        return GuidanceResult(
            stamp_s=float(stamp_s),
            plane=self.plane,
            valid=False,
            status=status,
            action=np.zeros(6),
            raw_action=np.full(6, np.nan) if raw is None else np.asarray(raw, dtype=float),
            axis_confidence=NO_CONFIDENCE.copy(),
            confidence=0.0,
            plane_reached=False,
            frames_fused=0,
            pose_used=False,
            pose_status=pose_status,
            model_id=self.model_id,
            inference_s=inference_s,
            step_s=time.perf_counter() - started,
            stage=self.stage,
        )

    def _no_echo(self, stamp_s, started, fraction):
        """The answer to a frame without echo: valid, but confidence 0 and no action (module echo)."""
        self.judge.reset()
        return GuidanceResult(
            stamp_s=stamp_s,
            plane=self.plane,
            valid=True,
            status=(
                f'no echo in the frame ({100 * fraction:.1f} % of pixels above grey {self.echo.level}): '
                'the probe is off the skin or over the lung'
            ),
            action=np.zeros(6),
            raw_action=np.full(6, np.nan),
            axis_confidence=NO_CONFIDENCE.copy(),
            confidence=0.0,
            plane_reached=False,
            frames_fused=0,
            pose_used=False,
            pose_status='',
            model_id=self.model_id,
            inference_s=0.0,
            step_s=time.perf_counter() - started,
            stage=self.stage,
        )

    def step(self, frame, probe_pose_mm, stamp_s):
        """Guidance for one frame; never raises on bad frames, poses or model outputs (module docstring).

        Args:
            frame: uint8 (H, W) grey frame (cropped as the capture node publishes it).
            probe_pose_mm: the probe pose in base at the frame's time (4x4, mm), or None if unknown.
            stamp_s: the frame's acquisition time in seconds.
        """
        started = time.perf_counter()
        try:
            stamp_s = float(stamp_s)
            if not math.isfinite(stamp_s):
                raise ValueError
        except (TypeError, ValueError):
            return self._invalid(0.0, f'frame stamp is not a finite number: {stamp_s!r}', started)
        stage = self.stage
        backend, index, fusion = (
            (self.fine_backend, self._fine_index, self.fine_fusion)
            if stage == 'fine'
            else (self.backend, self._plane_index, self.fusion)
        )
        try:
            image = prepare_frame(frame, backend.input_size, self.expected_size)
        except FrameFormatError as err:
            return self._invalid(stamp_s, f'frame refused: {err}', started)
        if not has_echo(frame, self.echo):
            return self._no_echo(stamp_s, started, echo_fraction(frame, self.echo.level))
        pose, pose_status = None, 'no probe pose'
        if probe_pose_mm is not None:
            try:
                pose = check_transform(np.asarray(probe_pose_mm, dtype=float), 'probe pose')
                if pose.shape != (4, 4):
                    raise GeometryError(f'probe pose must be one 4x4 transform, got shape {pose.shape}')
                pose_status = ''
            except (GeometryError, TypeError, ValueError) as err:
                pose, pose_status = None, f'probe pose ignored: {err}'
        t0 = time.perf_counter()
        try:
            outputs = backend.predict_all(image, index)
        except Exception as err:  # a runtime failure on one frame must not stop the guidance
            return self._invalid(
                stamp_s,
                f'inference failed: {type(err).__name__}: {err}',
                started,
                inference_s=time.perf_counter() - t0,
                pose_status=pose_status,
            )
        inference_s = time.perf_counter() - t0
        raw = np.asarray(outputs['action'], dtype=float)
        distance = outputs.get('distance')
        if (
            raw.shape != (6,)
            or not np.all(np.isfinite(raw))
            or (distance is not None and not math.isfinite(distance))
        ):
            return self._invalid(
                stamp_s,
                f'model output is not finite (NaN or inf): {np.array2string(raw, precision=3)}'
                + ('' if distance is None else f', distance {distance}'),
                started,
                raw=raw,
                inference_s=inference_s,
                pose_status=pose_status,
            )
        estimate = fusion.update(stamp_s, pose, raw)
        reached = self.judge.update(
            estimate.action, estimate.confidence, valid=True, distance=distance, pose_mm=pose, stamp_s=stamp_s
        )
        if self.switch.update(estimate.action) != stage:
            # The other model answers from the next frame on, with its own (empty) history.
            (self.fine_fusion if self.stage == 'fine' else self.fusion).reset()
            self.judge.reset()
        return GuidanceResult(
            stamp_s=stamp_s,
            plane=self.plane,
            valid=True,
            status='',
            action=estimate.action,
            raw_action=raw,
            axis_confidence=estimate.axis_confidence,
            confidence=estimate.confidence,
            plane_reached=reached,
            frames_fused=estimate.frames_fused,
            pose_used=pose is not None,
            pose_status=pose_status,
            model_id=self.model_id,
            inference_s=inference_s,
            step_s=time.perf_counter() - started,
            distance=self.judge.distance,
            stage=stage,
        )
