"""Guidance policies for the closed loop: frame (+ pose) in, guidance out.

A policy is built per episode by a *policy factory* ``factory(plane, target_pose_mm)`` and then
called as ``policy(frame_uint8, probe_pose_mm, stamp_s)`` returning a
:class:`~echo_guidance.control.envelope.GuidanceSample`. Kinds (``--policy NAME=SPEC``):

* ``oracle`` or ``oracle:NOISE_MM,NOISE_DEG``: the ground-truth action from the true pose, with
  optional Gaussian noise per axis (checks the control loop itself; needs no model); its "plane
  reached" flag is a perfect stop judgement (true distance within ``ORACLE_STOP_DISTANCE`` of the
  success window);
* ``onnx:PATH`` (or a bare ``PATH.onnx``): one exported model, each frame on its own (no temporal
  fusion); confidence 1, so only the model's own answers steer;
* ``fused:PATH``: the live guidance engine (:class:`echo_guidance.guidance.GuidanceEngine`) with one
  model: temporal fusion with the probe's motion, its confidence and its "plane reached";
* ``stack:COARSE.onnx,FINE.onnx``: the engine with coarse-to-fine guidance (the fine model answers
  near the plane) and, for models with a distance head, the stop judgement;
* ``default``: exactly what the guidance node runs by default: the engine with the repository's
  default coarse and fine models (``models/guidance/``).

The engine kinds read their settings (fusion, "plane reached", stages) from the guidance node's
parameter file (``config/guidance.yaml`` unless told otherwise), so they run as the node does.
Models run through :func:`echo_guidance.guidance.load_backend` (ONNX Runtime, one thread by default)
and see frames prepared exactly as the live node prepares them.
"""

import dataclasses
import hashlib
import math

import numpy as np

from echo_guidance.control.envelope import GuidanceSample
from echo_guidance.geometry import plane_distance, relative_action

ORACLE_STOP_DISTANCE = 0.6
"""The oracle's stop judgement: "reached" within this fraction of the success window (3 mm / 3°)."""


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
        self._episodes = {}

    def describe(self):
        """One line."""
        return f'oracle (ground truth, noise {self.noise_mm:g} mm / {self.noise_deg:g} deg)'

    def __call__(self, plane, target_pose_mm):
        """Return the policy for one episode."""
        # The noise of an episode depends on the seed, the target and how many episodes of that
        # target came before, not on which process runs it (closed-loop --jobs).
        key = (plane, np.round(np.asarray(target_pose_mm, dtype=float), 6).tobytes())
        count = self._episodes[key] = self._episodes.get(key, -1) + 1
        digest = int.from_bytes(hashlib.sha256(key[1]).digest()[:4], 'little')
        rng = np.random.default_rng([self.seed, digest, count])
        scale = np.array([self.noise_mm] * 3 + [self.noise_deg] * 3)

        def policy(frame, probe_pose_mm, stamp_s):
            truth = relative_action(probe_pose_mm, target_pose_mm)
            action = truth + rng.normal(0.0, 1.0, 6) * scale
            return GuidanceSample(
                stamp_s=stamp_s,
                valid=True,
                action=action,
                confidence=1.0,
                target_plane=plane,
                plane_reached=bool(plane_distance(truth) <= ORACLE_STOP_DISTANCE),
            )

        return policy


def _load(path, threads):
    from echo_guidance.guidance import load_backend

    try:
        return load_backend(str(path), 'onnxruntime-cpu', threads=threads)
    except Exception as error:  # BackendError, ModelFileError, ...
        raise PolicySpecError(f'cannot load model {path}: {error}') from error


def _check_plane(backend, path, plane):
    if plane not in backend.planes:
        raise PolicySpecError(f'model {path} was not trained for plane {plane}: {backend.planes}')


class ModelFactory:
    """One exported model, frame by frame: no fusion, confidence 1, no "plane reached" of its own.

    Args:
        path: the ONNX file (``echo-guidance export``).
        threads: ONNX Runtime threads.
    """

    def __init__(self, path, threads=1):
        """Load the model once (it serves every episode)."""
        self.path = str(path)
        self.backend = _load(self.path, threads)

    def describe(self):
        """One line."""
        return f'single-frame model {self.path} ({self.backend.model_id})'

    def __call__(self, plane, target_pose_mm):
        """Return the policy for one episode."""
        _check_plane(self.backend, self.path, plane)
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


class EngineFactory:
    """The live guidance engine, as the guidance node runs it: one model, or coarse + fine models.

    Args:
        path: the (coarse) ONNX model.
        fine_path: optional fine model (coarse-to-fine guidance).
        parameters: the guidance node's flat parameters (fusion.*, reached.*, stages.*), e.g. from
            :func:`~echo_guidance.guidance.settings.guidance_parameters_from_yaml`; None: the node's
            config/guidance.yaml.
        threads: ONNX Runtime threads.
    """

    def __init__(self, path, fine_path=None, parameters=None, threads=1):
        """Load the models once (they serve every episode) and read the engine settings."""
        from echo_guidance.guidance.settings import engine_settings, guidance_parameters_from_yaml

        self.path, self.fine_path = str(path), (str(fine_path) if fine_path else None)
        self.backend = _load(self.path, threads)
        self.fine_backend = _load(self.fine_path, threads) if self.fine_path else None
        if parameters is None:
            from echo_guidance.resources import config_path

            parameters = guidance_parameters_from_yaml(config_path('guidance.yaml'))
        try:
            self.settings = engine_settings(parameters)
        except (TypeError, ValueError) as error:
            raise PolicySpecError(f'guidance settings: {error}') from error

    def describe(self):
        """One line."""
        if self.fine_backend is None:
            return f'fused guidance engine {self.path} ({self.backend.model_id})'
        return (
            f'coarse-to-fine guidance engine: coarse {self.path} ({self.backend.model_id}), '
            f'fine {self.fine_path} ({self.fine_backend.model_id})'
        )

    def __call__(self, plane, target_pose_mm):
        """Return the policy for one episode (the engine's history starts empty)."""
        from echo_guidance.guidance import GuidanceEngine

        _check_plane(self.backend, self.path, plane)
        if self.fine_backend is not None:
            _check_plane(self.fine_backend, self.fine_path, plane)
        engine = GuidanceEngine(self.backend, plane=plane, fine_backend=self.fine_backend, **self.settings)

        def policy(frame, probe_pose_mm, stamp_s):
            result = engine.step(frame, probe_pose_mm, stamp_s)
            return GuidanceSample(
                stamp_s=result.stamp_s,
                valid=result.valid,
                action=np.asarray(result.action),
                confidence=float(result.confidence),
                plane_reached=bool(result.plane_reached),
                target_plane=plane,
                status=result.status,
                distance=float(result.distance),
                stage=result.stage,
            )

        policy.engine = engine
        return policy


def parse_policy(spec, seed=0, threads=1, guidance_parameters=None):
    """Return ``(name, factory)`` for a ``NAME=SPEC`` (or bare ``SPEC``) command-line policy.

    Args:
        spec: the policy (module docstring).
        seed: seed of the oracle's noise.
        threads: ONNX Runtime threads.
        guidance_parameters: the guidance node's flat parameters for the engine kinds (None =
            config/guidance.yaml).

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
    if kind in ('onnx', 'fused', 'stack'):
        if not argument:
            raise PolicySpecError(f'policy {spec!r} needs a model path: {kind}:PATH')
        if kind == 'onnx':
            return name or f'onnx:{argument}', ModelFactory(argument, threads=threads)
        paths = [p for p in argument.split(',') if p]
        if kind == 'fused' and len(paths) != 1 or kind == 'stack' and len(paths) != 2:
            raise PolicySpecError(
                f'policy {spec!r}: fused takes one model (fused:PATH), stack two (stack:COARSE,FINE)'
            )
        return name or f'{kind}:{argument}', EngineFactory(*paths, guidance_parameters, threads=threads)
    if kind == 'default' and not argument:
        from echo_guidance.guidance.default_models import DefaultModelError, default_model_paths

        try:
            coarse, fine = default_model_paths()
        except DefaultModelError as error:
            raise PolicySpecError(f'policy default: {error}') from error
        return name or 'default', EngineFactory(coarse, fine, guidance_parameters, threads=threads)
    raise PolicySpecError(
        f'unknown policy {spec!r}: expected [NAME=]oracle[:MM,DEG], [NAME=]onnx:PATH, [NAME=]fused:PATH, '
        '[NAME=]stack:COARSE,FINE or [NAME=]default'
    )
