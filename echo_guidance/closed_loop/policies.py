"""Guidance policies for the closed loop: frame (+ pose) in, guidance out.

A policy is built per episode by a *policy factory* ``factory(plane, target_pose_mm)`` and then
called as ``policy(frame_uint8, probe_pose_mm, stamp_s)`` returning a
:class:`~echo_guidance.control.envelope.GuidanceSample`. Kinds (``--policy NAME=SPEC``):

* ``oracle`` or ``oracle:NOISE_MM,NOISE_DEG``: the ground-truth action from the true pose, with
  optional Gaussian noise per axis (checks the control loop itself; needs no model);
* ``onnx:PATH`` (or a bare ``PATH.onnx``): one exported model, each frame on its own (no temporal
  fusion); confidence 1, so only the model's own answers steer;
* ``fused:PATH``: the live guidance engine (:class:`echo_guidance.guidance.GuidanceEngine`): the
  model plus temporal fusion with the probe's motion, its confidence and its "plane reached".

Models run through :func:`echo_guidance.guidance.load_backend` (ONNX Runtime, one thread by default)
and see frames prepared exactly as the live node prepares them.
"""

import dataclasses
import math

import numpy as np

from echo_guidance.control.envelope import GuidanceSample
from echo_guidance.geometry import relative_action


class PolicySpecError(ValueError):
    """A --policy spec that cannot be understood or whose model cannot be loaded."""


@dataclasses.dataclass
class OracleFactory:
    """Ground-truth guidance with optional Gaussian noise (mm on x, y, z; degrees on the angles)."""

    noise_mm: float = 0.0
    noise_deg: float = 0.0
    seed: int = 0

    def __post_init__(self):
        """Check the noise levels."""
        if (
            not (math.isfinite(self.noise_mm) and math.isfinite(self.noise_deg))
            or min(self.noise_mm, self.noise_deg) < 0
        ):
            raise PolicySpecError(
                f'oracle noise must be finite and >= 0, got {self.noise_mm}, {self.noise_deg}'
            )
        self._rng = np.random.default_rng(self.seed)

    def describe(self):
        """One line."""
        return f'oracle (ground truth, noise {self.noise_mm:g} mm / {self.noise_deg:g} deg)'

    def __call__(self, plane, target_pose_mm):
        """Return the policy for one episode."""
        rng = self._rng
        scale = np.array([self.noise_mm] * 3 + [self.noise_deg] * 3)

        def policy(frame, probe_pose_mm, stamp_s):
            action = relative_action(probe_pose_mm, target_pose_mm) + rng.normal(0.0, 1.0, 6) * scale
            return GuidanceSample(
                stamp_s=stamp_s, valid=True, action=action, confidence=1.0, target_plane=plane
            )

        return policy


class ModelFactory:
    """One exported model, frame by frame (``fused=False``) or through the guidance engine (``fused=True``).

    Args:
        path: the ONNX file (``echo-guidance export``).
        fused: use :class:`echo_guidance.guidance.GuidanceEngine` with temporal fusion.
        threads: ONNX Runtime threads.
    """

    def __init__(self, path, fused=False, threads=1):
        """Load the model once (it serves every episode)."""
        self.path = str(path)
        self.fused = bool(fused)
        try:
            from echo_guidance.guidance import load_backend
        except ImportError:  # a checkout without the live guidance package: plain ONNX Runtime
            if self.fused:
                raise PolicySpecError(
                    'fused guidance needs echo_guidance.guidance (the live guidance engine)'
                ) from None
            self.backend = _PlainOnnxBackend(self.path, threads)
        else:
            try:
                self.backend = load_backend(self.path, 'onnxruntime-cpu', threads=threads)
            except Exception as error:  # BackendError, ModelFileError, ...
                raise PolicySpecError(f'cannot load model {self.path}: {error}') from error

    def describe(self):
        """One line."""
        kind = 'fused guidance engine' if self.fused else 'single-frame model'
        return f'{kind} {self.path} ({getattr(self.backend, "model_id", "")})'

    def __call__(self, plane, target_pose_mm):
        """Return the policy for one episode (the engine's history starts empty)."""
        if plane not in self.backend.planes:
            raise PolicySpecError(
                f'model {self.path} was not trained for plane {plane}: {self.backend.planes}'
            )
        if self.fused:
            from echo_guidance.guidance import GuidanceEngine

            engine = GuidanceEngine(self.backend, plane=plane)

            def fused_policy(frame, probe_pose_mm, stamp_s):
                result = engine.step(frame, probe_pose_mm, stamp_s)
                return GuidanceSample(
                    stamp_s=result.stamp_s,
                    valid=result.valid,
                    action=np.asarray(result.action),
                    confidence=float(result.confidence),
                    plane_reached=bool(result.plane_reached),
                    target_plane=plane,
                    status=result.status,
                )

            return fused_policy
        index = self.backend.planes.index(plane)
        size = self.backend.input_size

        def policy(frame, probe_pose_mm, stamp_s):
            from echo_guidance.data.dataset import resize_frame

            action = np.asarray(self.backend.predict(resize_frame(frame, size), index), dtype=float)
            valid = bool(action.shape == (6,) and np.all(np.isfinite(action)))
            return GuidanceSample(
                stamp_s=stamp_s,
                valid=valid,
                action=action if valid else np.zeros(6),
                confidence=1.0 if valid else 0.0,
                target_plane=plane,
                status='' if valid else 'model output is not finite',
            )

        return policy


class _PlainOnnxBackend:
    """ONNX Runtime on an exported graph: input ``image`` uint8 (B, 1, S, S), ``plane`` int64 → ``action``."""

    def __init__(self, path, threads=1):
        import json

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        except Exception as error:
            raise PolicySpecError(f'cannot load model {path}: {error}') from error
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.input_size = int(meta['echo_guidance.input_size'])
            self.planes = tuple(json.loads(meta['echo_guidance.planes']))
        except (KeyError, ValueError) as error:
            raise PolicySpecError(
                f'{path} is not an echo_guidance model (metadata {error} missing)'
            ) from None
        self.model_id = path

    def predict(self, image, plane_index):
        image = np.ascontiguousarray(image, dtype=np.uint8)[None, None]
        plane = np.array([plane_index], dtype=np.int64)
        return self.session.run(['action'], {'image': image, 'plane': plane})[0][0]


def parse_policy(spec, seed=0, threads=1):
    """Return ``(name, factory)`` for a ``NAME=SPEC`` (or bare ``SPEC``) command-line policy.

    Raises:
        PolicySpecError: an unknown kind, a bad noise level or a model that cannot be loaded.
    """
    name, _, body = spec.partition('=') if '=' in spec else ('', '', spec)
    kind, _, argument = body.partition(':')
    if kind.endswith('.onnx') and not argument:
        kind, argument = 'onnx', body
    if kind == 'oracle':
        noise = (0.0, 0.0)
        if argument:
            try:
                noise = tuple(float(v) for v in argument.split(','))
            except ValueError:
                noise = ()
            if len(noise) != 2:
                raise PolicySpecError(f'oracle noise must be NOISE_MM,NOISE_DEG, got {argument!r}')
        return name or 'oracle', OracleFactory(*noise, seed=seed)
    if kind in ('onnx', 'fused'):
        if not argument:
            raise PolicySpecError(f'policy {spec!r} needs a model path: {kind}:PATH')
        return name or f'{kind}:{argument}', ModelFactory(argument, fused=kind == 'fused', threads=threads)
    raise PolicySpecError(
        f'unknown policy {spec!r}: expected [NAME=]oracle[:MM,DEG], [NAME=]onnx:PATH or [NAME=]fused:PATH'
    )
