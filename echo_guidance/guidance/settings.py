"""The guidance engine's settings from the guidance node's parameters, for the node and the evaluations.

The guidance node declares flat parameters (``fusion.window_s``, ``reached.max_distance``,
``stages.enter_mm``, ...; config/guidance.yaml). The functions here build the engine's config
dataclasses from such a flat mapping, and :func:`guidance_parameters_from_yaml` reads the same YAML
file the node reads, so the closed-loop evaluation and the benchmarks run the engine exactly as the
node would (``echo-guidance closed-loop --policy default``).
"""

import dataclasses
import pathlib

from echo_guidance.guidance.echo import EchoConfig
from echo_guidance.guidance.fusion import FusionConfig, ReachedConfig
from echo_guidance.guidance.stages import StageConfig


def _config_from_parameters(config_class, p, prefix):
    """``config_class`` built from the ``PREFIX.FIELD`` entries of a flat parameter dict.

    Lists become tuples (the config dataclasses are frozen and hashable).
    """
    values = {}
    for field in dataclasses.fields(config_class):
        key = f'{prefix}.{field.name}'
        if key in p:
            values[field.name] = tuple(p[key]) if isinstance(p[key], list) else p[key]
    return config_class(**values)


def fusion_config(p):
    """FusionConfig from the node's parameter dict (raises ValueError for inconsistent values)."""
    return _config_from_parameters(FusionConfig, p, 'fusion')


def reached_config(p):
    """ReachedConfig from the node's parameter dict (raises ValueError for inconsistent values)."""
    return _config_from_parameters(ReachedConfig, p, 'reached')


def stage_config(p):
    """StageConfig (coarse-to-fine handover) from the node's parameter dict."""
    return _config_from_parameters(StageConfig, p, 'stages')


def flatten_parameters(mapping, prefix=''):
    """``{'fusion': {'window_s': 1.0}}`` → ``{'fusion.window_s': 1.0}`` (the node's parameter names)."""
    out = {}
    for key, value in mapping.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(flatten_parameters(value, name + '.'))
        else:
            out[name] = value
    return out


def guidance_parameters_from_yaml(path, node='guidance'):
    """The flat parameters of ``node`` in a ROS 2 parameter file (``NODE: ros__parameters: ...``).

    Raises:
        ValueError: the file is missing, not YAML, or has no ``NODE.ros__parameters`` mapping.
    """
    import yaml

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f'guidance parameter file {path} does not exist')
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f'{path} is not valid YAML: {error}') from None
    section = (data.get(node) or {}).get('ros__parameters') if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f'{path} has no {node}: ros__parameters: mapping')
    return flatten_parameters(section)


def echo_config(p):
    """EchoConfig (the no-echo test) from the node's parameter dict."""
    return _config_from_parameters(EchoConfig, p, 'echo')


def engine_settings(p):
    """The GuidanceEngine keyword arguments (fusion, reached, stages, echo) from a flat parameter dict.

    Raises:
        ValueError: an inconsistent value (the message names it).
    """
    return {
        'fusion': fusion_config(p),
        'reached': reached_config(p),
        'stages': stage_config(p),
        'echo': echo_config(p),
    }
