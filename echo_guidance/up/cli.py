"""``echo-guidance up PROFILE``: start a profile's graph (processes and nodes) without ``ros2 launch``.

The same graph as ``ros2 launch echo_guidance PROFILE.launch.py``, from the same profile YAML
(config/profiles/). Each process logs to ``<log-dir>/<name>.log``. If any process exits, every other
one is stopped too (a dead node must not leave the rest running half a system) and the command
fails. SIGINT (Ctrl-C), SIGTERM and SIGHUP (a closed SSH session) stop everything in order (arm
control first, then the other nodes, then helper processes) and exit with 128 + the signal's number;
the nodes also die with a killed ``up`` (docs/autonomous.md section 1).
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
        help='check the profile with --arg and --set applied (executables, files, placeholders, and every '
        "node parameter: name, type, range, plane, model file, the nodes' own rules) and exit",
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
    # The same checks as the nodes' own at start-up, on the values they would get (--arg and --set
    # included): a run is refused before anything starts.
    problems = check_profile(profile, values, overrides)
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
    from echo_guidance.up.supervise import StopSignals, repair_hint
    from echo_guidance.up.supervise import say as _say

    log_dir = Path(args.log_dir or Path(values['output_dir']) / 'logs')
    try:
        launch = ProfileRun(profile, log_dir, values=values, overrides=overrides)
    except LaunchError as error:
        print(f'up: {error}', file=sys.stderr)
        return 2
    _say(f'up: profile {profile.name} ({profile.description}); logs in {log_dir}')
    status = 0
    with StopSignals():
        try:
            launch.start()
            for process in launch.processes:
                _say(f'up:   {process.name:14s} pid {process.pid}  {" ".join(process.argv[:4])} ...')
            deadline = time.monotonic() + args.duration if args.duration > 0 else None
            while deadline is None or time.monotonic() < deadline:
                launch.check_running()
                time.sleep(0.2)
        except KeyboardInterrupt as stop:
            signal_name = getattr(stop, 'name', 'SIGINT')
            status = getattr(stop, 'exit_status', 130)
            _say(f'up: {signal_name} received: stopping the graph (arm control first)')
        except (LaunchError, ProfileError) as error:
            _say(f'up: {error}', sys.stderr)
            status = 1
        finally:
            with StopSignals.holding():  # a signal now must not cut the stop short
                results = launch.stop()
                _say('up: stopped ' + ', '.join(f'{name} ({code})' for name, code in results.items()))
                for bag in launch.cut_off_bags():
                    _say(f'up: {repair_hint(bag)}', sys.stderr)
    return status

