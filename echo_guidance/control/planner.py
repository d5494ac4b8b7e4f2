"""The step planner: from guidance messages to a proposed probe velocity toward the target plane.

Each guidance message answers one frame: its action is the target pose in the probe frame at the
frame's acquisition time. The planner turns it into a target estimate in ``base`` with the probe
pose at that time (``T_target = T_probe(frame) · U(action)``), so motion since the frame does not
count twice, and low-pass filters the estimates (linear in translation, along the geodesic in
rotation), so one noisy answer moves the target only a fraction ``filter_alpha`` of its error.

The proposal is a velocity from the current setpoint toward the estimate, kept inside the
workspace: speed ``gain_per_s`` × remaining distance, capped so the arm can still stop at the
target within the acceleration limit (``sqrt(2 a d)``). The envelope then bounds it; the planner
never commands anything itself.

The plane counts as reached when the measured probe pose stays within ``reach_translation_mm`` and
``reach_rotation_deg`` of the estimate for ``reach_cycles`` control cycles, or (optionally) when the
guidance's own ``plane_reached`` flag holds that long.
"""

import dataclasses
import math

import numpy as np

from echo_guidance.control.envelope import matrix_to_rotvec_deg, rotation_angle_deg, rotvec_to_matrix
from echo_guidance.geometry import action_to_matrix


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What the planner would like to do this cycle (the envelope decides what happens).

    Attributes:
        linear_velocity_mm_s, angular_velocity_deg_s: proposed velocity (base frame).
        reached: the plane is reached: hold.
        goal_pose_mm: the (workspace-clamped) target estimate.
        error_mm, error_deg: measured pose to goal.
        detail: one line for diagnostics.
    """

    linear_velocity_mm_s: np.ndarray
    angular_velocity_deg_s: np.ndarray
    reached: bool = False
    goal_pose_mm: np.ndarray | None = None
    error_mm: float = math.nan
    error_deg: float = math.nan
    detail: str = ''


class StepPlanner:
    """Filter guidance into a target estimate and propose a bounded-profile velocity toward it.

    Args:
        config: :class:`~echo_guidance.control.limits.PlannerConfig`.
        limits: :class:`~echo_guidance.control.limits.SafetyLimits` (acceleration limits shape the
            braking profile).
    """

    def __init__(self, config, limits):
        """Start without a target estimate."""
        self.config = config
        self.limits = limits
        self.reset()

    def reset(self):
        """Forget the target estimate and the reach counters (new target or re-arming)."""
        self.target_mm = None
        self.estimates = 0
        self.last_stamp_s = None
        self.last_plane_reached = False
        self._at_target_cycles = 0
        self._flag_cycles = 0

    def set_target(self, target_mm):
        """Use a fixed target pose (4×4 mm, base) instead of guidance (e.g. a move to a given pose)."""
        self.reset()
        self.target_mm = np.array(target_mm, dtype=float)
        self.estimates = self.config.min_estimates

    def observe(self, guidance, pose_at_frame_mm):
        """Fold one guidance message into the target estimate; return True if it was new.

        Args:
            guidance: a :class:`~echo_guidance.control.envelope.GuidanceSample` that passed the
                envelope's checks (valid, finite, in range, confident).
            pose_at_frame_mm: the probe pose at ``guidance.stamp_s`` (4×4 mm, base).
        """
        if self.last_stamp_s is not None and guidance.stamp_s <= self.last_stamp_s:
            return False
        self.last_stamp_s = guidance.stamp_s
        self.last_plane_reached = bool(guidance.plane_reached)
        estimate = np.asarray(pose_at_frame_mm, dtype=float) @ action_to_matrix(
            np.asarray(guidance.action, float)
        )
        if not np.all(np.isfinite(estimate)):
            return False
        if self.target_mm is None:
            self.target_mm = estimate
        else:
            alpha = self.config.filter_alpha
            target = self.target_mm.copy()
            target[:3, 3] += alpha * (estimate[:3, 3] - target[:3, 3])
            R = target[:3, :3]
            target[:3, :3] = rotvec_to_matrix(alpha * matrix_to_rotvec_deg(estimate[:3, :3] @ R.T)) @ R
            self.target_mm = target
        self.estimates += 1
        return True

    def propose(self, pose_mm, base_mm, velocity, angular_velocity, workspace=None):
        """Return a :class:`Proposal` from the setpoint ``base_mm`` toward the target, or None.

        Args:
            pose_mm: measured probe pose (decides whether the plane is reached).
            base_mm: where the next step starts (the last setpoint, or the measured pose at rest).
            velocity, angular_velocity: the last commanded velocity (unused by this profile).
            workspace: the envelope's :class:`~echo_guidance.control.envelope.Workspace`: the goal is
                clamped into it.
        """
        if self.target_mm is None or self.estimates < self.config.min_estimates:
            return None
        cfg, lim = self.config, self.limits
        goal = self.target_mm if workspace is None else workspace.clamp(self.target_mm)
        error_mm = float(np.linalg.norm(goal[:3, 3] - pose_mm[:3, 3]))
        error_deg = rotation_angle_deg(goal[:3, :3], pose_mm[:3, :3])
        at_target = error_mm <= cfg.reach_translation_mm and error_deg <= cfg.reach_rotation_deg
        self._at_target_cycles = self._at_target_cycles + 1 if at_target else 0
        self._flag_cycles = self._flag_cycles + 1 if self.last_plane_reached else 0
        detail = f'target {error_mm:.1f} mm / {error_deg:.1f} deg away'
        reached = self._at_target_cycles >= cfg.reach_cycles or (
            cfg.use_guidance_plane_reached and self._flag_cycles >= cfg.reach_cycles
        )
        if reached:
            return Proposal(np.zeros(3), np.zeros(3), True, goal, error_mm, error_deg, detail)

        offset = goal[:3, 3] - base_mm[:3, 3]
        distance = float(np.linalg.norm(offset))
        v = np.zeros(3)
        if distance > 1e-9:
            speed = min(
                cfg.gain_per_s * distance, math.sqrt(2.0 * lim.max_linear_acceleration_mm_s2 * distance)
            )
            v = offset / distance * speed
        rotvec = matrix_to_rotvec_deg(goal[:3, :3] @ base_mm[:3, :3].T)
        angle = float(np.linalg.norm(rotvec))
        w = np.zeros(3)
        if angle > 1e-9:
            rate = min(cfg.gain_per_s * angle, math.sqrt(2.0 * lim.max_angular_acceleration_deg_s2 * angle))
            w = rotvec / angle * rate
        return Proposal(v, w, False, goal, error_mm, error_deg, detail)
