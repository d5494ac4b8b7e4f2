"""One parameter check for the nodes and ``echo-guidance up --check``; typed profile values.

A node module lists its parameters as :class:`~echo_guidance.nodes._common.ParamSpec` objects
(``PARAMETERS`` or ``parameter_specs()``) and may add a module-level ``check_parameters(params)``
for rules across parameters (arm control: the safety limits). The node runs both at start-up
(``declare_parameters`` validates each value, ``run_node`` refuses undeclared names); ``up --check``
runs the same ParamSpec checks and the same ``check_parameters`` on the values a profile, its
parameter files, ``--arg`` and ``--set`` give, so a value ``up --check`` accepts is one the node
accepts.

* :func:`node_specs`: {name: ParamSpec} of a node module (plus the flange → probe calibration for
  nodes that read it).
* :func:`typed_value`: a value as the node's parameter type: a profile value filled from a
  placeholder is text (``"{display_port}"`` → ``"0"``) and becomes an integer where the node
  expects one; an integer becomes a float where a float is expected.
* :func:`check_node_parameters`: the problems (strings) with a node's parameters.
"""

import importlib
import inspect

import yaml

CALIBRATION_PREFIX = 'flange_to_probe'


def _calibration_specs():
    from echo_guidance.nodes._common import ParamSpec

    return [
        ParamSpec(f'{CALIBRATION_PREFIX}.translation_mm', [0.0, 0.0, 0.0], 'probe origin, mm', length=3),
        ParamSpec(f'{CALIBRATION_PREFIX}.rpy_deg', [0.0, 0.0, 0.0], 'roll, pitch, yaw deg', length=3),
        ParamSpec(f'{CALIBRATION_PREFIX}.quaternion_xyzw', [0.0, 0.0, 0.0, 1.0], 'unit quaternion', length=4),
        ParamSpec(f'{CALIBRATION_PREFIX}.source', '', 'where the calibration came from'),
    ]


def node_module(module_name):
    """Import ``echo_guidance.nodes.<module_name>``."""
    return importlib.import_module(f'echo_guidance.nodes.{module_name}')


def node_specs(module_name):
    """Return {name: ParamSpec} of the parameters ``echo_guidance.nodes.<module_name>`` declares.

    Raises:
        ValueError: the module lists its parameters neither in ``PARAMETERS`` nor ``parameter_specs()``.
    """
    module = node_module(module_name)
    if hasattr(module, 'parameter_specs'):
        specs = list(module.parameter_specs())
    elif hasattr(module, 'PARAMETERS'):
        specs = list(module.PARAMETERS)
    else:
        raise ValueError(
            f'node module {module_name} has neither PARAMETERS nor parameter_specs(): its parameter names '
            'cannot be checked'
        )
    if 'calibration_from_node' in inspect.getsource(module):
        specs += _calibration_specs()
    return {spec.name: spec for spec in specs}


def typed_value(spec, value):
    """``value`` as ``spec``'s type where that is what it means; unchanged when it cannot be.

    Text (what a placeholder gives) becomes a number or boolean by YAML rules when the parameter is
    not text; an integer becomes a float where a float is expected. Values that do not fit are
    left for :meth:`ParamSpec.validate` to report.
    """
    from echo_guidance.nodes._common import ParameterValidationError

    wants_text = isinstance(spec.default, str) or (
        isinstance(spec.default, (list, tuple)) and spec.default and isinstance(spec.default[0], str)
    )
    if isinstance(value, str) and not wants_text:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    try:
        return spec.coerce(value)
    except ParameterValidationError:
        return value


def typed_parameters(module_name, parameters):
    """{name: value} with each value given its node parameter's type (:func:`typed_value`).

    Names the node does not declare are kept as they are (the node refuses them at start).
    """
    try:
        specs = node_specs(module_name)
    except (ImportError, ValueError):
        return dict(parameters)
    typed = dict(parameters)
    for name, value in parameters.items():
        if name in specs:
            typed[name] = typed_value(specs[name], value)
    return typed


def check_node_parameters(module_name, parameters, sources=None):
    """Return the problems with the parameters a node would start with (empty list: it would accept them).

    Args:
        module_name: the node module (``arm_control``, ``guidance``, ...).
        parameters: {name: value} from its parameter files, the profile and overrides, placeholders
            filled; a value that still holds a ``{placeholder}`` (known only once a helper process
            runs) is checked for its name only.
        sources: {name: where it was set} for the messages (default: nothing said).
    """
    from echo_guidance.recording.profiles import PLACEHOLDER

    sources = sources or {}
    try:
        specs = node_specs(module_name)
    except (ImportError, ValueError) as error:
        return [str(error)]
    problems = []
    values = {name: spec.default for name, spec in specs.items()}
    for name, value in parameters.items():
        where = f' ({sources[name]})' if name in sources else ''
        spec = specs.get(name)
        if spec is None:
            problems.append(
                f'{sources.get(name, "a parameter file or override")} sets {name!r}, which the node does '
                'not declare'
            )
            continue
        if isinstance(value, str) and PLACEHOLDER.search(value):
            continue
        try:
            values[name] = spec.validate(typed_value(spec, value))
        except ValueError as error:
            problems.append(f'{error}{where}')
    check = getattr(node_module(module_name), 'check_parameters', None)
    if check is not None and not problems:
        try:
            check(values)
        except ValueError as error:
            problems.append(str(error))
    return problems
