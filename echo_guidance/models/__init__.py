"""Guidance networks (encoder, guidance head with plane queries, Cardiac Dreamer) and their losses.

Names are imported lazily: ``echo-guidance`` discovers stage subcommands by importing every
subpackage, and this one must not pull in torch just for that.
"""

import importlib

_EXPORTS = {
    'ACTION_AXES': 'config',
    'ModelConfig': 'config',
    'ModelConfigError': 'config',
    'config_differences': 'config',
    'baseline_loss': 'losses',
    'dreamer_loss': 'losses',
    'smooth_l1_action_loss': 'losses',
    'CardiacDreamer': 'networks',
    'DreamerPolicy': 'networks',
    'FrameEncoder': 'networks',
    'GuidanceHead': 'networks',
    'GuidancePolicy': 'networks',
    'architecture_digest': 'networks',
    'build_model': 'networks',
    'count_parameters': 'networks',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Import the submodule that defines ``name`` on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
