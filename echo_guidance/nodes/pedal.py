"""Pedal node: reads the foot pedal / button box (EG1 protocol) and publishes its events.

Topics (docs/pedal-protocol.md, "ROS interface"):

- ``/pedal/event`` (echo_guidance/PedalEvent; reliable, volatile, depth 50): every press, release,
  button and fault, stamped when received.
- ``/pedal/deadman`` (echo_guidance/Deadman; reliable, depth 1): the hold-to-enable state at
  ``deadman_rate_hz`` and immediately on every change. A consumer must treat a stale message
  as released.
- ``/diagnostics``: connection, fault and counters at 1 Hz.

``port`` is a serial device path or pyserial URL, or a simulated pedal for the simulation
profile: ``sim:held`` (deadman pressed from the start), ``sim:keyboard`` (letters on stdin, see
echo_guidance/pedal/device_sim.py), ``sim:script=<yaml>`` (timed actions) or ``sim:sonographer``
(held, and TARGET pressed whenever the probe really reaches the virtual patient's standard plane of
the bag being recorded: echo_guidance/pedal/sonographer.py; it subscribes to
``sonographer.pose_topic`` and ``sonographer.status_topic``). Simulated pedals are the device
emulator on a pty, so they go through the same reader and parser as hardware.
"""

import threading

from rclpy.node import Node

from echo_guidance.nodes._common import (
    EVENT_QOS,
    HEARTBEAT_QOS,
    DiagnosticsPublisher,
    ParameterValidationError,
    ParamSpec,
    declare_parameters,
    run_node,
)
from echo_guidance.pedal.reader import SerialPedalReader
from echo_guidance.pedal.state import PedalEventCode


def _check_port(value):
    value = str(value).strip()
    if not value:
        raise ValueError(
            'port must name a serial device, a pyserial URL or sim:held|keyboard|sonographer|script=<file>')
    if value.startswith('sim:') and value not in ('sim:held', 'sim:keyboard', 'sim:sonographer') \
            and not value.startswith('sim:script='):
        raise ValueError(
            "simulated ports are 'sim:held', 'sim:keyboard', 'sim:sonographer' or 'sim:script=<yaml file>'")


PARAMETERS = [
    ParamSpec('port', '/dev/ttyACM0', 'Serial device, pyserial URL, or sim:held / sim:keyboard / '
              'sim:sonographer / sim:script=<yaml>.', read_only=True, check=_check_port),
    ParamSpec('baudrate', 115200, 'Serial baud rate (ignored by USB CDC devices).', min_value=1200,
              max_value=4_000_000, read_only=True),
    ParamSpec('heartbeat_timeout_s', 0.5, 'A connected device silent this long is a fault.',
              min_value=0.05, max_value=10.0, read_only=True),
    ParamSpec('reconnect_interval_s', 0.5, 'Wait between attempts to reopen the port.',
              min_value=0.05, max_value=30.0, read_only=True),
    ParamSpec('deadman_rate_hz', 20.0, 'Rate of the /pedal/deadman heartbeat.', min_value=1.0,
              max_value=500.0, read_only=True),
    ParamSpec('event_topic', '/pedal/event', 'PedalEvent topic.', read_only=True),
    ParamSpec('deadman_topic', '/pedal/deadman', 'Deadman heartbeat topic.', read_only=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Diagnostics period.', min_value=0.1, max_value=60.0,
              read_only=True),
    # sim:sonographer only
    ParamSpec('sonographer.sim_seed', 0, 'Virtual patient seed (the capture node renders the same one).',
              min_value=0, max_value=2 ** 31 - 1, read_only=True),
    ParamSpec('sonographer.tolerance_mm', 2.0, 'Press TARGET within this distance of the plane (mm).',
              min_value=0.01, max_value=100.0, read_only=True),
    ParamSpec('sonographer.tolerance_deg', 2.0, 'Press TARGET within this rotation of the plane (deg).',
              min_value=0.01, max_value=180.0, read_only=True),
    ParamSpec('sonographer.rearm_mm', 6.0, 'Next press only after the probe went this far away (mm).',
              min_value=0.01, max_value=1000.0, read_only=True),
    ParamSpec('sonographer.rearm_deg', 6.0, '... or rotated this far away (deg).',
              min_value=0.01, max_value=180.0, read_only=True),
    ParamSpec('sonographer.pose_topic', '/arm/probe_pose/decimated', 'Probe poses (PoseStamped, base).',
              read_only=True),
    ParamSpec('sonographer.status_topic', '/recorder/status', "Recorder status (the bag's target plane).",
              read_only=True),
]


class PedalNode(Node):
    """Publishes pedal events and the deadman heartbeat; see the module docstring."""

    def __init__(self, **node_kwargs):
        """Declare parameters, start the (simulated) device if any, and the reader."""
        super().__init__('pedal', **node_kwargs)
        from echo_guidance.msg import Deadman, PedalEvent

        self.params = declare_parameters(self, PARAMETERS)
        p = self.params
        self._event_type, self._deadman_type = PedalEvent, Deadman
        self._event_publisher = self.create_publisher(PedalEvent, p['event_topic'], EVENT_QOS)
        self._deadman_publisher = self.create_publisher(Deadman, p['deadman_topic'], HEARTBEAT_QOS)
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self.context.on_shutdown(self._stop.set)
        self.device = None
        self._sim_mode = None
        port = p['port']
        if port.startswith('sim:'):
            port = self._start_simulated_device(port)
        self.port = port
        self.reader = SerialPedalReader(port, self._on_events, heartbeat_timeout_s=p['heartbeat_timeout_s'],
                                        reconnect_interval_s=p['reconnect_interval_s'],
                                        baudrate=p['baudrate'])
        self._diagnostics = DiagnosticsPublisher(self, f'pedal: {p["port"]}', port, self._diagnostic_status,
                                                 period_s=p['diagnostics_period_s'])
        self.create_timer(1.0 / p['deadman_rate_hz'], self._publish_deadman)
        self.reader.start()
        if self._sim_mode is not None:
            threading.Thread(target=self._run_simulation, name='pedal-sim', daemon=True).start()
        self.get_logger().info(f'reading pedal on {port} (heartbeat timeout {p["heartbeat_timeout_s"]:g} s)')

    # --- simulated pedal ---------------------------------------------------------------------------

    def _start_simulated_device(self, spec):
        from echo_guidance.pedal.device_sim import PtyPedalDevice, load_script
        self._sim_script = None
        if spec.startswith('sim:script='):
            try:
                self._sim_script = load_script(spec[len('sim:script='):])
            except (OSError, ValueError) as err:
                raise ParameterValidationError(f'pedal script: {err}') from None
        self._sim_mode = spec[len('sim:'):].split('=')[0]
        if self._sim_mode == 'sonographer':
            self._start_sonographer()
        self.device = PtyPedalDevice().start()
        return self.device.port

    def _start_sonographer(self):
        from geometry_msgs.msg import PoseStamped

        from echo_guidance.msg import RecorderStatus
        from echo_guidance.pedal.sonographer import SimulatedSonographer, standard_plane_target

        p = self.params
        seed = p['sonographer.sim_seed']
        try:
            self.sonographer = SimulatedSonographer(
                lambda plane: standard_plane_target(seed, plane),
                p['sonographer.tolerance_mm'], p['sonographer.tolerance_deg'],
                p['sonographer.rearm_mm'], p['sonographer.rearm_deg'])
        except ValueError as err:
            raise ParameterValidationError(str(err)) from None
        self.create_subscription(PoseStamped, p['sonographer.pose_topic'], self._on_sonographer_pose, 10)
        self.create_subscription(RecorderStatus, p['sonographer.status_topic'], self._on_recorder_status, 10)
        self.get_logger().info(
            f'simulated sonographer: virtual patient {seed}, presses TARGET within '
            f'{p["sonographer.tolerance_mm"]:g} mm / {p["sonographer.tolerance_deg"]:g} deg of the plane '
            'of the bag being recorded')

    def _on_recorder_status(self, msg):
        self.sonographer.set_recording(msg.state == msg.RECORDING, msg.target_plane, msg.bag_path)
        if self.sonographer.unknown_plane:
            self.get_logger().warning(self.sonographer.unknown_plane, throttle_duration_sec=10.0)

    def _on_sonographer_pose(self, msg):
        from echo_guidance.geometry import GeometryError, pose_msg_to_matrix

        try:
            T = pose_msg_to_matrix(msg.pose)
        except GeometryError:
            return
        mark = self.sonographer.on_pose(T)
        if mark is not None and self.device is not None:
            self.get_logger().info(mark.describe())
            self.device.target()

    def _run_simulation(self):
        from echo_guidance.pedal.device_sim import run_keyboard, run_script
        if self._sim_mode in ('held', 'sonographer'):
            # Press only once the reader has seen the switch released (it must arm first).
            while not self._stop.is_set() and not self.reader.state.armed:
                self._stop.wait(0.02)
            if not self._stop.is_set():
                self.device.press()
        elif self._sim_mode == 'keyboard':
            run_keyboard(self.device)
        elif self._sim_mode == 'script':
            run_script(self.device, self._sim_script, self._stop)

    # --- publishing ----------------------------------------------------------------------------

    def _on_events(self, events):
        now = self.get_clock().now().to_msg()
        deadman_changed = False
        for event in events:
            msg = self._event_type(event=int(event.code), source=self.port, detail=event.detail)
            msg.header.stamp = now
            if not self._publish(self._event_publisher, msg):
                return
            if event.code is PedalEventCode.DEVICE_FAULT:
                self.get_logger().error(f'pedal fault: {event.detail}')
            else:
                self.get_logger().info(f'pedal {event.code.name.lower()}: {event.detail}')
            deadman_changed |= event.code in (PedalEventCode.DEADMAN_PRESSED, PedalEventCode.DEADMAN_RELEASED)
        if deadman_changed:
            self._publish_deadman()

    def _publish_deadman(self):
        held, reason, _, _, _ = self.reader.snapshot()
        msg = self._deadman_type(held=held, reason=reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish(self._deadman_publisher, msg)

    def _publish(self, publisher, msg):
        # Called from the reader thread too; after shutdown has begun publishing is skipped.
        with self._publish_lock:
            if self._stop.is_set():
                return False
            try:
                publisher.publish(msg)
            except Exception:
                if self._stop.is_set() or not self.context.ok():
                    return False
                raise
        return True

    def _diagnostic_status(self):
        held, reason, connected, fault, counters = self.reader.snapshot()
        values = dict(counters)
        values.update({'connected': connected, 'deadman_held': held, 'deadman_reason': reason,
                       'firmware': self.reader.state.firmware, 'fault': fault})
        if not connected:
            return 'ERROR', f'not connected: {fault or "opening"}', values
        if fault:
            return 'ERROR', fault, values
        return 'OK', f'connected, deadman {"held" if held else "released"}', values

    def close(self):
        """Stop the reader and the simulated device."""
        with self._publish_lock:
            self._stop.set()
        self.reader.stop()
        if self.device is not None:
            self.device.close()


def main(args=None):
    """Run the pedal node."""
    return run_node(PedalNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
