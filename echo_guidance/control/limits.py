"""The safety limits and the planner settings, each checked once at start-up.

Every limit has a default (see docs/autonomous.md for the reasoning behind each), a unit and an
allowed range. :meth:`SafetyLimits.from_mapping` builds the limits from a config mapping (a YAML
section or ROS parameters); an unknown key, a value of the wrong type, a non-finite number or a
value out of range raises :class:`LimitsError` naming the key, so a node with a malformed config
refuses to start instead of running with a guess.
"""

import dataclasses
import math

import numpy as np


class LimitsError(ValueError):
    """A safety limit or planner setting that is unknown, malformed or out of its allowed range."""


def _spec(default, unit, low, high, description, low_open=False):
    """Field metadata: unit, inclusive range [low, high] (``low_open``: strictly above low), text."""
    return dataclasses.field(
        default=default,
        metadata={'unit': unit, 'low': low, 'high': high, 'low_open': low_open, 'description': description},
    )


def _check_number(name, value, meta, where):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LimitsError(f'{where}{name} must be a number ({meta["unit"]}), got {value!r}')
    value = float(value)
    if not math.isfinite(value):
        raise LimitsError(f'{where}{name} must be finite, got {value!r}')
    low, high = meta['low'], meta['high']
    too_low = value <= low if meta['low_open'] else value < low
    if too_low or value > high:
        bracket = '(' if meta['low_open'] else '['
        raise LimitsError(
            f'{where}{name} = {value:g} {meta["unit"]} is out of range: expected {bracket}{low:g}, {high:g}]'
        )
    return value


def _from_mapping(cls, mapping, source, key_prefix=''):
    """Build dataclass ``cls`` from ``mapping``; missing keys keep their defaults."""
    where = f'{source}: ' if source else ''
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise LimitsError(
            f'{where}{cls.__name__} needs a mapping of name: value, got {type(mapping).__name__}'
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(f'{key_prefix}{k}' for k in set(mapping) - set(fields))
    if unknown:
        raise LimitsError(f'{where}unknown {cls.SECTION} key(s) {unknown}; known keys: {sorted(fields)}')
    values = {}
    for name, field in fields.items():
        if name not in mapping:
            continue
        value = mapping[name]
        meta = field.metadata
        key = f'{key_prefix}{name}'
        if meta['unit'] == 'bool':
            if not isinstance(value, (bool, np.bool_)):
                raise LimitsError(f'{where}{key} must be true or false, got {value!r}')
            values[name] = bool(value)
        elif isinstance(field.default, tuple):
            if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != len(field.default):
                raise LimitsError(
                    f'{where}{key} must be a list of {len(field.default)} numbers ({meta["unit"]}), '
                    f'got {value!r}'
                )
            values[name] = tuple(_check_number(f'{key}[{i}]', v, meta, where) for i, v in enumerate(value))
        elif isinstance(field.default, int):
            checked = _check_number(key, value, meta, where)
            if checked != int(checked):
                raise LimitsError(f'{where}{key} must be a whole number, got {value!r}')
            values[name] = int(checked)
        else:
            values[name] = _check_number(key, value, meta, where)
    try:
        return cls(**values)
    except LimitsError as error:
        raise LimitsError(f'{where}{error}') from None


def _check_defaults_and_relations(obj):
    """Check every field of a limits dataclass (defaults included) and its cross-field rules."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        meta = field.metadata
        if meta['unit'] == 'bool':
            continue
        for v in value if isinstance(value, tuple) else (value,):
            _check_number(field.name, v, meta, '')
    obj._check_relations()


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    """Every limit the safety envelope enforces (lengths in mm, angles in degrees, times in s).

    Build it with :meth:`from_mapping`; the constructor checks the same ranges.
    """

    SECTION = 'safety limit'

    control_rate_hz: float = _spec(50.0, 'Hz', 1.0, 1000.0, 'control cycles per second')
    max_step_translation_mm: float = _spec(
        1.0, 'mm', 0.0, 10.0, 'largest translation of one command (setpoint to setpoint)', low_open=True
    )
    max_step_rotation_deg: float = _spec(
        1.0, 'deg', 0.0, 10.0, 'largest rotation of one command', low_open=True
    )
    max_linear_speed_mm_s: float = _spec(20.0, 'mm/s', 0.0, 250.0, 'commanded probe speed', low_open=True)
    max_angular_speed_deg_s: float = _spec(
        15.0, 'deg/s', 0.0, 90.0, 'commanded probe angular speed', low_open=True
    )
    max_linear_acceleration_mm_s2: float = _spec(
        100.0, 'mm/s^2', 0.0, 5000.0, 'change of commanded speed per second', low_open=True
    )
    max_angular_acceleration_deg_s2: float = _spec(
        90.0, 'deg/s^2', 0.0, 2000.0, 'change of commanded angular speed per second', low_open=True
    )
    workspace_half_extent_mm: tuple = _spec(
        (60.0, 60.0, 60.0),
        'mm',
        0.0,
        300.0,
        'half sizes (x, y, z in base) of the box around the start pose that commands stay in',
        low_open=True,
    )
    max_rotation_from_start_deg: float = _spec(
        60.0, 'deg', 0.0, 170.0, 'largest orientation change from the start pose', low_open=True
    )
    max_tracking_error_mm: float = _spec(
        5.0, 'mm', 0.0, 50.0, 'measured pose this far from the last setpoint is a fault', low_open=True
    )
    max_tracking_error_deg: float = _spec(
        5.0,
        'deg',
        0.0,
        45.0,
        'measured orientation this far from the last setpoint is a fault',
        low_open=True,
    )
    max_contact_force_n: float = _spec(
        25.0, 'N', 0.0, 100.0, 'external force norm (arm estimate) that stops the arm', low_open=True
    )
    max_contact_torque_nm: float = _spec(
        3.0, 'N m', 0.0, 30.0, 'external torque norm that stops the arm', low_open=True
    )
    require_wrench: bool = _spec(
        True, 'bool', 0, 0, 'no fresh wrench = stop (false only for arms without one)'
    )
    pose_max_age_s: float = _spec(0.1, 's', 0.0, 5.0, 'older arm pose = stop', low_open=True)
    wrench_max_age_s: float = _spec(0.1, 's', 0.0, 5.0, 'older wrench = stop', low_open=True)
    frame_max_age_s: float = _spec(0.3, 's', 0.0, 5.0, 'older ultrasound frame = hold', low_open=True)
    guidance_max_age_s: float = _spec(
        0.5, 's', 0.0, 5.0, 'guidance whose frame is older = hold', low_open=True
    )
    deadman_timeout_s: float = _spec(
        0.25, 's', 0.0, 5.0, 'older deadman message = released (stop)', low_open=True
    )
    liveness_timeout_s: float = _spec(
        1.0,
        's',
        0.0,
        30.0,
        'a watched topic silent this long (or without publisher) = node dead, stop',
        low_open=True,
    )
    max_future_stamp_s: float = _spec(
        0.05, 's', 0.0, 1.0, 'a stamp further than this in the future is a clock fault'
    )
    min_confidence: float = _spec(0.5, '1', 0.0, 1.0, 'guidance confidence below this = hold')
    max_action_translation_mm: float = _spec(
        150.0,
        'mm',
        0.0,
        1000.0,
        'guidance translation larger than this is out of range (hold)',
        low_open=True,
    )
    max_action_rotation_deg: float = _spec(
        180.0, 'deg', 0.0, 180.0, 'guidance angle larger than this is out of range (hold)', low_open=True
    )

    def __post_init__(self):
        """Check every value and the rules between them; raise LimitsError naming the key."""
        _check_defaults_and_relations(self)

    def _check_relations(self):
        ages = {
            'pose_max_age_s': self.pose_max_age_s,
            'frame_max_age_s': self.frame_max_age_s,
            'guidance_max_age_s': self.guidance_max_age_s,
            'deadman_timeout_s': self.deadman_timeout_s,
        }
        for name, age in ages.items():
            if age > self.liveness_timeout_s:
                raise LimitsError(
                    f'{name} = {age:g} s exceeds liveness_timeout_s = {self.liveness_timeout_s:g} s: '
                    'a silent '
                    'node must be stale before it counts as dead'
                )

    @property
    def period_s(self):
        """Nominal control period, seconds."""
        return 1.0 / self.control_rate_hz

    @property
    def step_speed_mm_s(self):
        """Largest linear speed a command may carry: the speed limit or the step limit per period."""
        return min(self.max_linear_speed_mm_s, self.max_step_translation_mm * self.control_rate_hz)

    @property
    def step_angular_speed_deg_s(self):
        """Largest angular speed a command may carry."""
        return min(self.max_angular_speed_deg_s, self.max_step_rotation_deg * self.control_rate_hz)

    @classmethod
    def from_mapping(cls, mapping, source='', key_prefix=''):
        """Build limits from a mapping (missing keys keep their defaults).

        Args:
            mapping: name -> value.
            source: where the mapping came from (a file name), put in front of error messages.
            key_prefix: how the keys are named there (e.g. ``limits.`` for node parameters).

        Raises:
            LimitsError: an unknown key, a value of the wrong type, non-finite or out of range (the
                message names the key and ``source``).
        """
        return _from_mapping(cls, mapping, source, key_prefix)

    def to_mapping(self):
        """Return the limits as a plain mapping (tuples as lists)."""
        return {
            f.name: list(getattr(self, f.name))
            if isinstance(getattr(self, f.name), tuple)
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def describe_fields(cls):
        """Yield (name, default, unit, description) of every limit, for docs and parameter descriptors."""
        for f in dataclasses.fields(cls):
            yield f.name, f.default, f.metadata['unit'], f.metadata['description']


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """How the step planner turns guidance into motion (not safety: the envelope bounds its output)."""

    SECTION = 'planner setting'

    gain_per_s: float = _spec(
        1.5, '1/s', 0.0, 20.0, 'speed toward the target per unit of remaining distance', low_open=True
    )
    filter_alpha: float = _spec(
        0.3,
        '1',
        0.0,
        1.0,
        'weight of each new guidance in the target estimate (1 = no filter)',
        low_open=True,
    )
    min_estimates: int = _spec(2, '1', 1, 100, 'guidance messages needed before the first move')
    reach_translation_mm: float = _spec(
        2.0, 'mm', 0.0, 50.0, 'probe this close to the target estimate counts as at the plane', low_open=True
    )
    reach_rotation_deg: float = _spec(2.0, 'deg', 0.0, 45.0, 'and this close in orientation', low_open=True)
    reach_cycles: int = _spec(10, '1', 1, 10000, 'control cycles at the target (or of plane_reached) to stop')
    use_guidance_plane_reached: bool = _spec(
        False, 'bool', 0, 0, "also stop when the guidance's own plane_reached flag holds for reach_cycles"
    )
    reach_requires_guidance: bool = _spec(
        True,
        'bool',
        0,
        0,
        "count the plane as reached only while the guidance's plane_reached flag (the stop judgement) "
        'agrees with the reach test',
    )
    step_and_look: bool = _spec(
        False,
        'bool',
        0,
        0,
        'alternate looks (probe still, look_frames guidance averaged) and steps of step_fraction of it',
    )
    look_frames: int = _spec(4, '1', 1, 100, 'guidance frames taken with the probe still that make one look')
    look_still_mm: float = _spec(
        0.3, 'mm', 0.0, 10.0, 'a frame belongs to a look when the probe was this close to the look pose',
        low_open=True,
    )
    look_still_deg: float = _spec(0.3, 'deg', 0.0, 10.0, 'and this close in orientation', low_open=True)
    step_fraction: float = _spec(
        0.7, '1', 0.0, 1.0, 'part of the looked-at guidance one step moves (step-and-look)', low_open=True
    )
    reach_guidance_mm: float = _spec(
        3.0, 'mm', 0.0, 50.0, 'a look whose averaged guidance is this small is at the plane', low_open=True
    )
    reach_guidance_deg: float = _spec(3.0, 'deg', 0.0, 45.0, 'and this small in rotation', low_open=True)
    reach_looks: int = _spec(1, '1', 1, 100, 'consecutive looks at the plane that count as reached')
    look_around: bool = _spec(
        True,
        'bool',
        0,
        0,
        'at the target estimate without the stop judgement agreeing: look from poses around it and '
        'fuse their estimates (needs reach_requires_guidance)',
    )
    look_around_mm: float = _spec(
        3.0, 'mm', 0.0, 20.0, 'translation of each look-around pose from the estimate', low_open=True
    )
    look_around_deg: float = _spec(
        3.0, 'deg', 0.0, 20.0, 'rotation of each look-around pose from the estimate', low_open=True
    )
    look_around_frames: int = _spec(3, '1', 1, 100, 'guidance frames kept at each look-around pose')
    look_around_rounds: int = _spec(2, '1', 1, 100, 'look-around rounds before the planner just holds')
    search: bool = _spec(
        True,
        'bool',
        0,
        0,
        'guidance not confident for search_after_s: visit a bounded pattern of poses around where it was '
        'lost, dwelling at each, until the guidance is confident again (every step through the envelope)',
    )
    search_after_s: float = _spec(
        1.5, 's', 0.0, 60.0, 'low-confidence time before a search starts', low_open=True
    )
    search_mm: float = _spec(
        12.0,
        'mm',
        0.0,
        30.0,
        'radius of the first search ring (probe x, y); ring k has k times it',
        low_open=True,
    )
    search_deg: float = _spec(
        0.0, 'deg', 0.0, 30.0, 'tilt of each ring pose, its beam leaning toward the centre (0: slides only)'
    )
    search_press_mm: float = _spec(
        3.0,
        'mm',
        0.0,
        10.0,
        'a search first presses the probe this far along its beam (a probe off the skin regains contact), '
        'then searches on rings around that pressed pose',
    )
    search_dwell_s: float = _spec(0.6, 's', 0.0, 10.0, 'time held still at each search pose', low_open=True)
    search_rounds: int = _spec(2, '1', 1, 10, 'search rings (8 poses each) before the planner holds')

    def __post_init__(self):
        """Check every value; raise LimitsError naming the key."""
        _check_defaults_and_relations(self)

    def _check_relations(self):
        pass

    @classmethod
    def from_mapping(cls, mapping, source='', key_prefix=''):
        """Build planner settings from a mapping (missing keys keep their defaults; see SafetyLimits).

        Raises:
            LimitsError: an unknown key or a bad value (the message names the key).
        """
        return _from_mapping(cls, mapping, source, key_prefix)

    def to_mapping(self):
        """Return the settings as a plain mapping."""
        return dataclasses.asdict(self)

    @classmethod
    def describe_fields(cls):
        """Yield (name, default, unit, description) of every setting."""
        for f in dataclasses.fields(cls):
            yield f.name, f.default, f.metadata['unit'], f.metadata['description']
