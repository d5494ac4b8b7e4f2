"""Start a profile's helper processes and nodes as separate processes, watch them, stop them.

There is no ``ros2 launch`` in this environment (docs/recording.md), so ``echo-guidance record``
and ``echo-guidance bench record`` start the nodes themselves, the same way the launch files in
``launch/`` describe them. Each process writes its output to ``<log_dir>/<name>.log``.

Supervision (:mod:`echo_guidance.up.supervise`): every child leads its own process group, gets
SIGTERM from the kernel when the launcher dies (SIGKILL included) and knows the launcher's pid
(``ECHO_GUIDANCE_SUPERVISOR_PID``). :meth:`ProfileRun.stop` stops arm control first (the arm must
stop before anything it depends on goes), then the other nodes together (the recorder closes its
bag), then the helper processes; each phase SIGINT, then SIGTERM, then SIGKILL to the process group.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from echo_guidance.recording.profiles import node_command, process_command, substitute
from echo_guidance.up.supervise import StopSignals, child_preexec, supervised_env, unfinished_bags

# Seconds a phase of the stop waits after SIGINT, then after SIGTERM, before SIGKILL. A node stops in
# well under a second; the whole graph must be gone within 3 s of a stop signal to the launcher.
STOP_GRACE_S = (1.2, 0.4)
ARM_CONTROL_MODULE = 'arm_control'


class LaunchError(RuntimeError):
    """A process of the profile failed to start or died."""


class ManagedProcess:
    """One started process and its log file."""

    def __init__(self, name, argv, log_path, env, node=None):
        """Start ``argv`` with stdout and stderr going to ``log_path``, tied to this process's life.

        ``node`` is the node module (``arm_control``, ``recorder``, ...) or None for a helper process.
        """
        self.name = name
        self.node = node
        self.argv = list(argv)
        self.log_path = Path(log_path)
        with open(self.log_path, 'wb') as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=supervised_env(env),
                start_new_session=True,  # its own process group: a stop reaches what it started
                preexec_fn=child_preexec(),  # SIGTERM when this process dies, even by SIGKILL
            )

    @property
    def pid(self):
        """The process id."""
        return self.popen.pid

    def running(self):
        """Whether the process is still running."""
        return self.popen.poll() is None

    def output(self):
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors='replace')
        except OSError:
            return ''

    def tail(self, lines=15):
        """The last lines of the output."""
        return '\n'.join(self.output().splitlines()[-lines:])

    def wait_for(self, pattern, timeout_s):
        """Wait until a line matches ``pattern``; return the match's named groups.

        Raises:
            LaunchError: the process exited first or the time ran out (the message holds its output).
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            found = regex.search(self.output())
            if found:
                return found.groupdict()
            if not self.running():
                raise LaunchError(
                    f'{self.name} exited ({self.popen.returncode}) before printing /{pattern}/:\n'
                    f'{self.tail()}'
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f'{self.name} did not print /{pattern}/ within {timeout_s:.0f} s:\n{self.tail()}'
                )
            time.sleep(0.05)

    def send(self, sig):
        """Send ``sig`` to the process (SIGKILL: to its whole process group) if it still runs."""
        if sig == signal.SIGKILL:
            self.kill_group()
        elif self.running():
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill_group(self):
        """SIGKILL the process and whatever is left in its process group (what it started itself)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.running():
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass

    def stop(self, grace_s=5.0):
        """Stop the process: SIGINT, then SIGTERM, then SIGKILL; return its exit status."""
        return stop_together([self], (grace_s, grace_s))[self.name]


def stop_together(processes, grace_s=STOP_GRACE_S):
    """Stop ``processes`` at once: SIGINT, SIGTERM after ``grace_s[0]``, SIGKILL after ``grace_s[1]`` more.

    Returns {name: exit status}; their process groups are SIGKILLed afterwards (leftover children).
    """
    for sig, wait_s in ((signal.SIGINT, grace_s[0]), (signal.SIGTERM, grace_s[1]), (signal.SIGKILL, 5.0)):
        running = [p for p in processes if p.running()]
        if not running:
            break
        for process in running:
            process.send(sig)
        deadline = time.monotonic() + wait_s
        while any(p.running() for p in running) and time.monotonic() < deadline:
            time.sleep(0.02)
    for process in processes:
        process.kill_group()
    return {process.name: process.popen.wait() for process in processes}


class ProfileRun:
    """Run a record profile: helper processes first (waiting for their ready lines), then the nodes.

    Args:
        profile: a RecordProfile.
        log_dir: folder for the processes' log files.
        values: substitutions for the profile's ``{placeholders}`` (ready-pattern groups are added).
        overrides: {node name: {parameter: value}} winning over the profile.
        env: environment for the processes (default: this one).
    """

    def __init__(self, profile, log_dir, values=None, overrides=None, env=None):
        """Prepare; nothing starts before :meth:`start`."""
        self.profile = profile
        self.log_dir = Path(log_dir)
        # Profile arguments (echo-guidance up) give defaults; the caller's values win.
        self.values = {**{a.name: a.default for a in getattr(profile, 'arguments', ())}, **(values or {})}
        self.overrides = overrides or {}
        unknown = set(self.overrides) - {n.name for n in profile.nodes}
        if unknown:
            raise LaunchError(
                f'overrides for nodes {sorted(unknown)} that profile {profile.name} does not run'
            )
        self.env = dict(env or os.environ)
        self.processes = []
        self.started_at = None

    def start(self):
        """Start everything; on failure stop what was started and raise LaunchError."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        try:
            for spec in self.profile.processes:
                process = self._start(spec.name, process_command(spec))
                if spec.ready_pattern:
                    groups = process.wait_for(spec.ready_pattern, spec.ready_timeout_s)
                    self.values.update({f'{spec.name}.{key}': value for key, value in groups.items()})
            for spec in self.profile.nodes:
                self._start(
                    spec.name,
                    node_command(spec, self.values, self.overrides.get(spec.name), params_dir=self.log_dir),
                    node=spec.node,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, name, argv, node=None):
        process = ManagedProcess(name, argv, self.log_dir / f'{name}.log', self.env, node=node)
        self.processes.append(process)
        return process

    def __getitem__(self, name):
        """The ManagedProcess called ``name``."""
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def check_running(self):
        """Raise LaunchError naming the first process that has exited."""
        for process in self.processes:
            if not process.running():
                raise LaunchError(
                    f'{process.name} exited with status {process.popen.returncode}:\n{process.tail()}'
                )

    def stop(self, grace_s=STOP_GRACE_S):
        """Stop everything, in order; return {name: exit status} in the order they were stopped.

        Arm control first (the arm stops while its inputs still run), then the other nodes together
        (the recorder finalises its bag), then the helper processes (franky-sim serves arm control).
        Stop signals to this process are noted but do not interrupt it (:class:`StopSignals`).
        """
        with StopSignals.holding():
            arm = [p for p in self.processes if p.node == ARM_CONTROL_MODULE]
            nodes = [p for p in reversed(self.processes) if p.node not in (None, ARM_CONTROL_MODULE)]
            helpers = [p for p in reversed(self.processes) if p.node is None]
            results = {}
            for phase in (arm, nodes, helpers):
                if phase:
                    results.update(stop_together(phase, grace_s))
            return results

    def recorder_folders(self):
        """The output folders of the profile's recorder nodes (placeholders filled)."""
        folders = []
        for spec in self.profile.nodes:
            if spec.node != 'recorder':
                continue
            value = {**spec.parameters, **self.overrides.get(spec.name, {})}.get('output_dir')
            if value:
                try:
                    folders.append(Path(substitute(value, self.values)))
                except ValueError:
                    continue
        return folders

    def cut_off_bags(self):
        """Bags this run's recorders left "in progress" (killed before closing them)."""
        found = []
        for folder in self.recorder_folders():
            found += unfinished_bags(folder, since=self.started_at)
        return found

    def __enter__(self):
        """Start the profile."""
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        """Stop the profile."""
        self.stop()
        return False
