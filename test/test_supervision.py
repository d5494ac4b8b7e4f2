"""Supervision of node graphs: nothing outlives a stopped or killed launcher; one parameter check for all.

* Plain parts without ROS: the supervisor watch, the stop signals, the parent-death signal on a real
  process tree whose middle process is SIGKILLed, cut-off bag detection, typed profile values.
* Nodes as real processes: an unknown parameter name refuses the start; an integer where a float is
  expected is accepted; the display's port argument takes effect (a given port, and 0 when the
  preferred port is busy); SIGINT or SIGTERM lets the callback that is running finish before the
  node's close() (no exception raised into it).
* The launchers as real processes (slow): ``up autonomous_sim``, ``demo`` and ``record`` get SIGINT,
  SIGTERM, SIGHUP or SIGKILL mid-run; 3 s later no process of the graph is alive, arm control stopped
  the arm, the display's port is free, no traceback was printed, and the demonstration bag is complete
  or repaired by the printed command with every frame the recorder acknowledged.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from echo_guidance.nodes._common import ParameterValidationError, ParamSpec
from echo_guidance.up.supervise import (
    StopRequested,
    StopSignals,
    SupervisorWatch,
    child_preexec,
    unfinished_bags,
)


def alive(pid):
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def children_of(pid):
    """The pids of ``pid``'s children."""
    result = subprocess.run(['pgrep', '-P', str(pid)], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


# ------------------------------------------------------------------------------------------ plain parts


def test_supervisor_watch_says_when_the_parent_changed():
    parent = [100]
    watch = SupervisorWatch(pid=100, getppid=lambda: parent[0])
    assert watch.supervised and not watch.gone()
    parent[0] = 1  # re-parented to init: the launcher died
    assert watch.gone() and 'pid 100' in watch.describe()
    assert not SupervisorWatch(pid=None, getppid=lambda: 1).gone()  # started by hand: nothing to watch


def test_stop_signals_raise_once_and_never_during_the_stop():
    with StopSignals() as signals:
        with pytest.raises(StopRequested) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        assert raised.value.name == 'SIGTERM' and raised.value.exit_status == 143
        os.kill(os.getpid(), signal.SIGHUP)  # a second signal is only counted
        time.sleep(0.05)
        assert signals.count == 2 and signals.received == signal.SIGTERM
    with StopSignals() as signals:
        with StopSignals.holding():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signals.received == signal.SIGINT  # noted, not raised while holding
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


LAUNCHER = '''
import subprocess, sys, time
from echo_guidance.up.supervise import child_preexec
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], preexec_fn=child_preexec(),
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
'''


def test_a_sigkilled_launcher_takes_its_children_with_it():
    launcher = subprocess.Popen(
        [sys.executable, '-c', LAUNCHER], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    child = int(launcher.stdout.readline())
    try:
        assert alive(child)
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 3.0
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(child), 'the child outlived its SIGKILLed launcher'
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_launcher_is_already_gone_does_not_run(tmp_path):
    marker = tmp_path / 'ran'
    preexec = child_preexec(parent_pid=1)  # "the launcher" is not our parent any more
    result = subprocess.run(
        [sys.executable, '-c', f'open({str(marker)!r}, "w")'], preexec_fn=preexec, capture_output=True
    )
    assert result.returncode == 1 and not marker.exists()


def test_unfinished_bags_are_the_ones_in_progress(tmp_path):
    def bag(name, state):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f'{name}_0.mcap').write_bytes(b'\x89MCAP0\r\n')
        if state is not None:
            custom = {'echo_guidance.recording_state': state}
            document = {'rosbag2_bagfile_information': {'custom_data': custom}}
            (folder / 'metadata.yaml').write_text(yaml.safe_dump(document))
        return folder

    cut_off, _, no_metadata = bag('a', 'in_progress'), bag('b', 'complete'), bag('c', None)
    assert unfinished_bags(tmp_path) == [cut_off, no_metadata]
    assert unfinished_bags(tmp_path / 'missing') == []


def test_param_spec_types_accept_an_integer_for_a_float_and_nothing_else():
    rate = ParamSpec('rate_hz', 30.0, 'rate', min_value=0.0, max_value=1000.0)
    assert rate.validate(30) == 30.0 and isinstance(rate.validate(30), float)
    for bad in ('30', True, [30.0]):
        with pytest.raises(ParameterValidationError, match="'rate_hz'"):
            rate.validate(bad)
    with pytest.raises(ParameterValidationError, match='must be <= 1000.0'):
        rate.validate(5000)
    port = ParamSpec('port', 8765, 'port', min_value=0, max_value=65535)
    with pytest.raises(ParameterValidationError, match='expected an integer, got float'):
        port.validate(8765.0)
    pose = ParamSpec('start', [0.0], 'pose')
    assert pose.validate([1, 2, 3]) == [1.0, 2.0, 3.0]


def test_profile_values_are_written_as_the_node_parameter_type(tmp_path):
    from echo_guidance.recording.profiles import NodeSpec, node_command
    from echo_guidance.up.params import typed_value

    defaults = {'port': 8765, 'rate': 1.0, 'id': ''}
    specs = {name: ParamSpec(name, default, name) for name, default in defaults.items()}
    assert typed_value(specs['port'], '0') == 0
    assert typed_value(specs['rate'], 30) == 30.0 and typed_value(specs['rate'], '30') == 30.0
    assert typed_value(specs['id'], '042') == '042'  # text stays text
    spec = NodeSpec('display', 'display', ('display.yaml',), {'port': '{display_port}'})
    node_command(spec, {'display_port': '0'}, params_dir=tmp_path)
    written = yaml.safe_load((tmp_path / 'display.parameters.yaml').read_text())
    assert written == {'display': {'ros__parameters': {'port': 0}}}


def test_demo_falls_back_to_any_free_port_when_the_preferred_one_is_busy():
    from echo_guidance.demo.run import free_display_port

    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert free_display_port(port) == 0
    assert free_display_port(port) == port


# ------------------------------------------------------------------------------------- nodes, checked


def test_a_node_refuses_an_unknown_parameter_and_accepts_an_integer_for_a_float(processes, tmp_path):
    params = tmp_path / 'pedal.yaml'
    params.write_text(yaml.safe_dump({'pedal': {'ros__parameters': {'port': 'sim:held', 'deadman_rate_hz': 20,
                                                                   'made_up_rate': 3}}}))
    command = [sys.executable, '-m', 'echo_guidance.nodes.pedal', '--ros-args', '--params-file', str(params)]
    node = processes.start(command, name='pedal_unknown')
    assert node.wait(timeout=60) == 2, node.output()
    assert "unknown parameter(s) ['made_up_rate']" in node.output()
    assert 'reading pedal' not in node.output()  # refused before the device was opened
    pedal = {'port': 'sim:held', 'deadman_rate_hz': 20}  # an integer for a float parameter
    params.write_text(yaml.safe_dump({'pedal': {'ros__parameters': pedal}}))
    node = processes.start(command, name='pedal_integer')
    node.wait_for_output('pedal deadman_pressed', timeout=60)
    assert node.popen.poll() is None, node.output()


DISPLAY_PROFILE = {
    'description': 'the display alone',
    'arguments': {'display_port': {'default': '8765', 'description': 'port'}},
    'nodes': [
        {'name': 'display', 'params_files': ['display.yaml'], 'parameters': {'port': '{display_port}'}}
    ],
}


@pytest.mark.parametrize('given', ['free', 'zero_while_busy'])
def test_the_display_port_argument_takes_effect(given, tmp_path, ros_env):
    profile = tmp_path / 'display_only.yaml'
    profile.write_text(yaml.safe_dump(DISPLAY_PROFILE))
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        if given == 'free':
            with socket.socket() as probe:
                probe.bind(('127.0.0.1', 0))
                port = probe.getsockname()[1]
        else:
            port = 0
        result = subprocess.run(
            [sys.executable, '-m', 'echo_guidance.cli', 'up', str(profile), '--arg', f'display_port={port}',
             '--output-dir', str(tmp_path / 'out'), '--duration', '6'],
            cwd=REPO_ROOT, env=ros_env, capture_output=True, text=True, timeout=120,
        )
    log = (tmp_path / 'out' / 'logs' / 'display.log').read_text()
    assert result.returncode == 0, result.stdout + result.stderr + log
    served = int(re.search(r'display serving http://127\.0\.0\.1:(\d+)/', log).group(1))
    if given == 'free':
        assert served == port
    else:
        assert served not in (0, busy_port, 8765)


# ---------------------------------------------------------------------------- launchers, stopped mid-run


def _watch_status(context):
    from recording_helpers import Watcher

    return Watcher(context)


def _acknowledged(watcher):
    return max((s.frames_recorded for s in watcher.statuses), default=0)


LAUNCHERS = {
    'up': lambda tmp, model: ['up', 'autonomous_sim', '--arg', f'model={model}', '--arg', 'display_port=0',
                              '--output-dir', str(tmp / 'out')],
    'demo': lambda tmp, model: ['demo', '--model', str(model), '--duration', '120',
                                '--output-dir', str(tmp / 'out')],
    'record': lambda tmp, model: ['record', '--profile', 'bench_record', '--output-dir', str(tmp / 'out'),
                                  '--demonstrations', '1', '--duration', '120'],
}


@pytest.mark.slow
@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL'])
@pytest.mark.parametrize('command', sorted(LAUNCHERS))
def test_a_stopped_or_killed_launcher_leaves_nothing_running(command, sig, tmp_path, processes, rclpy_context,
                                                             wait_until):
    from guidance_helpers import write_graph_model

    from echo_guidance.bags import DemonstrationBagReader

    model = write_graph_model(tmp_path / 'constant.onnx', size=128)  # always 10 mm ahead: the arm moves
    argv = [sys.executable, '-m', 'echo_guidance.cli', *LAUNCHERS[command](tmp_path, model)]
    launcher = processes.start(argv, name=command, cwd=REPO_ROOT)
    watcher = _watch_status(rclpy_context) if command != 'up' else None
    logs = list((tmp_path / 'out').rglob('logs'))

    def mid_run():
        if watcher is not None:
            watcher.spin_for(0.1)
        if launcher.popen.poll() is not None:
            raise AssertionError(f'{command} ended early:\n{launcher.output()}')
        if command == 'record':
            return _acknowledged(watcher) >= 30
        arm_logs = list((tmp_path / 'out').rglob('arm_control.log'))
        return arm_logs and 'armed -> moving' in arm_logs[0].read_text()

    wait_until(mid_run, 120, message=f'{command} mid-run (arm moving / frames recorded)')
    graph = children_of(launcher.popen.pid)
    assert len(graph) >= 3, graph
    display_ports = [int(p) for p in re.findall(r'display serving http://127\.0\.0\.1:(\d+)/', ''.join(
        log.read_text() for log in (tmp_path / 'out').rglob('display.log')))]

    os.kill(launcher.popen.pid, getattr(signal, sig))
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and (launcher.popen.poll() is None or any(alive(p) for p in graph)):
        if watcher is not None:
            watcher.spin_for(0.05)
        else:
            time.sleep(0.05)
    survivors = [p for p in graph if alive(p)]
    output = launcher.output()
    assert not survivors, f'{survivors} alive 3 s after {sig} to {command}:\n{output}'
    status = launcher.popen.wait(timeout=1)
    if sig == 'SIGKILL':
        assert status == -9
    else:
        assert status == 128 + getattr(signal, sig), output
        assert f'{sig} received' in output, output
        assert 'Traceback' not in output, output
    logs = {p.name: p.read_text() for p in (tmp_path / 'out').rglob('*.log')}
    if command in ('up', 'demo'):
        assert 'shut down: arm stopped' in logs['arm_control.log'], logs['arm_control.log']
        for port in display_ports:
            with socket.socket() as probe:
                probe.bind(('127.0.0.1', port))  # free again
    if command == 'up':
        return
    acknowledged = _acknowledged(watcher)
    assert acknowledged > 0
    bags = [p.parent for p in (tmp_path / 'out').rglob('*.mcap') if p.parent.name != 'guidance_control']
    assert len(bags) == 1, bags
    (bag,) = bags
    if bag in unfinished_bags(bag.parent):
        assert f'echo-guidance bag repair {bag}' in output, output
        repaired = subprocess.run([sys.executable, '-m', 'echo_guidance.cli', 'bag', 'repair', str(bag)],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    with DemonstrationBagReader(bag) as reader:
        frames = reader.message_counts['/us/image']
    assert frames >= acknowledged, (frames, acknowledged)


ORPHANING_LAUNCHER = '''
import os, subprocess, sys, time
# Started without the parent-death signal: only the node's own watch can notice the launcher going.
env = dict(os.environ, ECHO_GUIDANCE_SUPERVISOR_PID=str(os.getpid()))
log = open(os.environ['NODE_LOG'], 'wb')
node = subprocess.Popen(sys.argv[1:], env=env, stdout=log, stderr=subprocess.STDOUT)
print(node.pid, flush=True)
time.sleep(300)
'''


def test_an_orphaned_arm_control_stops_the_arm_and_shuts_down(tmp_path, ros_env, wait_until):
    from recording_helpers import node_args

    log = tmp_path / 'arm_control.log'
    start = 'kinematic.start_pose:=[500.0, 0.0, 200.0, 180.0, 0.0, 90.0]'
    argv = node_args(
        'arm_control', 'backend:=kinematic', start, files=('arm_control.yaml',), params_dir=tmp_path
    )
    launcher = subprocess.Popen(
        [sys.executable, '-c', ORPHANING_LAUNCHER, *argv],
        stdout=subprocess.PIPE, text=True, env={**ros_env, 'NODE_LOG': str(log)}, cwd=REPO_ROOT,
    )
    node = int(launcher.stdout.readline())
    try:
        wait_until(lambda: 'arm control with' in log.read_text(), 60, message='arm control running')
        launcher.kill()
        launcher.wait()
        wait_until(lambda: not alive(node), 10, message='the orphaned arm control shutting down')
        text = log.read_text()
        assert 'supervisor (launcher pid' in text and 'shut down: arm stopped' in text, text
    finally:
        if alive(node):
            os.kill(node, signal.SIGKILL)


@pytest.mark.slow
def test_a_recorder_crash_names_the_cut_off_bag_and_its_repair_command(tmp_path, processes, rclpy_context,
                                                                        wait_until):
    from echo_guidance.bags import DemonstrationBagReader

    argv = [sys.executable, '-m', 'echo_guidance.cli', 'record', '--profile', 'bench_record', '--output-dir',
            str(tmp_path / 'out'), '--demonstrations', '1', '--duration', '120']
    launcher = processes.start(argv, name='record', cwd=REPO_ROOT)
    watcher = _watch_status(rclpy_context)

    def recording():
        watcher.spin_for(0.1)
        return _acknowledged(watcher) >= 30

    wait_until(recording, 120, message='30 frames acknowledged')
    recorder = next(p for p in children_of(launcher.popen.pid)
                    if 'echo_guidance.nodes.recorder' in Path(f'/proc/{p}/cmdline').read_text())
    os.kill(recorder, signal.SIGKILL)
    acknowledged = _acknowledged(watcher)
    assert launcher.wait(timeout=30) == 1
    output = launcher.output()
    assert 'recorder exited with status -9' in output and 'Traceback' not in output, output
    (bag,) = [p.parent for p in (tmp_path / 'out').rglob('*.mcap')]
    assert f'repair it with: echo-guidance bag repair {bag}' in output, output
    repaired = subprocess.run([sys.executable, '-m', 'echo_guidance.cli', 'bag', 'repair', str(bag)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    with DemonstrationBagReader(bag) as reader:
        assert reader.message_counts['/us/image'] >= acknowledged


CRITICAL_SECTION_NODE = '''
import sys, time
from rclpy.node import Node
from echo_guidance.nodes._common import run_node

class CriticalSection(Node):
    def __init__(self):
        super().__init__('critical_section')
        self.create_timer(0.05, self.work)

    def work(self):
        print('BEGIN', flush=True)
        start = time.monotonic()
        while time.monotonic() - start < 1.0:  # Python bytecode: where an exception raised by a handler lands
            pass
        print('END', flush=True)

    def close(self):
        print('CLOSE', flush=True)

sys.exit(run_node(CriticalSection))
'''


@pytest.mark.parametrize('sig', ['SIGINT', 'SIGTERM'])
def test_a_stop_signal_lets_the_running_callback_finish_before_close(sig, ros_env, wait_until):
    """A recorder writing a bag message or arm control sending a command is not cut off mid-callback."""
    node = subprocess.Popen(
        [sys.executable, '-c', CRITICAL_SECTION_NODE],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert node.stdout.readline().strip() == 'BEGIN'
        node.send_signal(getattr(signal, sig))
        output, _ = node.communicate(timeout=20)
    finally:
        node.kill()
    lines = output.split()
    assert lines[:2] == ['END', 'CLOSE'], output
    assert node.returncode == 0, output
