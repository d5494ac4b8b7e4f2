"""The control state machine: idle → armed (deadman held) → moving → plane reached (hold) → stopped.

States:

* ``idle``: not enabled. Arms when the deadman is pressed *after* having been seen released (a
  fresh press: a pedal held down when the controller starts, or still held after a stop, never
  arms it) and no stop reason is present.
* ``armed``: deadman held, nothing wrong, holding: waiting for guidance (or holding for a reason
  such as low confidence or stale guidance).
* ``moving``: the envelope issues bounded motion commands.
* ``plane_reached``: the planner judged the target plane reached; the arm holds until the deadman
  is released (→ stopped) or a new target is set (→ armed).
* ``stopped``: an operator stop (deadman released or silent, e-stop). Re-arms on a fresh press (a
  release seen after the e-stop was cleared, then held); shows idle while released.
* While the graph starts (``inputs_starting``: watched topics not heard from yet, within the node's
  start-up grace) the state does not change and a deadman release does not count toward a press.
* ``fault``: any other stop reason (stale pose, force limit, dead node, ...). Latched: re-arms only
  on a fresh press whose release came after the last cycle with the fault.

Motion is allowed only in ``armed`` and ``moving``; an unknown state allows nothing.
"""

import enum

from echo_guidance.control.envelope import STOP_STARTING, Verdict


class ControlState(enum.Enum):
    """The controller's states."""

    IDLE = 'idle'
    ARMED = 'armed'
    MOVING = 'moving'
    PLANE_REACHED = 'plane_reached'
    STOPPED = 'stopped'
    FAULT = 'fault'


ENABLED_STATES = (ControlState.ARMED, ControlState.MOVING)
ACTIVE_STATES = (ControlState.ARMED, ControlState.MOVING, ControlState.PLANE_REACHED)


class ControlStateMachine:
    """Track the control state from each cycle's decision and deadman / e-stop state."""

    def __init__(self):
        """Start idle, with no deadman release seen yet."""
        self.state = ControlState.IDLE
        self.reason = 'start'
        self.release_seen = False
        self.transitions = []  # (cycle, from, to, reason)
        self.cycle = 0

    @property
    def motion_enabled(self):
        """True only in armed and moving."""
        return self.state in ENABLED_STATES

    @property
    def hold_reason(self):
        """Why the envelope must hold when motion is not enabled."""
        if self.state is ControlState.PLANE_REACHED:
            return 'plane_reached'
        return 'not_armed'

    def _go(self, state, reason):
        if state is not self.state:
            self.transitions.append((self.cycle, self.state, state, reason))
            self.state = state
        self.reason = reason

    def target_changed(self):
        """A new target plane: leave plane_reached for armed (if it was there)."""
        if self.state is ControlState.PLANE_REACHED:
            self._go(ControlState.ARMED, 'new target')

    def update(self, decision, deadman_released_message, estop_active):
        """Advance one cycle; return the new state.

        A fresh press is a deadman release seen after the last fault cycle and after the e-stop was
        cleared, followed by the deadman held with nothing wrong: only that arms the controller.

        Args:
            decision: the envelope's :class:`~echo_guidance.control.envelope.Decision` this cycle.
            deadman_released_message: a fresh deadman message says released (only an explicit
                release counts toward a fresh press, not a silent pedal).
            estop_active: the e-stop is latched.
        """
        self.cycle += 1
        verdict, reason = decision.verdict, decision.reason
        state = self.state
        if verdict is Verdict.STOP and decision.is_fault:
            # A release while the fault is still there does not count: release after it is gone.
            self.release_seen = False
            self._go(ControlState.FAULT, reason)
            return self.state
        if verdict is Verdict.STOP and reason in STOP_STARTING:
            # Still starting: nothing arms, and a press held through the start-up does not arm the
            # moment the graph is ready (surprise motion): release and press again after it.
            self.release_seen = False
            self.reason = reason
            return self.state
        if deadman_released_message:
            self.release_seen = True
        if estop_active or reason == 'estop':
            self.release_seen = False
        if verdict is Verdict.STOP:  # an operator stop: deadman released / silent, e-stop
            if state in ACTIVE_STATES:
                self._go(ControlState.STOPPED, reason)
            elif state in (ControlState.FAULT, ControlState.STOPPED):
                if self.release_seen:
                    self._go(ControlState.IDLE, 'reset: ' + reason)
                else:
                    self.reason = reason
            elif state is ControlState.IDLE:
                self._go(ControlState.STOPPED if reason == 'estop' else ControlState.IDLE, reason)
            else:  # unknown state: allow nothing
                self._go(ControlState.FAULT, f'unknown state {state!r}')
            return self.state
        # Not a stop: the deadman is held and fresh, no fault, no e-stop.
        if state in (ControlState.IDLE, ControlState.STOPPED, ControlState.FAULT):
            if self.release_seen:
                self.release_seen = False
                self._go(ControlState.ARMED, 'deadman pressed')
            return self.state
        if state is ControlState.PLANE_REACHED:
            return self.state
        if state not in ENABLED_STATES:  # unknown state: allow nothing
            self._go(ControlState.FAULT, f'unknown state {state!r}')
        elif verdict is Verdict.MOVE:
            self._go(ControlState.MOVING, reason)
        elif reason == 'plane_reached':
            self._go(ControlState.PLANE_REACHED, reason)
        else:
            self._go(ControlState.ARMED, reason)
        return self.state
