"""Supervision of a node graph: nothing a launcher started outlives it, and no arm moves unsupervised.

Plain Python (no ROS), used by :class:`echo_guidance.recording.launcher.ProfileRun` (``echo-guidance up``,
``demo``, ``record``, ``bench record``) and by every node (:func:`echo_guidance.nodes._common.run_node`):

* :func:`child_preexec`: run in each child between fork and exec. The child asks the kernel for
  SIGTERM when its launcher dies (``prctl(PR_SET_PDEATHSIG)``: this covers a SIGKILLed launcher,
  which can run no code of its own), then checks that the launcher is still its parent (it may
  have died before the request: the race is closed by exiting at once). Each child also leads a
  process group of its own (``start_new_session``), so that a stop reaches what it started itself.
* :class:`SupervisorWatch`: a node started by a launcher gets the launcher's pid in
  ``ECHO_GUIDANCE_SUPERVISOR_PID``; the watch says when that parent is gone (the node was
  re-parented). Nodes then shut themselves down; arm control counts the supervisor as a dead
  node (the envelope stops the arm, ``node_dead``) before it does.
* :class:`StopSignals`: a launcher turns SIGINT, SIGTERM and SIGHUP into :class:`StopRequested`
  (a KeyboardInterrupt), once; while it stops its graph further signals are only noted, so the
  ordered stop is never cut short.
* :func:`unfinished_bags`: bags under a folder still marked "in progress" (a recorder that was
  killed): the launcher prints the repair command for each.
"""

import ctypes
import os
import signal
import threading
import time
from pathlib import Path

SUPERVISOR_ENV = 'ECHO_GUIDANCE_SUPERVISOR_PID'
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
try:  # bound before any fork: the child only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def set_parent_death_signal(sig=signal.SIGTERM):
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where unsupported."""
    if _prctl is None:
        return False
    return _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def child_preexec(parent_pid=None):
    """Return a ``preexec_fn`` that ties the child's life to this process (see the module docstring)."""
    parent_pid = os.getpid() if parent_pid is None else parent_pid

    def preexec():
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:  # the launcher died before the request took effect
            os._exit(1)

    return preexec


def supervised_env(env=None, pid=None):
    """A copy of ``env`` (default: this environment) naming this process as the supervisor."""
    env = dict(os.environ if env is None else env)
    env[SUPERVISOR_ENV] = str(os.getpid() if pid is None else pid)
    return env


class SupervisorWatch:
    """Whether the launcher that started this process is still its parent.

    Args:
        pid: the supervisor's pid (default: from ``ECHO_GUIDANCE_SUPERVISOR_PID``; none = unsupervised).
        getppid: the parent-pid function (tests pass a fake).
    """

    def __init__(self, pid=None, getppid=os.getppid):
        """Read the supervisor's pid."""
        if pid is None:
            text = os.environ.get(SUPERVISOR_ENV, '').strip()
            pid = int(text) if text.isdigit() else None
        self.pid = pid
        self._getppid = getppid

    @property
    def supervised(self):
        """True when this process was started by a launcher."""
        return self.pid is not None

    def gone(self):
        """True when there was a supervisor and it is no longer this process's parent."""
        return self.pid is not None and self._getppid() != self.pid

    def describe(self):
        """One line for logs and the arm's dead-node list."""
        return f'supervisor (launcher pid {self.pid}): gone, this process was orphaned'

    def start_thread(self, on_gone, period_s=0.1):
        """Call ``on_gone()`` once from a daemon thread when the supervisor goes; return the thread."""

        def watch():
            while not self.gone():
                time.sleep(period_s)
            on_gone()

        thread = threading.Thread(target=watch, name='supervisor-watch', daemon=True)
        if self.supervised:
            thread.start()
        return thread


class StopRequested(KeyboardInterrupt):
    """A launcher was asked to stop by a signal (SIGINT, SIGTERM or SIGHUP)."""

    def __init__(self, signum):
        """Remember the signal."""
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self):
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_status(self):
        """128 + the signal number, as a shell reports a process ended by it."""
        return 128 + self.signum


class StopSignals:
    """Context manager: SIGINT, SIGTERM and SIGHUP raise :class:`StopRequested` once in the main thread.

    ``received`` is the first signal (None before any). Inside :meth:`holding` (the launcher's stop)
    signals are only noted. Only the main thread can install handlers; elsewhere this does nothing.
    """

    _active = None

    def __init__(self, signals=STOP_SIGNALS):
        """Prepare; handlers are installed on entry."""
        self.signals = tuple(signals)
        self.received = None
        self.count = 0
        self._hold = 0
        self._previous = {}

    def _handle(self, signum, frame):
        self.count += 1
        first = self.received is None
        if first:
            self.received = int(signum)
        if first and not self._hold:
            raise StopRequested(signum)

    def __enter__(self):
        """Install the handlers."""
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            StopSignals._active = self
        return self

    def __exit__(self, exc_type, exc, tb):
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if StopSignals._active is self:
            StopSignals._active = None
        return False

    def stop_request(self):
        """A StopRequested for the first signal received, or None."""
        return None if self.received is None else StopRequested(self.received)

    class _Holding:
        def __init__(self, owner):
            self.owner = owner

        def __enter__(self):
            if self.owner is not None:
                self.owner._hold += 1

        def __exit__(self, *exc):
            if self.owner is not None:
                self.owner._hold -= 1
            return False

    @classmethod
    def holding(cls):
        """Context manager: while in it, stop signals are noted but do not interrupt (ordered stop)."""
        return cls._Holding(cls._active)


def unfinished_bags(folder, since=None):
    """Bags below ``folder`` whose metadata.yaml still says "in progress" (or MCAP without metadata).

    Args:
        folder: a recorder's output folder (searched two levels deep).
        since: only bags modified at or after this time (``time.time()`` seconds).
    """
    from echo_guidance.bags import schema
    from echo_guidance.bags._metadata import load_metadata

    folder = Path(folder)
    found = []
    if not folder.is_dir():
        return found
    candidates = {p.parent for p in folder.glob('*.mcap')} | {p.parent for p in folder.glob('*/*.mcap')}
    for bag in sorted(candidates):
        if since is not None and bag.stat().st_mtime < since - 1.0:
            continue
        custom = None
        if (bag / 'metadata.yaml').is_file():
            try:
                custom = load_metadata(bag).get('custom_data') or {}
            except (OSError, ValueError):
                custom = None
        if custom is None or custom.get(schema.KEY_STATE) == schema.STATE_IN_PROGRESS:
            found.append(bag)
    return found


def say(text, stream=None):
    """Print a line and flush; a terminal that went away (SIGHUP, closed SSH session) does not stop a stop."""
    import sys

    try:
        print(text, file=stream or sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


def repair_hint(bag):
    """The line a launcher prints for a cut-off bag."""
    return (
        f'bag {bag} was cut off (its recorder stopped without closing it): '
        f'repair it with: echo-guidance bag repair {bag}'
    )
