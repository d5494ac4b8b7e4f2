"""Real rclpy tests of the pedal node: the node runs in a subprocess on a pty driven by the test."""

import os
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip('rclpy')
msg_module = pytest.importorskip('echo_guidance.msg')

from echo_guidance.pedal.device_sim import PtyPedalDevice  # noqa: E402


class PedalHarness:
    """The pedal node as a process on an emulated device, and a listening node in the test."""

    def __init__(self, domain_id, port_param, extra_params=()):
        from rclpy.executors import SingleThreadedExecutor

        from echo_guidance.nodes._common import EVENT_QOS
        self.domain_id = domain_id
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node('pedal_test', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.events, self.deadman = [], []
        self.node.create_subscription(msg_module.PedalEvent, '/pedal/event', self.events.append, EVENT_QOS)
        self.node.create_subscription(msg_module.Deadman, '/pedal/deadman',
                                      lambda m: self.deadman.append((m, time.monotonic())), 10)
        args = [sys.executable, '-m', 'echo_guidance.nodes.pedal', '--ros-args', '-p', f'port:={port_param}',
                '-p', 'heartbeat_timeout_s:=0.4', '-p', 'reconnect_interval_s:=0.1']
        for p in extra_params:
            args += ['-p', p]
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id), PYTHONUNBUFFERED='1')
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)

    def spin_until(self, predicate, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.process.poll() is not None:
                raise AssertionError(f'pedal node exited ({self.process.returncode}) waiting for {what}:\n'
                                     f'{self.process.stdout.read()}')
            self.executor.spin_once(timeout_sec=0.02)
        raise AssertionError(f'timed out after {timeout_s} s waiting for {what}; events: '
                             f'{[(e.event, e.detail) for e in self.events]}')

    def mark(self):
        """Spin briefly to take in pending messages; return the index of the next event."""
        self.executor.spin_once(timeout_sec=0.01)
        return len(self.events)

    def wait_event(self, code, since, timeout_s=5.0, detail=''):
        """Wait for an event ``code`` whose detail contains ``detail`` among events[since:]."""
        def matches():
            return [e for e in self.events[since:] if e.event == code and detail in e.detail]
        self.spin_until(lambda: bool(matches()), timeout_s, f'event {code} {detail!r}')
        return matches()[0]

    def wait_deadman(self, held, reason=None, timeout_s=5.0):
        def ok():
            if not self.deadman:
                return False
            last = self.deadman[-1][0]
            return last.held == held and (reason is None or last.reason == reason)
        self.spin_until(ok, timeout_s, f'deadman held={held} reason={reason!r}')

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                output, _ = self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                output, _ = self.process.communicate()
        else:
            output = self.process.stdout.read()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        return self.process.returncode, output


PE = msg_module.PedalEvent


def test_pedal_node_events_deadman_and_unplug(ros_domain_id):
    device = PtyPedalDevice(heartbeat_hz=20).start()
    h = PedalHarness(ros_domain_id, device.port)
    try:
        # Discovery: wait until the heartbeat reaches the test (then events are matched too).
        h.wait_deadman(held=False, reason='released', timeout_s=30)
        mark = h.mark()
        device.press()
        pressed = h.wait_event(PE.DEADMAN_PRESSED, mark)
        assert pressed.source == device.port
        h.wait_deadman(held=True, reason='')
        mark = h.mark()
        device.target()
        device.rec_start()
        device.rec_stop()
        h.wait_event(PE.RECORD_STOP, mark)
        assert [e.event for e in h.events[mark:]] == [PE.TARGET_REACHED, PE.RECORD_START, PE.RECORD_STOP]

        # Heartbeat rate: about deadman_rate_hz (20 Hz) while held.
        t0 = time.monotonic()
        n0 = len(h.deadman)
        h.spin_until(lambda: time.monotonic() - t0 > 1.0, 3, 'one second')
        rate = (len(h.deadman) - n0) / (time.monotonic() - t0)
        assert 12 < rate < 30, rate

        # Garbage releases the deadman; it needs a release before a new press counts.
        mark = h.mark()
        device.send_raw(b'EG1,99,DEADMAN,1*00\n')
        fault = h.wait_event(PE.DEVICE_FAULT, mark, detail='garbage')
        assert 'checksum' in fault.detail
        h.wait_event(PE.DEADMAN_RELEASED, mark)
        h.wait_deadman(held=False, reason='garbage on line')
        device.press()  # still pressed in the device's view: not enough
        h.spin_until(lambda: any(m.reason == 'waiting for release after fault' for m, _ in h.deadman[-5:]),
                     3, 'the node to wait for a release')
        assert not h.deadman[-1][0].held
        device.release()
        device.press()
        h.wait_deadman(held=True)

        # A hung device (no more lines) times out.
        mark = h.mark()
        device.mute()
        h.wait_event(PE.DEVICE_FAULT, mark, detail='timeout')
        h.wait_event(PE.DEADMAN_RELEASED, mark)
        h.wait_deadman(held=False, reason='timeout')
        device.unmute()
        device.release()
        device.press()
        h.wait_deadman(held=True)

        # Unplug: fault + deadman released, node keeps running and reports it.
        mark = h.mark()
        device.unplug()
        h.wait_event(PE.DEVICE_FAULT, mark, detail='unplugged')
        released = h.wait_event(PE.DEADMAN_RELEASED, mark)
        assert 'unplugged' in released.detail
        h.wait_deadman(held=False, reason='unplugged')
        assert h.process.poll() is None
        # The heartbeat keeps coming, saying released.
        n = len(h.deadman)
        h.spin_until(lambda: len(h.deadman) > n + 3, 3, 'heartbeats after unplug')
        assert not any(m.held for m, _ in h.deadman[n:])
    finally:
        rc, output = h.stop()
        device.close()
    assert rc == 0, output
    assert 'pedal fault: unplugged' in output


def test_simulated_held_pedal(ros_domain_id):
    h = PedalHarness(ros_domain_id, 'sim:held')
    try:
        h.wait_deadman(held=True, timeout_s=30)
    finally:
        rc, output = h.stop()
    assert rc == 0, output


def test_bad_port_parameter_exits_with_reason(ros_env):
    args = [sys.executable, '-m', 'echo_guidance.nodes.pedal', '--ros-args', '-p', 'port:=sim:nope']
    result = subprocess.run(args, env=ros_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "simulated ports are 'sim:held'" in result.stderr
