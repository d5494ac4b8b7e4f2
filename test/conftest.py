"""Shared pytest set-up for echo_guidance's tests; what other test files may use.

Markers:
    ``@pytest.mark.slow``: a test that takes more than ~20 s on the 2-core dev machine.

Fixtures for tests that talk ROS 2 (in this process or across processes):
    ``ros_domain_id``: a ROS_DOMAIN_ID (1..99) that no other test process on this machine holds while
        the test runs (a lock file per id under the temp dir), set in ``os.environ`` together with
        ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` so DDS traffic stays on loopback. Request it before
        calling ``rclpy.init()`` or starting subprocesses. Other people run tests on this machine at the
        same time: never use the default domain.
    ``ros_env``: a copy of ``os.environ`` with that domain, for ``subprocess`` calls.
    ``rclpy_context``: an initialised ``rclpy.Context`` on that domain, shut down after the test. Pass
        it on: ``rclpy.create_node(name, context=rclpy_context)``, ``SingleThreadedExecutor(context=...)``.
    ``processes``: a :class:`ProcessGroup` that starts programs with ``ros_env`` (``sys.executable`` for
        Python), logs each one's stdout+stderr to a file, and stops them all after the test (SIGINT,
        then SIGTERM, then SIGKILL); their logs are printed at teardown, so a failing test shows them.
    ``wait_until``: :func:`wait_until`, for polling a condition (discovery, a file, a message count)
        instead of sleeping blindly.
    ``ros_peer``: the path of ``test/ros_peer.py``, a stand-in for ``ros2 topic pub/echo`` (see its
        docstring); ``ros_peer.message_to_dict`` / ``fill_message`` can be imported by tests too.
    ``repo_root``: the repository root (a ``Path``).

Plain helpers (``from conftest import ...``): ``REPO_ROOT``, :func:`wait_until`, :func:`files_under`,
:class:`ProcessGroup`.

Example::

    def test_node_publishes(processes, ros_peer, wait_until):
        echo = processes.start([ros_peer, 'echo', 'echo_guidance/msg/Guidance', '/guidance', '--count', '1'])
        node = processes.start_console_script('guidance_node', '--ros-args', '-p', 'rate:=5.0')
        assert echo.wait(timeout=30) == 0, echo.output()
"""

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ROS_PEER = Path(__file__).resolve().parent / 'ros_peer.py'
# Within the ROS 2 docs' safe range 0..101 (ports clear of Linux's ephemeral range), leaving out 0, the
# default a live system uses, and 100..101, where ad-hoc "pid % 100 + 100" choices start.
DOMAIN_IDS = range(1, 100)
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / 'echo_guidance-ros-domain-locks'


def pytest_configure(config):
    """Register the project's markers."""
    config.addinivalue_line('markers', 'slow: takes more than ~20 s on the 2-core dev machine')


def wait_until(condition, timeout, interval=0.05, message='condition'):
    """Poll ``condition()`` until it returns a truthy value and return that value.

    Raises:
        TimeoutError: ``timeout`` seconds passed first; the error names ``message`` and the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'{message} not met within {timeout} s')
        time.sleep(interval)


def files_under(folder):
    """Return the sorted paths, relative to ``folder``, of the files below it (``__pycache__`` left out)."""
    folder = Path(folder)
    return sorted(p.relative_to(folder) for p in folder.rglob('*')
                  if p.is_file() and '__pycache__' not in p.relative_to(folder).parts)


def _lock_free_domain_id():
    """Return (domain id, open lock file) for a domain id no other process on this machine holds."""
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % len(DOMAIN_IDS)
    for offset in range(len(DOMAIN_IDS)):
        domain_id = DOMAIN_IDS[(start + offset) % len(DOMAIN_IDS)]
        lock = open(DOMAIN_LOCK_DIR / f'{domain_id}.lock', 'w')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return domain_id, lock
    raise RuntimeError(
        f'all ROS domain ids {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} are held by other tests')


@pytest.fixture
def repo_root():
    """Return the repository root."""
    return REPO_ROOT


@pytest.fixture
def ros_domain_id(monkeypatch):
    """Hold a ROS_DOMAIN_ID no other test process uses, and set it (loopback only) in os.environ."""
    domain_id, lock = _lock_free_domain_id()
    monkeypatch.setenv('ROS_DOMAIN_ID', str(domain_id))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    monkeypatch.delenv('ROS_STATIC_PEERS', raising=False)
    monkeypatch.delenv('ROS_LOCALHOST_ONLY', raising=False)
    try:
        yield domain_id
    finally:
        lock.close()


@pytest.fixture
def ros_env(ros_domain_id):
    """Return an environment for subprocesses on the test's ROS domain."""
    return dict(os.environ)


@pytest.fixture
def rclpy_context(ros_domain_id):
    """Return an rclpy context initialised on the test's domain; it is shut down after the test."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture(name='wait_until')
def wait_until_fixture():
    """Return :func:`wait_until`."""
    return wait_until


@pytest.fixture
def ros_peer():
    """Return the path of test/ros_peer.py (run it with ``processes.start([ros_peer, ...])``)."""
    return str(ROS_PEER)


class ManagedProcess:
    """One program started by a :class:`ProcessGroup`, with its output in a log file."""

    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.log_path = log_path

    def output(self):
        """Return everything the program wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors='replace')

    def wait(self, timeout):
        """Wait for the program to exit and return its exit status.

        Raises:
            TimeoutError: it is still running after ``timeout`` seconds (its output is in the message).
        """
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f'{self.name} still running after {timeout} s; output:\n{self.output()}') from None

    def wait_for_output(self, text, timeout):
        """Wait until ``text`` appears in the output; fail early if the program exits without it."""
        def seen():
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                raise AssertionError(f'{self.name} exited ({self.popen.returncode}) before printing '
                                     f'{text!r}; output:\n{self.output()}')
            return False
        wait_until(seen, timeout, message=f'{self.name} printing {text!r}')

    def stop(self, grace=5.0):
        """Stop the program (SIGINT, then SIGTERM, then SIGKILL) and return its exit status."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                break
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.wait()


class ProcessGroup:
    """Programs started for one test, all stopped at its end."""

    def __init__(self, env, log_dir):
        self.env = env
        self.log_dir = log_dir
        self.started = []

    def start(self, args, name=None, env=None, cwd=None):
        """Start ``args``; a first argument ending in ``.py`` is run with this interpreter."""
        args = [str(a) for a in args]
        name = name or f'{Path(args[0]).stem}-{len(self.started)}'
        if args[0].endswith('.py'):
            args = [sys.executable, *args]
        log_path = self.log_dir / f'{name}.log'
        with open(log_path, 'wb') as log:
            popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**self.env, **(env or {})}, cwd=cwd or REPO_ROOT)
        process = ManagedProcess(name, popen, log_path)
        self.started.append(process)
        return process

    def start_console_script(self, script, *args, **kwargs):
        """Start an installed console script (e.g. ``capture_node``) from this environment's bin dir."""
        path = Path(sys.executable).parent / script
        if not path.exists():
            raise FileNotFoundError(f'console script {path} is not installed: run scripts/bootstrap.sh')
        return self.start([path, *args], name=kwargs.pop('name', script), **kwargs)

    def stop_all(self):
        """Stop every program still running and print each one's output."""
        for process in reversed(self.started):
            status = process.stop()
            print(f'----- {process.name} (exit {status}) -----\n{process.output()}')


@pytest.fixture
def processes(ros_env, tmp_path):
    """Start programs on the test's ROS domain; all are stopped (and their output printed) afterwards."""
    group = ProcessGroup(ros_env, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
