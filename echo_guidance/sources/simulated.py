"""A frame source that renders the virtual patient (echo_guidance.sim) at the probe's current pose.

The pose comes from a callable (the capture node passes one that returns the latest
``/arm/probe_pose``); the frame shows the patient as seen from that pose at the moment of
rendering. Cardiac motion runs on the time since the source was opened, so a session replays
the same heart cycle phases for the same pose timeline.
"""

import time

import numpy as np

from echo_guidance.sources.base import Frame, FrameReadError, FrameSource, Pacer, SourceSpecError


class SimulatedProbeSource(FrameSource):
    """Renders simulated ultrasound frames at ``rate_hz`` from the pose given by ``pose_provider``.

    Args:
        pose_provider: callable returning the probe pose in base as a 4x4 array in millimetres,
            or None while no pose is known (the read then raises :class:`FrameReadError`).
        seed: virtual patient seed (``Patient.from_seed``).
        renderer_config: a ``ProbeConfig`` or a mapping of its fields (None = the renderer's defaults).
        rate_hz: frame rate.
        realtime: pace frames at ``rate_hz``.
        renderer: an already built renderer (anything with ``render(T_mm, time_s)``); when given,
            ``seed`` and ``renderer_config`` are not used.
    """

    kind = 'sim'

    def __init__(self, pose_provider, seed=0, renderer_config=None, rate_hz=30.0, realtime=True,
                 renderer=None):
        """Build the patient and renderer."""
        super().__init__()
        if not callable(pose_provider):
            raise SourceSpecError('simulated source needs a callable pose_provider')
        self._pose_provider = pose_provider
        self.seed = int(seed)
        if renderer is None:
            try:
                from echo_guidance.sim import Patient, ProbeRenderer
                from echo_guidance.sim.probe import InvalidProbeConfigError, ProbeConfig
            except ImportError as err:
                raise SourceSpecError(f'the simulator (echo_guidance.sim) is not available: {err}') from None
            # Configs arrive as YAML mappings from node parameters; the renderer wants a ProbeConfig.
            if isinstance(renderer_config, dict):
                try:
                    renderer_config = ProbeConfig(**renderer_config)
                except (TypeError, InvalidProbeConfigError) as err:
                    raise SourceSpecError(f'simulated probe config: {err}') from None
            patient = Patient.from_seed(self.seed)
            renderer = ProbeRenderer(patient, renderer_config)
        self._renderer = renderer
        self._rate_hz = float(rate_hz)
        self._pacer = Pacer(rate_hz) if realtime else None
        self._t_start = time.monotonic()
        self._index = 0

    @property
    def description(self):
        """Kind and patient seed."""
        return f'sim seed={self.seed} @ {self._rate_hz:g} Hz'

    @property
    def nominal_rate_hz(self):
        """The configured rate."""
        return self._rate_hz

    def read(self):
        """Render the next frame at the latest pose."""
        self._check_open()
        if self._pacer:
            self._pacer.wait()
        pose = self._pose_provider()
        if pose is None:
            raise FrameReadError('no probe pose received yet (the simulator renders at the arm pose)')
        pose = np.asarray(pose, dtype=float)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise FrameReadError(f'probe pose is not a finite 4x4 matrix (shape {pose.shape})')
        stamp = time.time()
        image = self._renderer.render(pose, time.monotonic() - self._t_start)
        frame = Frame(image=np.asarray(image), acquisition_time_s=stamp, index=self._index,
                      color_order='mono')
        self._index += 1
        return frame
