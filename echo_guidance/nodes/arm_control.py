"""Arm-control node: turns guidance into bounded Cartesian motion of the probe, or stops the arm.

A thin wrapper around :class:`echo_guidance.control.ArmController` (envelope, planner, state
machine; docs/autonomous.md). At ``limits.control_rate_hz`` it gathers the newest inputs, runs one
control cycle and commands the arm backend.

Subscribes (all inputs are stamped; ages are measured on this node's clock):

* ``/guidance`` (echo_guidance/Guidance): the action toward the target plane;
* ``/pedal/deadman`` (echo_guidance/Deadman): released, unplugged or silent = stop;
* ``/us/frame_info`` (std_msgs/UInt64MultiArray, ``[stamp_ns, ...]``): frame age only;
* ``/control/estop`` (std_msgs/Bool, reliable): true latches the e-stop, false clears it;
* ``/arm/probe_pose`` and ``/arm/wrench`` (backend ``ros2_control`` only: the arm-state node's output).

Publishes ``~/state`` (std_msgs/String, JSON: state, verdict, reason, detail, cycle), ``/diagnostics``
and, for backends that own the arm connection (``kinematic``, ``franky``), ``/arm/probe_pose`` (at
``state_publish_rate_hz``), ``/arm/probe_pose/decimated`` (every k-th of those messages, k =
state_publish_rate_hz / decimated_pose_rate_hz; the guidance and capture nodes read it) and
``/arm/wrench`` like the arm-state node. Backend ``ros2_control`` publishes Cartesian targets
(geometry_msgs/PoseStamped) on ``ros2.command_topic``.

Liveness: every topic in ``watch_topics`` must have a publisher and a message younger than
``limits.liveness_timeout_s``; otherwise the node counts as dead and the arm stops (fault). A
topic not heard from yet in the first ``startup_grace_s`` (15 s) stops the arm too, but as
``inputs_starting`` (state idle, no fault): the graph's processes come up one by one.
Any exception in a cycle stops the arm. Limits are validated at start-up: a malformed value
refuses to start with a message naming the key.
"""

import json
import math
import sys

from echo_guidance.control.limits import PlannerConfig, SafetyLimits
from echo_guidance.nodes.arm_state import (
    DECIMATED_POSE_RATE_HZ,
    DECIMATED_POSE_TOPIC,
    DECIMATED_RATE_RANGE_HZ,
    check_decimated_topic,
)

BACKENDS = ('kinematic', 'franky', 'ros2_control')
DEFAULT_WATCH_TOPICS = ['/guidance', '/pedal/deadman', '/us/frame_info']


def _moves(value):
    if len(value) % 6:
        raise ValueError(f'needs 6 numbers per move, got {len(value)} numbers')


def _limit_specs(cls, prefix):
    from echo_guidance.nodes._common import ParamSpec

    specs = []
    for name, default, unit, description in cls.describe_fields():
        if isinstance(default, tuple):
            default = [float(v) for v in default]
            length = len(default)
        else:
            length = None
        specs.append(
            ParamSpec(f'{prefix}.{name}', default, f'{description} [{unit}]', read_only=True, length=length)
        )
    return specs


def parameter_specs():
    """The node's parameters (besides the flange → probe calibration), as ParamSpecs."""
    from echo_guidance.nodes._common import ParamSpec

    spec = ParamSpec
    return [
        spec(
            'backend',
            'kinematic',
            'the arm: kinematic (simulated), franky (libfranka) or ros2_control',
            choices=BACKENDS,
            read_only=True,
        ),
        spec('guidance_topic', '/guidance', 'guidance input', read_only=True),
        spec('deadman_topic', '/pedal/deadman', 'deadman input', read_only=True),
        spec('frame_info_topic', '/us/frame_info', 'frame info input (frame age)', read_only=True),
        spec('estop_topic', '/control/estop', 'e-stop input (std_msgs/Bool; true latches)', read_only=True),
        spec(
            'pose_topic',
            '/arm/probe_pose',
            'probe pose (input for ros2_control, output otherwise)',
            read_only=True,
        ),
        spec(
            'wrench_topic',
            '/arm/wrench',
            'external wrench (input for ros2_control, output otherwise)',
            read_only=True,
        ),
        spec(
            'watch_topics',
            list(DEFAULT_WATCH_TOPICS),
            'topics whose publisher must exist and speak within limits.liveness_timeout_s ([""] = none)',
            read_only=True,
        ),
        spec(
            'state_publish_rate_hz',
            100.0,
            'rate of /arm/probe_pose and /arm/wrench (owning backends)',
            1.0,
            1000.0,
            read_only=True,
        ),
        spec(
            'decimated_pose_topic',
            DECIMATED_POSE_TOPIC,
            'output (owning backends): every k-th pose_topic message, for the guidance and capture nodes; '
            '"" = off',
            read_only=True,
        ),
        spec(
            'decimated_pose_rate_hz',
            DECIMATED_POSE_RATE_HZ,
            'rate of decimated_pose_topic; state_publish_rate_hz must be a whole multiple of it',
            *DECIMATED_RATE_RANGE_HZ,
            read_only=True,
        ),
        spec(
            'startup_grace_s',
            15.0,
            'after start, watched topics not heard from yet are "inputs_starting" (stop, no fault) '
            'for this long; then they count as dead nodes (fault)',
            0.0,
            300.0,
            read_only=True,
        ),
        spec('diagnostics_period_s', 0.5, 'diagnostics period', 0.05, 60.0, read_only=True),
        spec(
            'kinematic.start_pose',
            [0.0],
            'start probe pose x, y, z mm, roll, pitch, yaw deg in base; '
            '[0.0] = the simulated patient plane below',
            read_only=True,
        ),
        spec(
            'kinematic.sim_seed',
            0,
            'virtual patient whose plane gives the start pose',
            0,
            2**31 - 1,
            read_only=True,
        ),
        spec(
            'kinematic.sim_plane',
            'PLAX',
            'plane of that patient the start pose is relative to',
            read_only=True,
        ),
        spec(
            'kinematic.start_offset',
            [15.0, -10.0, 0.0, 10.0, -8.0, 12.0],
            'start = plane pose x U(offset): x, y, z mm, roll, pitch, yaw deg',
            length=6,
            read_only=True,
        ),
        spec(
            'kinematic.start_on_skin',
            True,
            'slide that start pose along the beam onto the skin (as a probe placed on the chest)',
            read_only=True,
        ),
        spec(
            'kinematic.time_constant_s',
            0.03,
            'tracking time constant of the simulated arm',
            0.001,
            5.0,
            read_only=True,
        ),
        spec('kinematic.rate_hz', 200.0, 'simulation steps per second', 10.0, 2000.0, read_only=True),
        spec('franky.hostname', '127.0.0.1', 'FCI address (the address franky-sim prints)', read_only=True),
        spec('franky.realtime', False, 'enforce a realtime kernel (real arm)', read_only=True),
        spec(
            'franky.stamp_source',
            'receive_time',
            'robot_clock (real arm) or receive_time (franky-sim)',
            choices=('robot_clock', 'receive_time'),
            read_only=True,
        ),
        spec('franky.connect_timeout_s', 20.0, 'connection timeout', 0.1, 600.0, read_only=True),
        spec(
            'franky.sim_approach',
            [0.0],
            'relative flange moves (6 numbers each) played once after connecting '
            'to a simulator on loopback; [0.0] = none',
            read_only=True,
            check=lambda v: v == [0.0] or _moves(v),
        ),
        spec(
            'franky.force_threshold_n',
            40.0,
            "libfranka's own collision threshold (above the envelope's)",
            1.0,
            200.0,
            read_only=True,
        ),
        spec(
            'ros2.command_topic',
            '/arm_control/target_pose',
            'Cartesian target topic read by a ros2_control Cartesian pose controller',
            read_only=True,
        ),
        spec(
            'ros2.command_frame',
            'flange',
            'targets are flange or probe poses',
            choices=('flange', 'probe'),
            read_only=True,
        ),
        spec('ros2.frame_id', 'base', 'frame_id of the published targets', read_only=True),
        *_limit_specs(SafetyLimits, 'limits'),
        *_limit_specs(PlannerConfig, 'planner'),
    ]


def limits_from_parameters(params):
    """Build (SafetyLimits, PlannerConfig) from the node's parameter values.

    Raises:
        LimitsError: a value is malformed or out of range (the message names ``limits.<key>``).
    """

    def section(prefix):
        return {
            name[len(prefix) + 1 :]: value for name, value in params.items() if name.startswith(prefix + '.')
        }

    limits = SafetyLimits.from_mapping(section('limits'), source='parameters', key_prefix='limits.')
    planner = PlannerConfig.from_mapping(section('planner'), source='parameters', key_prefix='planner.')
    return limits, planner


def check_parameters(params):
    """Rules across parameters, checked at start and by ``echo-guidance up --check`` (the same code).

    The safety limits and planner settings (:func:`limits_from_parameters`), the decimated pose
    topic of the backends that publish the pose, the simulated arm's plane.

    Raises:
        ValueError: naming the parameter.
    """
    from echo_guidance.control.limits import LimitsError
    from echo_guidance.planes import UnknownPlaneError, check_plane
    from echo_guidance.sim.patient import SIM_PLANES

    try:
        limits_from_parameters(params)
    except LimitsError as error:
        raise ValueError(f'refusing to start: {error}') from error
    if params['backend'] != 'ros2_control':  # before the backend connects to anything
        check_decimated_topic(
            params['decimated_pose_topic'],
            params['pose_topic'],
            params['decimated_pose_rate_hz'],
            params['state_publish_rate_hz'],
            'state_publish_rate_hz',
        )
    if params['backend'] == 'kinematic':
        try:
            check_plane(params['kinematic.sim_plane'], SIM_PLANES)
        except UnknownPlaneError as error:
            raise ValueError(f'kinematic.sim_plane: {error}') from None


def kinematic_start_pose(params):
    """The kinematic arm's start pose (4×4 mm) from the parameters."""
    import numpy as np

    from echo_guidance.geometry import action_to_matrix

    raw = params['kinematic.start_pose']
    if raw != [0.0]:
        if len(raw) != 6:
            raise ValueError(
                f'kinematic.start_pose needs 6 numbers (x, y, z mm, roll, pitch, yaw deg), got {raw}'
            )
        return action_to_matrix(np.asarray(raw, dtype=float))
    from echo_guidance.sim import Patient

    patient = Patient.from_seed(params['kinematic.sim_seed'])
    start = patient.standard_plane_pose(params['kinematic.sim_plane']) @ action_to_matrix(
        np.asarray(params['kinematic.start_offset'], dtype=float)
    )
    return patient.in_contact(start) if params['kinematic.start_on_skin'] else start


def main(args=None):
    """Run the arm-control node until shut down; return the exit status."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401 - fail early without diagnostics
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Bool, String, UInt64MultiArray
    from std_srvs.srv import Trigger

    from echo_guidance.arm.calibration import CalibrationError, calibration_from_node
    from echo_guidance.arm.interface import ArmInterface
    from echo_guidance.control import ArmController, ControlInputs, ControlState, GuidanceSample
    from echo_guidance.geometry import matrix_to_pose_msg, pose_msg_to_matrix
    from echo_guidance.msg import Deadman, Guidance
    from echo_guidance.nodes._common import (
        DiagnosticsPublisher,
        declare_parameters,
        run_node,
        seconds_to_time_msg,
    )
    from echo_guidance.up.supervise import SupervisorWatch

    best_effort = QoSProfile(
        depth=5,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
    reliable = QoSProfile(
        depth=10,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )

    def stamp_s(header):
        return header.stamp.sec + header.stamp.nanosec * 1e-9

    class ArmControlNode(Node):
        """Runs the control cycle against one arm backend."""

        def __init__(self):
            super().__init__('arm_control')
            params = declare_parameters(self, parameter_specs())
            self.params = params
            check_parameters(params)
            self.limits, planner_config = limits_from_parameters(params)
            backend_name = params['backend']
            # Started by a launcher: an orphaned arm control is a dead node (stop), then shuts down.
            self.supervisor = SupervisorWatch()
            self.calibration = None
            if backend_name != 'kinematic':
                try:
                    self.calibration = calibration_from_node(self)
                except CalibrationError as error:
                    raise ValueError(str(error)) from error
            self.backend = self._make_backend(backend_name, params)
            self.arm = ArmInterface(self.backend, clock=self._now_s)
            self.controller = ArmController(self.limits, planner_config, self.arm)
            self.watch_topics = [t for t in params['watch_topics'] if t]
            if backend_name == 'ros2_control' and params['pose_topic'] not in self.watch_topics:
                self.watch_topics.append(params['pose_topic'])
            self.started_s = self._now_s()
            self.last_heard = {topic: None for topic in self.watch_topics}
            self.guidance = None
            self.frame_stamp = None
            self.deadman = (None, None)
            self.estop = False
            self.dead_nodes = ()
            self.starting_inputs = ()
            self.cycle_errors = 0
            self.last_published = (None, None, None, -math.inf)

            self.create_subscription(Guidance, params['guidance_topic'], self._on_guidance, best_effort)
            self.create_subscription(Deadman, params['deadman_topic'], self._on_deadman, best_effort)
            self.create_subscription(
                UInt64MultiArray, params['frame_info_topic'], self._on_frame_info, best_effort
            )
            self.create_subscription(Bool, params['estop_topic'], self._on_estop, reliable)
            self.state_pub = self.create_publisher(String, '~/state', reliable)
            self.pose_pub = self.wrench_pub = self.decimated_pub = None
            self.decimate_every, self.published_poses, self.published_decimated = 0, 0, 0
            if backend_name == 'ros2_control':
                self.create_subscription(PoseStamped, params['pose_topic'], self._on_pose, best_effort)
                self.create_subscription(WrenchStamped, params['wrench_topic'], self._on_wrench, best_effort)
            else:
                pose_qos = QoSProfile(
                    depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
                )
                self.pose_pub = self.create_publisher(PoseStamped, params['pose_topic'], pose_qos)
                decimated_topic = params['decimated_pose_topic'].strip()
                if decimated_topic:
                    # The full topic comes from a timer, not an arm grid: every k-th message is exact.
                    self.decimate_every = round(
                        params['state_publish_rate_hz'] / params['decimated_pose_rate_hz']
                    )
                    self.decimated_pub = self.create_publisher(PoseStamped, decimated_topic, pose_qos)
                self.wrench_pub = self.create_publisher(WrenchStamped, params['wrench_topic'], best_effort)
                self.create_timer(1.0 / params['state_publish_rate_hz'], self._publish_arm_state)
            self.create_service(Trigger, '~/reset_workspace', self._on_reset_workspace)
            self.arm.start()
            self.create_timer(self.limits.period_s, self._cycle)
            self.diagnostics = DiagnosticsPublisher(
                self,
                'echo_guidance: arm_control',
                self.backend.describe(),
                self._diagnostics,
                params['diagnostics_period_s'],
            )
            self.get_logger().info(
                f'arm control with {self.backend.describe()} at {self.limits.control_rate_hz:g} Hz; '
                f'watching {self.watch_topics or "no topics"}'
            )

        # ------------------------------------------------------------------------ set-up

        def _now_s(self):
            return self.get_clock().now().nanoseconds * 1e-9

        def _make_backend(self, name, params):
            if name == 'kinematic':
                from echo_guidance.arm.kinematic import KinematicArm, KinematicArmBackend

                arm = KinematicArm(
                    kinematic_start_pose(params), time_constant_s=params['kinematic.time_constant_s']
                )
                return KinematicArmBackend(arm, clock=self._now_s, rate_hz=params['kinematic.rate_hz'])
            if name == 'franky':
                from echo_guidance.arm.command_backends import FrankyCommandBackend

                return FrankyCommandBackend(
                    params['franky.hostname'],
                    self.calibration,
                    self.limits,
                    clock=self._now_s,
                    realtime=params['franky.realtime'],
                    stamp_source=params['franky.stamp_source'],
                    connect_timeout_s=params['franky.connect_timeout_s'],
                    force_threshold_n=params['franky.force_threshold_n'],
                    sim_approach=None
                    if params['franky.sim_approach'] == [0.0]
                    else [
                        params['franky.sim_approach'][i : i + 6]
                        for i in range(0, len(params['franky.sim_approach']), 6)
                    ],
                )
            from echo_guidance.arm.command_backends import Ros2CartesianBackend

            publisher = self.create_publisher(
                PoseStamped,
                params['ros2.command_topic'],
                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
            )
            frame_id = params['ros2.frame_id']

            def publish(T_mm, _frame):
                msg = PoseStamped()
                msg.header.stamp = self.get_clock().now().to_msg()
                msg.header.frame_id = frame_id
                msg.pose = matrix_to_pose_msg(T_mm)
                publisher.publish(msg)

            return Ros2CartesianBackend(publish, self.calibration, params['ros2.command_frame'])

        # ------------------------------------------------------------------------ inputs

        def _heard(self, topic):
            if topic in self.last_heard:
                self.last_heard[topic] = self._now_s()

        def _on_guidance(self, msg):
            self._heard(self.params['guidance_topic'])
            self.guidance = GuidanceSample(
                stamp_s=stamp_s(msg.header),
                valid=bool(msg.valid),
                action=np.array(msg.action, dtype=float),
                confidence=float(msg.confidence),
                plane_reached=bool(msg.plane_reached),
                target_plane=msg.target_plane,
                status=msg.status,
            )

        def _on_deadman(self, msg):
            self._heard(self.params['deadman_topic'])
            self.deadman = (bool(msg.held), stamp_s(msg.header))

        def _on_frame_info(self, msg):
            self._heard(self.params['frame_info_topic'])
            if len(msg.data) >= 1:
                self.frame_stamp = int(msg.data[0]) * 1e-9

        def _on_estop(self, msg):
            if msg.data and not self.estop:
                self.get_logger().warning('e-stop received: stopping the arm')
            self.estop = bool(msg.data)
            if self.estop:
                self._cycle()  # act now rather than at the next tick

        def _on_pose(self, msg):
            self._heard(self.params['pose_topic'])
            try:
                T = pose_msg_to_matrix(msg.pose)
            except ValueError:
                T = np.full((4, 4), np.nan)  # the envelope stops on it (pose_invalid)
            self.backend.on_pose(stamp_s(msg.header), T)

        def _on_wrench(self, msg):
            self._heard(self.params['wrench_topic'])
            f, t = msg.wrench.force, msg.wrench.torque
            self.backend.on_wrench(stamp_s(msg.header), [f.x, f.y, f.z, t.x, t.y, t.z])

        def _liveness(self, now):
            """(dead, starting): watched topics that are dead, and those not heard from yet.

            A topic never heard from is "starting" during the first ``startup_grace_s`` (the
            processes of a graph come up one by one: no fault for that), dead after it. A topic
            heard from once and then without publisher or silent is dead at once.
            """
            dead, starting = [], []
            if self.supervisor.gone():
                dead.append(self.supervisor.describe())
            timeout = self.limits.liveness_timeout_s
            in_grace = now - self.started_s <= self.params['startup_grace_s']
            for topic in self.watch_topics:
                publishers = self.count_publishers(topic)
                heard = self.last_heard.get(topic)
                if heard is None:
                    what = 'no publisher yet' if publishers == 0 else 'waiting for the first message'
                    if in_grace:
                        starting.append(f'{topic}: {what}')
                    elif publishers == 0:
                        dead.append(f'{topic}: no publisher')
                    else:
                        dead.append(f'{topic}: nothing received')
                elif publishers == 0:
                    dead.append(f'{topic}: no publisher')
                elif now - heard > timeout:
                    dead.append(f'{topic}: silent for {now - heard:.2f} s')
            return tuple(dead), tuple(starting)

        # ------------------------------------------------------------------------ cycle

        def _cycle(self):
            now = self._now_s()
            try:
                state = self.arm.state()
                self.dead_nodes, self.starting_inputs = self._liveness(now)
                held, deadman_stamp = self.deadman
                errors = () if state is None else tuple(state.errors)
                connection_error = getattr(self.backend, 'connection_error', lambda: '')()
                if connection_error:
                    errors += (connection_error,)
                inputs = ControlInputs.from_arm_state(
                    now,
                    state,
                    deadman_held=held,
                    deadman_stamp_s=deadman_stamp,
                    estop=self.estop,
                    frame_stamp_s=self.frame_stamp,
                    guidance=self.guidance,
                    dead_nodes=self.dead_nodes,
                    arm_errors=errors,
                    starting_inputs=self.starting_inputs,
                )
                report = self.controller.cycle(inputs)
            except Exception as error:  # noqa: BLE001 - any failure: stop the arm, report, go on checking
                self.cycle_errors += 1
                try:
                    self.arm.stop()
                except Exception:  # noqa: BLE001
                    pass
                self.get_logger().error(
                    f'control cycle failed, arm stopped: {type(error).__name__}: {error}',
                    throttle_duration_sec=1.0,
                )
                self._publish_state(
                    now, 'fault', 'stop', 'internal_error', f'{type(error).__name__}: {error}'
                )
                return
            d = report.decision
            self._publish_state(now, report.state.value, d.verdict.value, d.reason, d.detail)

        def _publish_state(self, now, state, verdict, reason, detail):
            last_state, last_verdict, last_reason, last_time = self.last_published
            if (state, verdict, reason) == (last_state, last_verdict, last_reason) and now - last_time < 0.2:
                return
            if state != last_state:
                self.get_logger().info(f'state {last_state} -> {state}: {verdict} {reason} {detail}'.rstrip())
            self.last_published = (state, verdict, reason, now)
            msg = String()
            msg.data = json.dumps(
                {
                    'state': state,
                    'verdict': verdict,
                    'reason': reason,
                    'detail': detail,
                    'cycle': self.controller.cycles,
                    'stamp': now,
                    'estop': self.estop,
                    'dead_nodes': list(self.dead_nodes),
                }
            )
            self.state_pub.publish(msg)

        def _publish_arm_state(self):
            state = self.arm.state()
            if state is None or not np.all(np.isfinite(state.pose_mm)):
                return
            msg = PoseStamped()
            msg.header.stamp = seconds_to_time_msg(state.stamp_s)
            msg.header.frame_id = 'base'
            msg.pose = matrix_to_pose_msg(state.pose_mm)
            self.pose_pub.publish(msg)
            if self.decimated_pub is not None and self.published_poses % self.decimate_every == 0:
                self.decimated_pub.publish(msg)
                self.published_decimated += 1
            self.published_poses += 1
            if state.wrench is not None:
                wrench = WrenchStamped()
                wrench.header = msg.header
                f, t = wrench.wrench.force, wrench.wrench.torque
                f.x, f.y, f.z, t.x, t.y, t.z = (float(v) for v in state.wrench)
                self.wrench_pub.publish(wrench)

        def _on_reset_workspace(self, request, response):
            if self.controller.state in (ControlState.ARMED, ControlState.MOVING, ControlState.PLANE_REACHED):
                response.success = False
                response.message = f'refused while {self.controller.state.value}: release the deadman first'
            else:
                self.controller.envelope.reset_workspace()
                response.success = True
                response.message = 'workspace cleared: the next arming centres it on the probe pose'
            return response

        def _diagnostics(self):
            report = self.controller.last_report
            values = {
                'backend': self.params['backend'],
                'cycles': self.controller.cycles,
                'commands_executed': self.arm.commands_executed,
                'commands_refused': self.arm.commands_refused,
                'cycle_errors': self.cycle_errors,
                'estop': self.estop,
                'dead_nodes': '; '.join(self.dead_nodes),
                'starting_inputs': '; '.join(self.starting_inputs),
                'reasons': json.dumps(dict(self.controller.reason_counts)),
            }
            if self.pose_pub is not None:
                values['poses_published'] = self.published_poses
            if self.decimated_pub is not None:
                values['poses_published_decimated'] = self.published_decimated
            if report is None:
                return 'WARN', 'no control cycle yet', values
            values.update(
                state=report.state.value,
                verdict=report.decision.verdict.value,
                reason=report.decision.reason,
                detail=report.decision.detail,
            )
            ws = self.controller.envelope.workspace
            if ws is not None:
                values['workspace_centre_mm'] = np.round(ws.centre, 2).tolist()
            level = {'fault': 'ERROR', 'stopped': 'WARN'}.get(report.state.value, 'OK')
            return level, f'{report.state.value}: {report.decision.describe()}', values

        def close(self):
            """Stop the arm and its backend."""
            self.controller.shutdown()
            self.arm.close()
            if self.context.ok():
                self.get_logger().info('shut down: arm stopped')
            else:  # rosout needs the context a stop signal has already shut down
                print(f'[INFO] [{self.get_name()}]: shut down: arm stopped', file=sys.stderr, flush=True)

    return run_node(ArmControlNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
