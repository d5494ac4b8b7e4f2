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
guidance's own ``plane_reached`` flag holds that long. With ``reach_requires_guidance`` the flag (the
guidance node's stop judgement) must also hold at that moment: the planner arriving at its estimate
is not enough.

With ``step_and_look`` the planner works as a sonographer does instead: it holds the probe still
and *looks*: it averages the guidance of ``look_frames`` frames acquired while the probe stood at
the look pose (within ``look_still_mm`` / ``look_still_deg``, so several heartbeat phases and no
motion blur of the estimate), then *steps* ``step_fraction`` of that averaged action (the target
seen from the look pose, ``T_look · U(f · a)``) and looks again from there. Each prediction is thus
made from a still probe, and every step starts nearer the target, where the model is more
accurate. The plane counts as reached when ``reach_looks`` consecutive looks see guidance within
``reach_guidance_mm`` / ``reach_guidance_deg``: the criterion is what the model sees *now*, not the
distance to an estimate made earlier from farther away.

"""

import dataclasses
import math

import numpy as np

from echo_guidance.control.envelope import matrix_to_rotvec_deg, rotation_angle_deg, rotvec_to_matrix
from echo_guidance.geometry import action_to_matrix

# Poses on each search ring (every 45 degrees around where the search began).
SEARCH_RING_POSES = 8


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
        self._fixed_target = False
        self.phase = 'look'
        self._look_pose = None
        self._look_actions = []
        self._looks_at_plane = 0
        self.looks = 0
        self.last_look_action = None
        self.look_log = []
        self.trace_note = ''
        self._around = None  # look-around in progress: {'poses', 'index', 'estimates', 'count'}
        self.around_rounds = 0
        self._frozen = False
        self.now_s = 0.0  # the controller's time of the cycle being decided
        self._lost_since = None
        self.searching = False
        self._search = None
        self.searches = 0

    def set_target(self, target_mm):
        """Use a fixed target pose (4×4 mm, base) instead of guidance (e.g. a move to a given pose)."""
        self.reset()
        self.target_mm = np.array(target_mm, dtype=float)
        self.estimates = self.config.min_estimates
        self._fixed_target = True

    @property
    def stepping(self):
        """True when the planner works by step-and-look (guidance mode with ``step_and_look`` on)."""
        return self.config.step_and_look and not self._fixed_target

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
        if self.stepping:
            return self._observe_look(np.asarray(guidance.action, float), pose_at_frame_mm)
        estimate = np.asarray(pose_at_frame_mm, dtype=float) @ action_to_matrix(
            np.asarray(guidance.action, float)
        )
        if not np.all(np.isfinite(estimate)):
            return False
        if self._around is not None:
            return self._observe_around(estimate, pose_at_frame_mm)
        if self._frozen:
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
        if self.stepping:
            return self._propose_step(pose_mm, base_mm, velocity, angular_velocity, workspace)
        if self.target_mm is None or self.estimates < self.config.min_estimates:
            return None
        if self._around is not None:
            return self._propose_around(pose_mm, base_mm, velocity, angular_velocity, workspace)
        cfg, lim = self.config, self.limits
        goal = self.target_mm if workspace is None else workspace.clamp(self.target_mm)
        error_mm = float(np.linalg.norm(goal[:3, 3] - pose_mm[:3, 3]))
        error_deg = rotation_angle_deg(goal[:3, :3], pose_mm[:3, :3])
        # A goal clamped into the workspace is not the target: arriving there is not reaching the plane
        # (guidance that keeps pointing outside, e.g. from frames without echo, must not end "reached").
        clamped = not np.allclose(goal, self.target_mm, atol=1e-6)
        at_target = (
            error_mm <= cfg.reach_translation_mm and error_deg <= cfg.reach_rotation_deg and not clamped
        )
        self._at_target_cycles = self._at_target_cycles + 1 if at_target else 0
        self._flag_cycles = self._flag_cycles + 1 if self.last_plane_reached and not clamped else 0
        detail = f'target {error_mm:.1f} mm / {error_deg:.1f} deg away'
        if clamped:
            detail += ' (target estimate outside the workspace: goal clamped to its edge)'
        reached = self._at_target_cycles >= cfg.reach_cycles or (
            cfg.use_guidance_plane_reached and self._flag_cycles >= cfg.reach_cycles
        )
        if (
            reached
            and cfg.look_around
            and not self._fixed_target
            and (
                self.around_rounds == 0
                or (
                    cfg.reach_requires_guidance
                    and not self.last_plane_reached
                    and self.around_rounds < cfg.look_around_rounds
                )
            )
        ):
            # Look before committing: the first arrival, and every one the stop judgement disputes.
            self._start_around()
            return self._propose_around(pose_mm, base_mm, velocity, angular_velocity, workspace)
        if cfg.reach_requires_guidance and not self._fixed_target and not self.last_plane_reached:
            reached = False
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

    # ------------------------------------------------------------------------------ search

    def guidance_lost(self, now_s):
        """The guidance is not confident this cycle (the envelope holds for low confidence).

        With ``search`` on, a search starts once that has lasted ``search_after_s``.
        """
        if self._lost_since is None:
            self._lost_since = float(now_s)
        if (
            self.config.search
            and not self.searching
            and not self._fixed_target
            and now_s - self._lost_since >= self.config.search_after_s
        ):
            self.searching, self._search = True, None
            self.searches += 1

    def guidance_confident(self):
        """The guidance passed every check this cycle: any search ends, its estimate starts afresh.

        Afresh means all of it: a target frozen by an earlier look-around is dropped too (it was made
        before the guidance was lost), and the look-around rounds count from zero again.
        """
        self._lost_since = None
        if self.searching:
            self.searching, self._search = False, None
            self.target_mm, self.estimates = None, 0
            self._at_target_cycles = 0
            self._around, self._frozen, self.around_rounds = None, False, 0

    def search_offsets(self, round_index):
        """Offsets (x, y, z mm, roll, pitch, yaw deg) of one search round, from where the search began.

        Round ``k`` (from 0) is a ring of :data:`SEARCH_RING_POSES` poses at radius
        ``(k + 1) * search_mm`` in the probe's x-y plane (along the array and the elevation), each ring
        turned half a step against the one before so that no direction is looked at twice; all of them
        pressed ``search_press_mm`` along the beam, and round 0 first visits the pressed pose itself (a
        probe that lost contact finds the skin again, and guidance that only needed time gets it). With
        ``search_deg`` each ring pose also tilts that far, its beam leaning back toward the centre.

        The ring replaced a compass pattern (slide and tilt to either side of the centre, 1.5 times
        wider each round) that came back through the centre between poses: on the same 2 rounds the
        ring reaches twice as far from where the guidance was lost (docs/autonomous.md section 4).
        """
        cfg = self.config
        radius, press, tilt = cfg.search_mm * (round_index + 1), cfg.search_press_mm, cfg.search_deg
        steps = np.arange(SEARCH_RING_POSES) + 0.5 * (round_index % 2)
        angles = np.deg2rad(steps * 360.0 / SEARCH_RING_POSES)
        ring = [
            [radius * math.cos(a), radius * math.sin(a), press, tilt * math.sin(a), -tilt * math.cos(a), 0.0]
            for a in angles
        ]
        centre = [[0.0, 0.0, press, 0.0, 0.0, 0.0]] if round_index == 0 else []
        return np.array(centre + ring, dtype=float)

    def propose_search(self, pose_mm, base_mm, velocity, angular_velocity, workspace=None):
        """The next step of the search pattern (the envelope bounds it), or None once it is over."""
        cfg = self.config
        if not self.searching:
            return None
        if self._search is None:
            origin = np.array(base_mm, dtype=float)
            self._search = {'origin': origin, 'round': 0, 'index': 0, 'arrived': None}
        search = self._search
        offsets = self.search_offsets(search['round'])
        if search['index'] >= len(offsets):
            search['round'] += 1
            search['index'] = 0
            if search['round'] >= cfg.search_rounds:
                self.trace_note = 'search: pattern done, guidance still not confident'
                return Proposal(np.zeros(3), np.zeros(3), False, None, detail=self.trace_note)
            offsets = self.search_offsets(search['round'])
        goal = search['origin'] @ action_to_matrix(offsets[search['index']])
        goal = goal if workspace is None else workspace.clamp(goal)
        still = float(np.linalg.norm(velocity)) < 1e-9 and float(np.linalg.norm(angular_velocity)) < 1e-9
        self.trace_note = f'search {self.searches}: round {search["round"] + 1}, pose {search["index"] + 1}'
        if not (self._near(pose_mm, goal) and self._near(base_mm, goal) and still):
            search['arrived'] = None
            proposal = self._toward(goal, pose_mm, base_mm)
            return dataclasses.replace(proposal, detail=f'{self.trace_note}: {proposal.detail}')
        if search['arrived'] is None:
            search['arrived'] = self.now_s
        if self.now_s - search['arrived'] >= cfg.search_dwell_s:
            search['index'] += 1
            search['arrived'] = None
        return Proposal(np.zeros(3), np.zeros(3), False, goal, detail=f'{self.trace_note}: looking')

    # ------------------------------------------------------------------------------ look around

    def around_offsets(self):
        """The look-around poses' offsets (x, y, z mm, roll, pitch, yaw deg) in the estimate's probe frame.

        The estimate itself, then two pairs of poses on opposite sides: along the array (x) tilted
        about the elevation axis (pitch), and along the elevation (y) tilted about the array (roll),
        so first-order errors of the model cancel in the fused estimate.
        """
        r, a = self.config.look_around_mm, self.config.look_around_deg
        return np.array(
            [
                [0, 0, 0, 0, 0, 0],
                [r, 0, 0, 0, a, 0],
                [-r, 0, 0, 0, -a, 0],
                [0, r, 0, a, 0, 0],
                [0, -r, 0, -a, 0, 0],
            ],
            dtype=float,
        )

    def _start_around(self):
        poses = [self.target_mm @ action_to_matrix(offset) for offset in self.around_offsets()]
        self._around = {'poses': poses, 'index': 0, 'estimates': [], 'count': 0}
        self._at_target_cycles = 0

    def _observe_around(self, estimate, pose_at_frame_mm):
        """Keep a frame's target estimate when the probe stood at the current look-around pose."""
        around = self._around
        look_pose = around['poses'][around['index']]
        if around.get('settled') and self._near(np.asarray(pose_at_frame_mm, float), look_pose):
            around['estimates'].append(estimate)
            around['count'] += 1
            return True
        return False

    def _propose_around(self, pose_mm, base_mm, velocity, angular_velocity, workspace):
        """Visit each look-around pose, hold until its frames are in, then fuse and go to the result."""
        cfg = self.config
        around = self._around
        goal = around['poses'][around['index']]
        goal = goal if workspace is None else workspace.clamp(goal)
        around['poses'][around['index']] = goal
        still = float(np.linalg.norm(velocity)) < 1e-9 and float(np.linalg.norm(angular_velocity)) < 1e-9
        if not (self._near(pose_mm, goal) and self._near(base_mm, goal) and still):
            around['settled'] = False
            self.trace_note = f'look-around {self.around_rounds + 1}: to pose {around["index"] + 1}'
            return self._toward(goal, pose_mm, base_mm)
        around['settled'] = True
        if around['count'] >= cfg.look_around_frames:
            around['index'] += 1
            around['count'] = 0
            around['settled'] = False
            if around['index'] >= len(around['poses']):
                self.target_mm = fuse_poses(around['estimates'], self.target_mm)
                self.around_rounds += 1
                self._around = None
                self._frozen = True  # the fused estimate stands until the next look-around
                fused = len(around['estimates'])
                self.trace_note = f'look-around {self.around_rounds}: fused {fused} estimates'
                return Proposal(np.zeros(3), np.zeros(3), False, self.target_mm, detail=self.trace_note)
        self.trace_note = (
            f'look-around {self.around_rounds + 1}: pose {around["index"] + 1}, '
            f'{around["count"]}/{cfg.look_around_frames} frames'
        )
        return Proposal(np.zeros(3), np.zeros(3), False, self.target_mm, detail=self.trace_note)

    # ------------------------------------------------------------------------------ step and look

    def _near(self, pose_a, pose_b):
        cfg = self.config
        return (
            float(np.linalg.norm(pose_a[:3, 3] - pose_b[:3, 3])) <= cfg.look_still_mm
            and rotation_angle_deg(pose_a[:3, :3], pose_b[:3, :3]) <= cfg.look_still_deg
        )

    def _observe_look(self, action, pose_at_frame_mm):
        """Keep a frame's guidance for the current look if the probe stood at the look pose then."""
        pose = np.asarray(pose_at_frame_mm, dtype=float)
        if not np.all(np.isfinite(action)) or not np.all(np.isfinite(pose)):
            return False
        if self.phase != 'look' or self._look_pose is None or not self._near(pose, self._look_pose):
            return False
        self._look_actions.append(action)
        return True

    def _propose_step(self, pose_mm, base_mm, velocity, angular_velocity, workspace):
        """Step-and-look: brake and look while still, then move ``step_fraction`` of what was seen."""
        cfg = self.config
        still = (
            float(np.linalg.norm(velocity)) < 1e-9
            and float(np.linalg.norm(angular_velocity)) < 1e-9
            and self._near(pose_mm, base_mm)
        )
        if self.phase == 'move':
            goal = self.target_mm if workspace is None else workspace.clamp(self.target_mm)
            if self._near(pose_mm, goal) and self._near(base_mm, goal):
                self.phase, self._look_pose, self._look_actions = 'look', None, []
            else:
                proposal = self._toward(goal, pose_mm, base_mm)
                self.trace_note = f'move (look {self.looks})'
                return proposal
        # Looking: ask for zero velocity (the envelope brakes within the acceleration limit).
        if self._look_pose is None and still:
            self._look_pose = np.array(pose_mm, dtype=float)
            self._look_actions = []
        self.trace_note = f'look {self.looks + 1}: {len(self._look_actions)}/{cfg.look_frames} frames'
        if self._look_pose is None or len(self._look_actions) < cfg.look_frames:
            return Proposal(np.zeros(3), np.zeros(3), False, self.target_mm, detail=self.trace_note)
        action = np.mean(self._look_actions, axis=0)
        self.looks += 1
        self.estimates += 1
        self.last_look_action = action
        if len(self.look_log) < 1000:
            self.look_log.append((self._look_pose.copy(), action, len(self._look_actions)))
        self._look_actions = []
        seen_mm = float(np.linalg.norm(action[:3]))
        seen_deg = rotation_angle_deg(action_to_matrix(action)[:3, :3], np.eye(3))
        detail = f'look {self.looks}: guidance {seen_mm:.1f} mm / {seen_deg:.1f} deg'
        if seen_mm <= cfg.reach_guidance_mm and seen_deg <= cfg.reach_guidance_deg:
            self._looks_at_plane += 1
            if self._looks_at_plane >= cfg.reach_looks:
                self.trace_note = f'reached ({detail})'
                return Proposal(np.zeros(3), np.zeros(3), True, self._look_pose, seen_mm, seen_deg, detail)
            self.trace_note = detail
            return Proposal(np.zeros(3), np.zeros(3), False, self._look_pose, seen_mm, seen_deg, detail)
        self._looks_at_plane = 0
        self.target_mm = self._look_pose @ scaled_action_matrix(action, cfg.step_fraction)
        self.phase, self._look_pose = 'move', None
        self.trace_note = detail
        goal = self.target_mm if workspace is None else workspace.clamp(self.target_mm)
        return self._toward(goal, pose_mm, base_mm)

    def _toward(self, goal, pose_mm, base_mm):
        """A velocity from ``base_mm`` that reaches ``goal`` and can stop there (no creeping tail).

        Speed sqrt(2 a d) (the braking profile), never more than the distance left in one cycle;
        the envelope caps speed and acceleration.
        """
        lim = self.limits
        dt = lim.period_s
        offset = goal[:3, 3] - base_mm[:3, 3]
        distance = float(np.linalg.norm(offset))
        v = np.zeros(3)
        if distance > 1e-9:
            speed = min(math.sqrt(2.0 * lim.max_linear_acceleration_mm_s2 * distance), distance / dt)
            v = offset / distance * speed
        rotvec = matrix_to_rotvec_deg(goal[:3, :3] @ base_mm[:3, :3].T)
        angle = float(np.linalg.norm(rotvec))
        w = np.zeros(3)
        if angle > 1e-9:
            rate = min(math.sqrt(2.0 * lim.max_angular_acceleration_deg_s2 * angle), angle / dt)
            w = rotvec / angle * rate
        error_mm = float(np.linalg.norm(goal[:3, 3] - pose_mm[:3, 3]))
        error_deg = rotation_angle_deg(goal[:3, :3], pose_mm[:3, :3])
        detail = f'step: goal {error_mm:.1f} mm / {error_deg:.1f} deg away'
        return Proposal(v, w, False, goal, error_mm, error_deg, detail)


def fuse_poses(poses, reference):
    """A robust mean of poses (4×4 mm).

    Per-axis medians of the translations and of the rotation vectors of each rotation relative to
    ``reference``, so an outlier does not drag the result.
    """
    poses = np.asarray(poses, dtype=float)
    out = np.array(reference, dtype=float)
    out[:3, 3] = np.median(poses[:, :3, 3], axis=0)
    R0 = out[:3, :3]
    rotvecs = np.array([matrix_to_rotvec_deg(p[:3, :3] @ R0.T) for p in poses])
    out[:3, :3] = rotvec_to_matrix(np.median(rotvecs, axis=0)) @ R0
    return out


def scaled_action_matrix(action, fraction):
    """U of ``fraction`` of ``action``: the translation scaled, the rotation scaled along its geodesic."""
    T = action_to_matrix(np.asarray(action, dtype=float))
    out = np.eye(4)
    out[:3, 3] = fraction * T[:3, 3]
    out[:3, :3] = rotvec_to_matrix(fraction * matrix_to_rotvec_deg(T[:3, :3]))
    return out
