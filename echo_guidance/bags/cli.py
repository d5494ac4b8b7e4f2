"""``echo-guidance bag info|repair|check BAG``: inspect, repair and validate demonstration bags."""

from __future__ import annotations

import json
import sys


def register(subparsers):
    """Add the ``bag`` command and its subcommands."""
    parser = subparsers.add_parser(
        'bag',
        help='inspect, repair and validate demonstration bags',
        description='Inspect, repair and validate demonstration bags (format: docs/bag-format.md).',
    )
    commands = parser.add_subparsers(dest='bag_command', metavar='SUBCOMMAND')
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    info = commands.add_parser('info', help='print session info, topics, counts and duration')
    info.add_argument('bag', help='bag directory')
    info.add_argument('--json', action='store_true', help='print JSON instead of text')
    info.set_defaults(handler=_info)

    repair = commands.add_parser('repair', help='complete a bag cut off by a killed recorder or power loss')
    repair.add_argument('bag', help='bag directory')
    repair.set_defaults(handler=_repair)

    check = commands.add_parser(
        'check', help='validate topics, stamps, frame sizes and per-frame synced poses'
    )
    check.add_argument('bag', help='bag directory')
    check.set_defaults(handler=_check)

    bench = commands.add_parser(
        'bench', help='measure the write rate: mono8 frames at a frame rate + 1 kHz poses'
    )
    bench.add_argument(
        '--seconds', type=float, default=10.0, help='recorded seconds to simulate (default 10)'
    )
    bench.add_argument('--width', type=int, default=640, help='frame width in pixels (default 640)')
    bench.add_argument('--height', type=int, default=480, help='frame height in pixels (default 480)')
    bench.add_argument('--fps', type=float, default=30.0, help='frames per second (default 30)')
    bench.add_argument('--pose-hz', type=float, default=1000.0, help='pose samples per second (default 1000)')
    bench.add_argument(
        '--fsync-interval',
        type=float,
        default=1.0,
        help='seconds between fsyncs; a negative value disables fsync (default 1)',
    )
    bench.add_argument('--dir', default=None, help='folder on the disk to measure (default: the temp folder)')
    bench.add_argument('--paced', action='store_true', help='write each message at its real time, as live')
    bench.set_defaults(handler=_bench)


def _info(args):
    from echo_guidance.bags.reader import BagError, DemonstrationBagReader

    try:
        with DemonstrationBagReader(args.bag) as reader:
            info = reader.info()
    except BagError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    session = info['session']
    session['flange_to_probe'] = session['flange_to_probe'].round(6).tolist()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f'bag:            {info["path"]} ({info["mcap_file"]}, {info["size_bytes"] / 1e6:.1f} MB)')
    print(f'state:          {info["state"]}' + (f' ({info["repair"]})' if info['repair'] else ''))
    print(f'schema version: {info["schema_version"]}')
    print(
        f'duration:       {info["duration_s"]:.3f} s, {info["message_count"]} messages, '
        f'{info["log_times_clamped"]} log time(s) clamped'
    )
    print('topics:')
    for topic, count in info['message_counts'].items():
        print(f'  {topic:24s} {count}')
    print('session:')
    for key, value in session.items():
        if key != 'extra':
            print(f'  {key:18s} {value!r}' if key != 'extra_yaml' else f'  {key:18s} {value.strip()!r}')
    return 0


def _repair(args):
    from echo_guidance.bags.reader import BagError
    from echo_guidance.bags.repair import repair_bag

    try:
        report = repair_bag(args.bag)
    except (BagError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _check(args):
    from echo_guidance.bags.check import check_bag

    result = check_bag(args.bag)
    for key, value in result.stats.items():
        print(f'{key}: {value:.3f}' if isinstance(value, float) else f'{key}: {value}')
    for note in result.notes:
        print(f'note: {note}')
    for problem in result.problems:
        print(f'PROBLEM: {problem}')
    print('OK' if result.ok else f'FAILED: {len(result.problems)} problem(s)')
    return 0 if result.ok else 1


def _bench(args):
    from echo_guidance.bags.bench import run_write_benchmark

    fsync = None if args.fsync_interval < 0 else args.fsync_interval
    r = run_write_benchmark(
        args.seconds, args.width, args.height, args.fps, args.pose_hz, fsync, args.dir, args.paced
    )
    print(
        f'{r["recorded_s"]:g} s recorded ({r["frames"]} frames {args.width}x{args.height} mono8 '
        f'+ synced poses, '
        f'{r["poses"]} poses) written in {r["wall_s"]:.2f} s: {r["real_time_factor"]:.1f}x real time, '
        f'{r["mb_per_s"]:.0f} MB/s, bag {r["bag_mb"]:.0f} MB, fsync_interval_s={fsync}'
        + (', paced' if args.paced else '')
    )
    print(
        f'per pose: median {r["pose_ms_median"]:.3f} ms, p99 {r["pose_ms_p99"]:.3f} ms, '
        f'max {r["pose_ms_max"]:.1f} ms; '
        f'per frame + synced pose: median {r["frame_ms_median"]:.3f} ms, p99 {r["frame_ms_p99"]:.3f} ms, '
        f'max {r["frame_ms_max"]:.1f} ms'
    )
    return 0
