"""``echo-guidance up PROFILE``: start a profile's graph (processes and nodes) without ``ros2 launch``.

The same graph as ``ros2 launch echo_guidance PROFILE.launch.py``, from the same profile YAML
(config/profiles/). Each process logs to ``<log-dir>/<name>.log``. If any process exits, every other
one is stopped too (a dead node must not leave the rest running half a system) and the command
fails; Ctrl-C stops everything (nodes first, then helper processes).
"""

import sys
import time
from pathlib import Path


def register(subparsers):
    """Add ``up``."""
    parser = subparsers.add_parser(
        'up',
        help='start the nodes of a profile (record, guide, autonomous; sim variants)',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument('profile', nargs='?', help='profile name in config/profiles or a YAML path')
    parser.add_argument('--list', action='store_true', help='list the profiles and exit')
    parser.add_argument(
        '--check',
        action='store_true',
        help='check the profile (executables, files, parameter names, placeholders) and exit',
    )
    parser.add_argument(
        '--arg',
        action='append',
        default=[],
        metavar='NAME=VALUE',
        help='set a profile argument, e.g. --arg model=out/models/cpu_dreamer.onnx (repeatable)',
    )
    parser.add_argument(
        '--set',
        action='append',
        default=[],
        metavar='NODE.PARAM=VALUE',
        help='override a node parameter, e.g. --set arm_control.limits.min_confidence=0.6',
    )
    parser.add_argument('--output-dir', default=None, help='value of {output_dir} (default out/<profile>)')
    parser.add_argument('--log-dir', default=None, help='process logs (default <output-dir>/logs)')
    parser.add_argument(
        '--duration', type=float, default=0.0, help='stop after this many seconds (0 = until Ctrl-C)'
    )
    parser.set_defaults(handler=run)


def _pairs(items, what):
    """``NAME=VALUE`` items → {name: value} (strings); raise ValueError naming a malformed item."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition('=')
        if not sep or not name:
            raise ValueError(f'{what} must look like NAME=VALUE, got {item!r}')
        pairs[name] = value
    return pairs


def parse_overrides(items):
    """``NODE.PARAM=VALUE`` items → {node: {param: value}} (values parsed as YAML scalars)."""
    import yaml

    overrides = {}
    for key, value in _pairs(items, '--set').items():
        node, sep, parameter = key.partition('.')
        if not sep or not parameter:
            raise ValueError(f'--set needs NODE.PARAM=VALUE, got {key!r}')
        overrides.setdefault(node, {})[parameter] = yaml.safe_load(value)
    return overrides


def run(args):
    """Run ``up``; return the exit status."""
    from echo_guidance.recording.profiles import ProfileError, available_profiles, load_profile
    from echo_guidance.up.graph import builtin_values, check_profile

    if args.list or not args.profile:
        for name, description in available_profiles().items():
            print(f'{name:18s} {description}')
        return 0 if args.list else 2
    try:
        profile = load_profile(args.profile)
        arguments = _pairs(args.arg, '--arg')
        values = {**builtin_values(profile, args.output_dir), **profile.argument_values(arguments)}
        overrides = parse_overrides(args.set)
    except (ProfileError, ValueError) as error:
        print(f'up: {error}', file=sys.stderr)
        return 2
    problems = check_profile(profile, values)
    if args.check or problems:
        for problem in problems:
            print(f'up: {profile.name}: {problem}', file=sys.stderr)
        if problems:
            return 1
        print(
            f'up: {profile.name}: {len(profile.nodes)} nodes, {len(profile.processes)} processes: consistent'
        )
        return 0
    from echo_guidance.recording.launcher import LaunchError, ProfileRun

    log_dir = Path(args.log_dir or Path(values['output_dir']) / 'logs')
    try:
        launch = ProfileRun(profile, log_dir, values=values, overrides=overrides)
    except LaunchError as error:
        print(f'up: {error}', file=sys.stderr)
        return 2
    print(f'up: profile {profile.name} ({profile.description}); logs in {log_dir}', flush=True)
    status = 0
    try:
        launch.start()
        for process in launch.processes:
            print(f'up:   {process.name:14s} pid {process.pid}  {" ".join(process.argv[:4])} ...', flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while deadline is None or time.monotonic() < deadline:
            launch.check_running()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (LaunchError, ProfileError) as error:
        print(f'up: {error}', file=sys.stderr)
        status = 1
    finally:
        results = launch.stop()
        print('up: stopped ' + ', '.join(f'{name} ({code})' for name, code in results.items()), flush=True)
    return status
