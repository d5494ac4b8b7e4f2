"""Start a profile's helper processes and nodes as separate processes, watch them, stop them.

There is no ``ros2 launch`` in this environment (docs/recording.md), so ``echo-guidance record``
and ``echo-guidance bench record`` start the nodes themselves, the same way the launch files in
``launch/`` describe them. Each process writes its output to ``<log_dir>/<name>.log``.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from echo_guidance.recording.profiles import node_command, process_command


class LaunchError(RuntimeError):
    """A process of the profile failed to start or died."""


class ManagedProcess:
    """One started process and its log file."""

    def __init__(self, name, argv, log_path, env):
        """Start ``argv`` with stdout and stderr going to ``log_path``."""
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        with open(self.log_path, 'wb') as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
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

    def stop(self, grace_s=5.0):
        """Stop the process: SIGINT, then SIGTERM, then SIGKILL; return its exit status."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if not self.running():
                break
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.wait()


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

    def start(self):
        """Start everything; on failure stop what was started and raise LaunchError."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
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
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, name, argv):
        process = ManagedProcess(name, argv, self.log_dir / f'{name}.log', self.env)
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

    def stop(self, grace_s=5.0):
        """Stop the nodes (in reverse order), then the helper processes; return {name: exit status}."""
        return {process.name: process.stop(grace_s) for process in reversed(self.processes)}

    def __enter__(self):
        """Start the profile."""
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        """Stop the profile."""
        self.stop()
        return False
