"""`echo-guidance record`: the lab engineer's command for recording demonstrations.

It starts the nodes of a profile (capture, arm state, pedal, recorder; real devices or
simulation) as separate processes, shows a live status line (frames, poses, sync gap, drops,
disk), and records one bag per demonstration: the pedal's RECORD_START / RECORD_STOP, or Enter
on the keyboard, start and stop bags. ``--demonstrations N --duration S`` records N bags of S
seconds without anyone at the keyboard.
"""

import sys
import threading
import time
from pathlib import Path


def register(subparsers):
    """Add ``record``."""
    parser = subparsers.add_parser(
        'record',
        help='record demonstrations (one bag each) with real devices or in simulation',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        '--profile',
        default='record_sim',
        help='profile name in config/profiles or a YAML path (default record_sim)',
    )
    parser.add_argument('--list-profiles', action='store_true', help='list the profiles and exit')
    parser.add_argument('--output-dir', default='out/demonstrations', help='where the bags go')
    parser.add_argument('--operator', default=None, help='operator id stored in each bag')
    parser.add_argument(
        '--subject', default=None, help='pseudonymous subject id (never a name or record number)'
    )
    parser.add_argument('--plane', default=None, help='target plane: PLAX, PSAX-AV, PSAX-MV (or A4C)')
    parser.add_argument(
        '--demonstrations',
        type=int,
        default=0,
        metavar='N',
        help='record N demonstrations of --duration seconds each, then exit',
    )
    parser.add_argument(
        '--duration',
        type=float,
        default=10.0,
        metavar='SECONDS',
        help='length of each demonstration with --demonstrations (default 10)',
    )
    parser.add_argument('--log-dir', default=None, help='node logs (default <output-dir>/logs)')
    parser.add_argument(
        '--startup-timeout', type=float, default=60.0, help='seconds to wait for the recorder'
    )
    parser.set_defaults(handler=run)


def _session_overrides(args):
    from echo_guidance.planes import ALL_PLANES, check_plane

    overrides = {}
    if args.operator is not None:
        overrides['session.operator_id'] = args.operator
    if args.subject is not None:
        overrides['session.subject_id'] = args.subject
    if args.plane is not None:
        overrides['session.target_plane'] = check_plane(args.plane, ALL_PLANES)
    return overrides


def _keyboard(commands):
    """Read lines from stdin into ``commands`` (Enter toggles recording, q quits)."""
    for line in sys.stdin:
        commands.append(line.strip().lower() or 'toggle')
    commands.append('q')


def run(args):
    """Run the record command; return its exit status."""
    from echo_guidance.planes import UnknownPlaneError
    from echo_guidance.recording.profiles import ProfileError, available_profiles, load_profile

    if args.list_profiles:
        for name, description in available_profiles().items():
            print(f'{name:16s} {description}')
        return 0
    try:
        profile = load_profile(args.profile)
        overrides = _session_overrides(args)
    except (ProfileError, UnknownPlaneError) as error:
        print(f'record: {error}', file=sys.stderr)
        return 2
    if args.demonstrations < 0 or not args.duration > 0:
        print('record: --demonstrations must be >= 0 and --duration positive', file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from echo_guidance.recording.launcher import LaunchError, ProfileRun
    from echo_guidance.recording.monitor import RosStatusMonitor, format_status
    from echo_guidance.up.supervise import StopSignals, repair_hint
    from echo_guidance.up.supervise import say as _say

    output_dir = Path(args.output_dir).resolve()
    log_dir = Path(args.log_dir or output_dir / 'logs')
    recorder_names = [n.name for n in profile.nodes if n.node == 'recorder']
    if not recorder_names:
        print(f'record: profile {profile.name} runs no recorder node', file=sys.stderr)
        return 2
    launch = ProfileRun(
        profile,
        log_dir,
        values={'output_dir': str(output_dir)},
        overrides={recorder_names[0]: overrides} if overrides else None,
    )
    print(
        f'record: profile {profile.name} ({profile.description}); bags in {output_dir}; logs in {log_dir}',
        flush=True,
    )
    # The launcher handles the stop signals itself (StopSignals): rclpy's own handlers would shut its
    # context down under the monitor (ExternalShutdownException) before the nodes are stopped in order.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('record_cli')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    monitor = RosStatusMonitor(node, recorder_names[0])
    saved = []
    interactive = args.demonstrations == 0
    status_code = 0
    signals = StopSignals().__enter__()
    try:
        launch.start()
        deadline = time.monotonic() + args.startup_timeout
        while monitor.snapshot.recorder is None:
            executor.spin_once(timeout_sec=0.1)
            launch.check_running()
            if time.monotonic() > deadline:
                raise LaunchError(f'no status from the recorder within {args.startup_timeout:.0f} s')
        commands = []
        if interactive:
            print('Enter starts/stops a demonstration (so does the pedal); q + Enter quits.', flush=True)
            threading.Thread(target=_keyboard, args=(commands,), daemon=True).start()
        else:
            # Give the recorder a moment to receive both streams before the first bag.
            settle = time.monotonic() + 2.0
            while time.monotonic() < settle:
                executor.spin_once(timeout_sec=0.1)
        plan = [('start', i * (args.duration + 1.0)) for i in range(args.demonstrations)]
        plan += [('stop', i * (args.duration + 1.0) + args.duration) for i in range(args.demonstrations)]
        plan.sort(key=lambda item: item[1])
        started = time.monotonic()
        next_line = started
        last_bag = ''
        while True:
            executor.spin_once(timeout_sec=0.05)
            launch.check_running()
            now = time.monotonic()
            while plan and now - started >= plan[0][1]:
                commands.append(plan.pop(0)[0])
            while commands:
                command = commands.pop(0)
                if command == 'q':
                    raise _Quit
                recording = (monitor.snapshot.recorder or {}).get('state') == 1
                if command == 'toggle':
                    command = 'stop' if recording else 'start'
                client = monitor.start_client if command == 'start' else monitor.stop_client
                ok, message = monitor.call(client, executor)
                print(f'\n{command}: {message}' if ok else f'\n{command} refused: {message}', flush=True)
            status = monitor.snapshot.recorder or {}
            if (
                status.get('state') != 1
                and status.get('bag_path')
                and status.get('bag_path') != last_bag
                and status.get('message', '').startswith('saved')
            ):
                last_bag = status['bag_path']
                saved.append(last_bag)
            if now >= next_line:
                line = format_status(monitor.snapshot)
                print(
                    ('\r' + line[:200].ljust(200)) if sys.stdout.isatty() else line,
                    end='' if sys.stdout.isatty() else '\n',
                    flush=True,
                )
                next_line = now + 1.0
            if (
                not interactive
                and not plan
                and status.get('state') != 1
                and len(saved) >= args.demonstrations
            ):
                break
    except _Quit:
        if (monitor.snapshot.recorder or {}).get('state') == 1:
            monitor.call(monitor.stop_client, executor)
    except KeyboardInterrupt as stop:
        # A stop signal: no service calls (the terminal may be gone); the recorder closes an open bag
        # when it is stopped (SIGINT), after arm and capture.
        status_code = getattr(stop, 'exit_status', 130)
        _say(f'\nrecord: {getattr(stop, "name", "SIGINT")} received: stopping the nodes')
    except LaunchError as error:
        _say(f'\nrecord: {error}', sys.stderr)
        status_code = 1
    finally:
        with StopSignals.holding():  # a signal now must not cut the stop short
            results = launch.stop()
            last = monitor.snapshot.recorder or {}
            open_bag = last.get('bag_path') if last.get('state') == 1 else None
            node.destroy_node()
            rclpy.try_shutdown()
            cut_off = launch.cut_off_bags()
            if status_code:
                _say('record: stopped ' + ', '.join(f'{name} ({code})' for name, code in results.items()))
            for bag in cut_off:
                _say(f'record: {repair_hint(bag)}', sys.stderr)
            if open_bag and str(open_bag) not in {str(b) for b in cut_off} and open_bag not in saved:
                saved.append(open_bag)  # closed by the recorder as it stopped
        signals.__exit__(None, None, None)
    _say(f'\nrecord: {len(saved)} demonstration(s) saved' + ''.join(f'\n  {path}' for path in saved))
    return status_code


class _Quit(Exception):
    """q + Enter: stop an open bag through the service, then the nodes."""

