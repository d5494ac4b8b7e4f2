"""The safety envelope: the one place that decides whether the arm may move, and how far.

Each control cycle, :meth:`SafetyEnvelope.decide` takes the whole current state as
:class:`ControlInputs` (probe pose, external wrench, deadman, e-stop, frame and guidance with their
stamps, dead nodes, arm errors) and returns a :class:`Decision`:

* ``STOP`` (with a reason) when anything about the arm, the operator or the system is wrong: e-stop,
  deadman released / silent, a dead node, an arm error, a missing / stale / NaN / non-rigid pose, a
  missing / stale wrench, a contact force or torque over its limit, the probe outside the
  workspace, a tracking error, a clock fault;
* ``HOLD`` (with a reason) when the arm is fine but there is nothing safe to follow: no / stale
  frame, no / stale / invalid / NaN / out-of-range guidance, low confidence, not armed, plane
  reached, or a step the limits cannot make;
* ``MOVE`` with a :class:`MotionCommand` otherwise: the planner's proposed velocity bounded by the
  per-step, speed and acceleration limits and kept inside the workspace box and rotation cone
  around the start pose, then verified against every limit once more.

Only this module creates :class:`MotionCommand` objects (their constructor refuses any other
caller), and the arm interface only executes those: there is no other path to motion.

Poses are 4×4 probe poses in ``base`` in millimetres; velocities are in the base frame (mm/s and
deg/s, angular velocity as a rotation-vector rate).
"""

import dataclasses
import enum
import math

import numpy as np
from scipy.spatial.transform import Rotation

_ISSUER = object()
"""Only holders of this token (this module) can create a MotionCommand."""

RIGID_TOLERANCE = 1e-4
_IDENTITY3 = np.eye(3)
_BOTTOM_ROW = np.array([0.0, 0.0, 0.0, 1.0])
VERIFY_TOLERANCE = 1e-6
"""Relative slack of the final verification (floating-point rounding, not a margin)."""


class Verdict(enum.Enum):
    """What the arm does this cycle."""

    MOVE = 'move'
    HOLD = 'hold'
    STOP = 'stop'


# Reason codes, the verdict each leads to, and whether it is an operator stop (deadman, e-stop)
# rather than a fault. docs/autonomous.md has the full table with the test for each.
STOP_OPERATOR = ('estop', 'deadman_released', 'deadman_timeout', 'deadman_missing')
# A stop that is neither: the graph is still starting (watched topics not heard from yet, within the
# node's startup grace). Nothing moves, but it is not reported as a fault.
STOP_STARTING = ('inputs_starting',)
STOP_FAULTS = (
    'clock_invalid',
    'node_dead',
    'arm_error',
    'pose_missing',
    'pose_invalid',
    'pose_from_future',
    'pose_stale',
    'wrench_missing',
    'wrench_invalid',
    'wrench_from_future',
    'wrench_stale',
    'force_limit',
    'torque_limit',
    'outside_workspace',
    'tracking_error',
    'internal_error',
)
HOLD_REASONS = (
    'not_armed',
    'plane_reached',
    'frame_missing',
    'frame_invalid',
    'frame_from_future',
    'frame_stale',
    'guidance_missing',
    'guidance_from_future',
    'guidance_stale',
    'guidance_invalid',
    'guidance_nan',
    'guidance_out_of_range',
    'low_confidence',
    'no_target',
    'workspace_edge',
)


class EnvelopeError(RuntimeError):
    """A command failed the envelope's final verification (a bug: the cycle stops the arm)."""


@dataclasses.dataclass(frozen=True)
class GuidanceSample:
    """One guidance message as the controller sees it.

    Attributes:
        stamp_s: acquisition time of the frame the guidance answers (the message's header stamp).
        valid: the guidance node's own verdict; False = no guidance.
        action: (6,) x, y, z mm, roll, pitch, yaw deg: the target in the probe frame at ``stamp_s``.
        confidence: overall confidence in [0, 1].
        plane_reached: the guidance node judges the probe to be at the target plane.
        target_plane: the plane the guidance leads to.
        status: why the guidance is not valid (or not confident), if it is not.
        distance: the stop judgement's distance to the plane (units of the success window; NaN
            when the model has none). Informative: the envelope does not use it.
        stage: which model answered (``coarse`` / ``fine``; informative).
    """

    stamp_s: float
    valid: bool
    action: np.ndarray
    confidence: float
    plane_reached: bool = False
    target_plane: str = ''
    status: str = ''
    distance: float = math.nan
    stage: str = ''


@dataclasses.dataclass(frozen=True)
class ControlInputs:
    """Everything the envelope looks at in one cycle; ``None`` = never received.

    Attributes:
        now_s: the controller's clock (the node's ROS clock), seconds.
        pose_mm: measured probe pose in base, 4×4, millimetres; ``pose_stamp_s`` its measurement time.
        wrench: external wrench on the probe in base (fx, fy, fz N, tx, ty, tz N·m);
            ``wrench_stamp_s`` its time.
        deadman_held: the last deadman message's state; ``deadman_stamp_s`` its time.
        estop: the e-stop is active (latched by the caller until explicitly cleared).
        frame_stamp_s: acquisition time of the newest ultrasound frame.
        guidance: the newest guidance.
        dead_nodes: descriptions of watched nodes / topics that are dead (no publisher or silent).
        starting_inputs: watched topics not heard from yet while the graph starts (the caller's
            startup grace); a stop, but not a fault. After the grace they are ``dead_nodes``.
        arm_errors: errors the arm reports.
    """

    now_s: float
    pose_mm: np.ndarray | None = None
    pose_stamp_s: float | None = None
    wrench: np.ndarray | None = None
    wrench_stamp_s: float | None = None
    deadman_held: bool | None = None
    deadman_stamp_s: float | None = None
    estop: bool = False
    frame_stamp_s: float | None = None
    guidance: GuidanceSample | None = None
    dead_nodes: tuple = ()
    arm_errors: tuple = ()
    starting_inputs: tuple = ()

    @classmethod
    def from_arm_state(cls, now_s, state, **others):
        """Inputs with the measured pose and wrench of an arm state (``None``: nothing measured yet).

        ``others`` are the remaining fields (deadman, guidance, ...).
        """
        measured = {}
        if state is not None:
            measured = dict(
                pose_mm=state.pose_mm,
                pose_stamp_s=state.stamp_s,
                wrench=state.wrench,
                wrench_stamp_s=state.wrench_stamp_s,
            )
        return cls(now_s=now_s, **measured, **others)


class MotionCommand:
    """One bounded setpoint for one control period; only :class:`SafetyEnvelope` creates these.

    Attributes:
        target_pose_mm: the probe pose to reach by the end of the period (base, 4×4, mm).
        linear_velocity_mm_s, angular_velocity_deg_s: the velocity that reaches it (base frame).
        period_s: the control period the command is meant for.
        issued_s: the controller time it was issued; a backend refuses it later than one period.
        sequence: increasing command number.
    """

    __slots__ = (
        'target_pose_mm',
        'linear_velocity_mm_s',
        'angular_velocity_deg_s',
        'period_s',
        'issued_s',
        'sequence',
    )

    def __init__(
        self,
        token,
        target_pose_mm,
        linear_velocity_mm_s,
        angular_velocity_deg_s,
        period_s,
        issued_s,
        sequence,
    ):
        """Refuse every caller but the envelope."""
        if token is not _ISSUER:
            raise PermissionError('motion commands are issued only by SafetyEnvelope.decide()')
        target = np.array(target_pose_mm, dtype=float)
        target.setflags(write=False)
        self.target_pose_mm = target
        self.linear_velocity_mm_s = np.array(linear_velocity_mm_s, dtype=float)
        self.angular_velocity_deg_s = np.array(angular_velocity_deg_s, dtype=float)
        self.period_s = float(period_s)
        self.issued_s = float(issued_s)
        self.sequence = int(sequence)

    def __repr__(self):
        """Short description."""
        t = self.target_pose_mm[:3, 3]
        return (
            f'MotionCommand(#{self.sequence}, to ({t[0]:.2f}, {t[1]:.2f}, {t[2]:.2f}) mm, '
            f'|v| {np.linalg.norm(self.linear_velocity_mm_s):.2f} mm/s, '
            f'|w| {np.linalg.norm(self.angular_velocity_deg_s):.2f} deg/s)'
        )


@dataclasses.dataclass(frozen=True)
class Decision:
    """The envelope's answer for one cycle."""

    verdict: Verdict
    reason: str
    detail: str = ''
    command: MotionCommand | None = None

    @property
    def is_fault(self):
        """A stop for a fault (not for the operator's deadman or e-stop)."""
        return self.verdict is Verdict.STOP and self.reason not in STOP_OPERATOR + STOP_STARTING

    def describe(self):
        """One line: verdict, reason, detail."""
        text = f'{self.verdict.value}: {self.reason}'
        return f'{text} ({self.detail})' if self.detail else text


# ------------------------------------------------------------------------------------- rotations


def rotvec_to_matrix(rotvec_deg):
    """Rotation matrix of a rotation vector given in degrees (Rodrigues)."""
    r = np.radians(np.asarray(rotvec_deg, dtype=float))
    angle = float(np.linalg.norm(r))
    if angle < 1e-12:
        return np.eye(3)
    k = r / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


def matrix_to_rotvec_deg(R):
    """Rotation vector (degrees) of a rotation matrix."""
    R = np.asarray(R, dtype=float)
    cos = (R[0, 0] + R[1, 1] + R[2, 2] - 1.0) / 2.0
    angle = math.acos(min(1.0, max(-1.0, cos)))
    axis_sin = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    if angle < 1e-6:
        return np.degrees(axis_sin)
    if angle < math.pi - 1e-3:
        return np.degrees(axis_sin * (angle / math.sin(angle)))
    # Near a half turn the formula above loses its axis; SciPy handles that case.
    return np.degrees(Rotation.from_matrix(R).as_rotvec())


def rotation_angle_deg(R1, R2):
    """Geodesic angle (degrees) between two rotation matrices."""
    cos = (np.trace(R1.T @ R2) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def is_rigid(T):
    """True for a finite 4×4 rigid transform."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        float(np.abs(R @ R.T - _IDENTITY3).max()) <= RIGID_TOLERANCE
        and abs(np.linalg.det(R) - 1.0) < RIGID_TOLERANCE
        and float(np.abs(T[3] - _BOTTOM_ROW).max()) <= RIGID_TOLERANCE
    )


# -------------------------------------------------------------------------------------- workspace


class Workspace:
    """The box (base axes) and rotation cone around the start pose that commands stay inside."""

    def __init__(self, start_pose_mm, half_extent_mm, max_rotation_deg):
        """Centre the workspace on ``start_pose_mm``."""
        self.start_pose_mm = np.array(start_pose_mm, dtype=float)
        self.centre = self.start_pose_mm[:3, 3].copy()
        self.half_extent = np.asarray(half_extent_mm, dtype=float)
        self.max_rotation_deg = float(max_rotation_deg)

    def translation_excess_mm(self, point):
        """How far (per-axis maximum, mm) ``point`` lies outside the box; <= 0 inside."""
        return float(np.max(np.abs(np.asarray(point) - self.centre) - self.half_extent))

    def rotation_from_start_deg(self, R):
        """Angle (degrees) between ``R`` and the start orientation."""
        return rotation_angle_deg(self.start_pose_mm[:3, :3], R)

    def clamp_translation(self, point):
        """Closest point of the box to ``point``."""
        return np.clip(point, self.centre - self.half_extent, self.centre + self.half_extent)

    def clamp_rotation(self, R):
        """The rotation on the geodesic from the start orientation to ``R`` that is inside the cone."""
        angle = self.rotation_from_start_deg(R)
        if angle <= self.max_rotation_deg:
            return R
        R0 = self.start_pose_mm[:3, :3]
        rotvec = matrix_to_rotvec_deg(R @ R0.T)
        return rotvec_to_matrix(rotvec * (self.max_rotation_deg / angle)) @ R0

    def clamp(self, T):
        """The pose ``T`` moved into the box and rotated into the cone."""
        out = np.array(T, dtype=float)
        out[:3, 3] = self.clamp_translation(out[:3, 3])
        out[:3, :3] = self.clamp_rotation(out[:3, :3])
        return out


def _clamp_norm(v, limit):
    norm = float(np.linalg.norm(v))
    return v * (limit / norm) if norm > limit else v


def _limit_change(v, v_prev, max_change):
    dv = v - v_prev
    norm = float(np.linalg.norm(dv))
    return v_prev + dv * (max_change / norm) if norm > max_change else v


# --------------------------------------------------------------------------------------- envelope


class SafetyEnvelope:
    """Turn the current state and a planner's proposal into a bounded command or a hold/stop.

    Args:
        limits: the :class:`~echo_guidance.control.limits.SafetyLimits`.

    The workspace is centred on the start pose, set by :meth:`set_start_pose` (the controller
    does it when it first arms) and kept until :meth:`reset_workspace`.
    """

    def __init__(self, limits):
        """Start with no workspace, no setpoint and no motion."""
        self.limits = limits
        self.workspace = None
        self._setpoint = None  # the last commanded pose while moving, None otherwise
        self._velocity = np.zeros(3)
        self._angular_velocity = np.zeros(3)
        self._last_now = None
        self._sequence = 0
        self.last_decision = None

    # ------------------------------------------------------------------------------ state

    def set_start_pose(self, pose_mm):
        """Centre the workspace on ``pose_mm`` (4×4 mm); raise ValueError if it is not rigid."""
        if not is_rigid(pose_mm):
            raise ValueError('the start pose must be a finite rigid 4x4 transform (mm)')
        self.workspace = Workspace(
            pose_mm, self.limits.workspace_half_extent_mm, self.limits.max_rotation_from_start_deg
        )

    def reset_workspace(self):
        """Forget the start pose (the next arming sets a new one)."""
        self.workspace = None

    @property
    def moving(self):
        """True while the last decision was a move (a setpoint is active)."""
        return self._setpoint is not None

    @property
    def setpoint(self):
        """The last commanded pose while moving, else None."""
        return None if self._setpoint is None else self._setpoint.copy()

    @property
    def velocity(self):
        """(linear mm/s, angular deg/s) of the last command; zeros when not moving."""
        return self._velocity.copy(), self._angular_velocity.copy()

    def _rest(self):
        self._setpoint = None
        self._velocity = np.zeros(3)
        self._angular_velocity = np.zeros(3)

    def _decide(self, verdict, reason, detail='', command=None):
        if verdict is not Verdict.MOVE:
            self._rest()
        decision = Decision(verdict, reason, detail, command)
        self.last_decision = decision
        return decision

    # ----------------------------------------------------------------------------- checks

    def check(self, inputs, require_perception=True):
        """Return the STOP or HOLD decision the inputs call for, or None when all is well.

        The order is the priority: the first failing check names the reason.
        """
        lim = self.limits
        now = inputs.now_s
        stop = Verdict.STOP
        if not isinstance(now, (int, float)) or not math.isfinite(now):
            return stop, 'clock_invalid', f'controller time {now!r} is not a finite number'
        if self._last_now is not None and now < self._last_now - 1e-6:
            return (
                stop,
                'clock_invalid',
                f'controller time went back from {self._last_now:.6f} to {now:.6f} s',
            )
        if inputs.estop:
            return stop, 'estop', 'e-stop active'
        if inputs.dead_nodes:
            return stop, 'node_dead', '; '.join(str(d) for d in inputs.dead_nodes)
        if inputs.arm_errors:
            return stop, 'arm_error', '; '.join(str(e) for e in inputs.arm_errors)
        if inputs.starting_inputs:
            return stop, 'inputs_starting', 'waiting for ' + '; '.join(str(d) for d in inputs.starting_inputs)

        def age_problem(stamp, max_age, what):
            if stamp is None:
                return f'{what}_missing', f'no {what} received'
            if not math.isfinite(stamp):
                return f'{what}_invalid', f'{what} stamp {stamp!r} is not finite'
            if stamp > now + lim.max_future_stamp_s:
                return (
                    f'{what}_from_future',
                    f'{what} stamp {stamp - now:.3f} s ahead of the controller clock',
                )
            if now - stamp > max_age:
                return f'{what}_stale', f'{what} is {now - stamp:.3f} s old (limit {max_age:g} s)'
            return None

        problem = age_problem(inputs.pose_stamp_s, lim.pose_max_age_s, 'pose')
        if problem is None and inputs.pose_mm is None:
            problem = 'pose_missing', 'no pose received'
        if problem:
            return (stop, *problem)
        pose = np.asarray(inputs.pose_mm)
        if not is_rigid(pose):
            return stop, 'pose_invalid', 'pose is not a finite rigid 4x4 transform'

        if inputs.wrench is not None or lim.require_wrench:
            problem = age_problem(inputs.wrench_stamp_s, lim.wrench_max_age_s, 'wrench')
            if problem is None and inputs.wrench is None:
                problem = 'wrench_missing', 'no wrench received'
            if problem:
                return (stop, *problem)
            wrench = np.asarray(inputs.wrench, dtype=float)
            if wrench.shape != (6,) or not np.all(np.isfinite(wrench)):
                return stop, 'wrench_invalid', f'wrench must be 6 finite numbers, got {wrench.tolist()}'
            force, torque = float(np.linalg.norm(wrench[:3])), float(np.linalg.norm(wrench[3:]))
            if force > lim.max_contact_force_n:
                return stop, 'force_limit', f'contact force {force:.1f} N > {lim.max_contact_force_n:g} N'
            if torque > lim.max_contact_torque_nm:
                return (
                    stop,
                    'torque_limit',
                    f'contact torque {torque:.2f} N m > {lim.max_contact_torque_nm:g} N m',
                )

        if self.workspace is not None:
            excess = self.workspace.translation_excess_mm(pose[:3, 3])
            if excess > lim.max_tracking_error_mm:
                return stop, 'outside_workspace', f'probe {excess:.1f} mm outside the workspace box'
            angle = self.workspace.rotation_from_start_deg(pose[:3, :3])
            if angle > lim.max_rotation_from_start_deg + lim.max_tracking_error_deg:
                return stop, 'outside_workspace', f'probe turned {angle:.1f} deg from the start pose'
        if self._setpoint is not None:
            distance = float(np.linalg.norm(pose[:3, 3] - self._setpoint[:3, 3]))
            angle = rotation_angle_deg(pose[:3, :3], self._setpoint[:3, :3])
            if distance > lim.max_tracking_error_mm or angle > lim.max_tracking_error_deg:
                return (
                    stop,
                    'tracking_error',
                    (
                        f'probe {distance:.2f} mm / {angle:.2f} deg from the last setpoint '
                        f'(limits {lim.max_tracking_error_mm:g} mm / {lim.max_tracking_error_deg:g} deg)'
                    ),
                )

        if inputs.deadman_stamp_s is None or inputs.deadman_held is None:
            return stop, 'deadman_missing', 'no deadman message received'
        if not math.isfinite(inputs.deadman_stamp_s) or inputs.deadman_stamp_s > now + lim.max_future_stamp_s:
            return stop, 'deadman_timeout', f'deadman stamp {inputs.deadman_stamp_s!r} is not usable'
        if now - inputs.deadman_stamp_s > lim.deadman_timeout_s:
            return (
                stop,
                'deadman_timeout',
                (
                    f'deadman message {now - inputs.deadman_stamp_s:.3f} s old '
                    f'(timeout {lim.deadman_timeout_s:g} s)'
                ),
            )
        if not inputs.deadman_held:
            return stop, 'deadman_released', 'deadman released'

        if not require_perception:
            return None
        hold = Verdict.HOLD
        problem = age_problem(inputs.frame_stamp_s, lim.frame_max_age_s, 'frame')
        if problem:
            return (hold, *problem)
        g = inputs.guidance
        if g is None:
            return hold, 'guidance_missing', 'no guidance received'
        problem = age_problem(g.stamp_s, lim.guidance_max_age_s, 'guidance')
        if problem:
            reason = 'guidance_nan' if problem[0] == 'guidance_invalid' else problem[0]
            return hold, reason, problem[1]
        if not g.valid:
            return hold, 'guidance_invalid', g.status or 'guidance not valid'
        action = np.asarray(g.action, dtype=float)
        if action.shape != (6,):
            return (
                hold,
                'guidance_out_of_range',
                f'guidance action must have 6 values, got shape {action.shape}',
            )
        if not (np.all(np.isfinite(action)) and math.isfinite(g.confidence)):
            return hold, 'guidance_nan', 'guidance action or confidence is NaN/inf'
        translation = float(np.linalg.norm(action[:3]))
        if translation > lim.max_action_translation_mm:
            return (
                hold,
                'guidance_out_of_range',
                (f'guidance translation {translation:.1f} mm > {lim.max_action_translation_mm:g} mm'),
            )
        if np.any(np.abs(action[3:]) > lim.max_action_rotation_deg):
            return hold, 'guidance_out_of_range', f'guidance angles {action[3:].tolist()} out of range'
        if not 0.0 <= g.confidence <= 1.0:
            return hold, 'guidance_out_of_range', f'confidence {g.confidence} outside [0, 1]'
        if g.confidence < lim.min_confidence:
            return hold, 'low_confidence', f'confidence {g.confidence:.2f} < {lim.min_confidence:g}'
        return None

    # ----------------------------------------------------------------------------- decide

    def decide(
        self,
        inputs,
        propose=None,
        motion_enabled=True,
        hold_reason='not_armed',
        require_perception=True,
        search=None,
    ):
        """Return this cycle's :class:`Decision`; the only source of motion commands.

        Args:
            inputs: the :class:`ControlInputs` of this cycle.
            propose: ``propose(pose_mm, base_pose_mm, velocity, angular_velocity)`` returning a
                :class:`~echo_guidance.control.planner.Proposal` (called only when every check
                passed and motion is enabled) or None.
            motion_enabled: the state machine allows motion (armed or moving).
            hold_reason: the reason given when motion is not enabled.
            require_perception: check the frame and guidance (False for moves to a fixed pose).
            search: the planner's search step, same signature as ``propose``: asked instead of
                holding when the one failing check is low confidence (every other check, the frame's
                age included, still passed) and motion is enabled; its proposal is bounded like any
                other. None: low confidence holds.
        """
        try:
            found = self.check(inputs, require_perception)
            self._last_now = inputs.now_s if self._last_now is None else max(self._last_now, inputs.now_s)
            searching = (
                found is not None and found[1] == 'low_confidence' and search is not None and motion_enabled
            )
            if found is not None and not searching:
                return self._decide(*found)
            if searching:
                propose = search
            if not motion_enabled:
                return self._decide(Verdict.HOLD, hold_reason)
            if self.workspace is None:
                return self._decide(Verdict.HOLD, 'not_armed', 'no start pose: the workspace is not set')
            pose = np.array(inputs.pose_mm, dtype=float)
            base = self._setpoint if self._setpoint is not None else pose
            proposal = (
                None
                if propose is None
                else propose(pose, base.copy(), self._velocity.copy(), self._angular_velocity.copy())
            )
            if proposal is None:
                return self._decide(Verdict.HOLD, 'no_target', 'the planner has no target')
            if proposal.reached:
                return self._decide(Verdict.HOLD, 'plane_reached', proposal.detail)
            return self._bound(inputs.now_s, pose, base, proposal)
        except Exception as error:  # noqa: BLE001 - any failure in here must stop, never move
            return self._decide(Verdict.STOP, 'internal_error', f'{type(error).__name__}: {error}')

    def _bound(self, now, pose, base, proposal):
        lim = self.limits
        dt = lim.period_s
        v = np.asarray(proposal.linear_velocity_mm_s, dtype=float).reshape(3)
        w = np.asarray(proposal.angular_velocity_deg_s, dtype=float).reshape(3)
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
            return self._decide(Verdict.HOLD, 'no_target', 'the planner proposed a non-finite velocity')
        v_prev, w_prev = self._velocity, self._angular_velocity
        if self._setpoint is None and (np.any(v_prev) or np.any(w_prev)):
            v_prev, w_prev = np.zeros(3), np.zeros(3)
        v = _limit_change(_clamp_norm(v, lim.step_speed_mm_s), v_prev, lim.max_linear_acceleration_mm_s2 * dt)
        w = _limit_change(
            _clamp_norm(w, lim.step_angular_speed_deg_s), w_prev, lim.max_angular_acceleration_deg_s2 * dt
        )
        ws = self.workspace
        # Keep the setpoint inside the box and the cone: shorten the step along its own direction
        # (both sets are convex, so the part of the step inside them starts at the base pose).
        if (
            ws.translation_excess_mm(base[:3, 3]) > 0
            or ws.rotation_from_start_deg(base[:3, :3]) > ws.max_rotation_deg
        ):
            if np.linalg.norm(v) > 0 or np.linalg.norm(w) > 0:
                return self._decide(
                    Verdict.HOLD, 'workspace_edge', 'the current setpoint is at the workspace edge'
                )
        scale_t = self._inside_fraction(lambda s: ws.translation_excess_mm(base[:3, 3] + s * v * dt) <= 0)
        scale_r = self._inside_fraction(
            lambda s: (
                ws.rotation_from_start_deg(rotvec_to_matrix(s * w * dt) @ base[:3, :3]) <= ws.max_rotation_deg
            )
        )
        if scale_t < 1.0 or scale_r < 1.0:
            v_s, w_s = v * scale_t, w * scale_r
            if np.linalg.norm(v_s - v_prev) > lim.max_linear_acceleration_mm_s2 * dt * (
                1 + VERIFY_TOLERANCE
            ) or np.linalg.norm(w_s - w_prev) > lim.max_angular_acceleration_deg_s2 * dt * (
                1 + VERIFY_TOLERANCE
            ):
                return self._decide(
                    Verdict.HOLD,
                    'workspace_edge',
                    'cannot slow down within the acceleration limits before the edge',
                )
            v, w = v_s, w_s
        target = np.eye(4)
        target[:3, 3] = base[:3, 3] + v * dt
        target[:3, :3] = rotvec_to_matrix(w * dt) @ base[:3, :3]
        self._sequence += 1
        command = MotionCommand(_ISSUER, target, v, w, dt, now, self._sequence)
        self.verify(command, base, v_prev, w_prev)
        self._setpoint = target
        self._velocity, self._angular_velocity = v.copy(), w.copy()
        return self._decide(Verdict.MOVE, 'moving', proposal.detail, command)

    @staticmethod
    def _inside_fraction(inside, iterations=30):
        """Largest s in [0, 1] with inside(s), assuming inside(0) and an interval of such s."""
        if inside(1.0):
            return 1.0
        low, high = 0.0, 1.0
        for _ in range(iterations):
            middle = 0.5 * (low + high)
            if inside(middle):
                low = middle
            else:
                high = middle
        return low

    def verify(self, command, base, v_prev, w_prev):
        """Check ``command`` against every limit; raise EnvelopeError naming the first one it breaks.

        Checks: rigid target; step translation and rotation; speeds; accelerations against the
        previous command; the workspace box and rotation cone.
        """
        lim = self.limits
        dt = lim.period_s
        slack = 1.0 + VERIFY_TOLERANCE
        T = command.target_pose_mm
        if not is_rigid(T):
            raise EnvelopeError('target pose is not rigid')
        step = float(np.linalg.norm(T[:3, 3] - base[:3, 3]))
        turn = rotation_angle_deg(T[:3, :3], base[:3, :3])
        v, w = command.linear_velocity_mm_s, command.angular_velocity_deg_s
        checks = (
            (step, lim.max_step_translation_mm, 'step translation'),
            (turn, lim.max_step_rotation_deg, 'step rotation'),
            (float(np.linalg.norm(v)), lim.max_linear_speed_mm_s, 'linear speed'),
            (float(np.linalg.norm(w)), lim.max_angular_speed_deg_s, 'angular speed'),
            (
                float(np.linalg.norm(v - v_prev)) / dt,
                lim.max_linear_acceleration_mm_s2,
                'linear acceleration',
            ),
            (
                float(np.linalg.norm(w - w_prev)) / dt,
                lim.max_angular_acceleration_deg_s2,
                'angular acceleration',
            ),
            (
                self.workspace.rotation_from_start_deg(T[:3, :3]),
                lim.max_rotation_from_start_deg,
                'rotation from start',
            ),
        )
        for value, limit, name in checks:
            if not value <= limit * slack + 1e-9:
                raise EnvelopeError(f'{name} {value:.6g} exceeds its limit {limit:g}')
        if self.workspace.translation_excess_mm(T[:3, 3]) > 1e-9:
            raise EnvelopeError('target outside the workspace box')
