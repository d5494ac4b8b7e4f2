"""``echo-guidance bag info|check|repair|bench|fuzz``: inspect, validate, repair, benchmark and fuzz bags.

Every command ends with one verdict and an exit status (echo_guidance.bags.errors): 0 intact / OK,
1 content problems, 2 usage, 3 damaged (the message names the byte offset and says to run
``echo-guidance bag repair BAG``), 4 not a usable bag.
"""

from __future__ import annotations

import json
import sys

from echo_guidance.cli_options import add_output_dir


def register(subparsers):
    """Add the ``bag`` command and its subcommands."""
    parser = subparsers.add_parser(
        'bag',
        help='inspect, repair and validate demonstration bags',
        description='Inspect, repair and validate demonstration bags (format: docs/bag-format.md). '
        'Exit status: 0 intact/OK, 1 content problems, 2 usage, 3 damaged (run `bag repair`), '
        '4 not a usable bag.',
    )
    commands = parser.add_subparsers(dest='bag_command', metavar='SUBCOMMAND')
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])

    info = commands.add_parser(
        'info', help='verify the files and print session info, topics, counts and duration'
    )
    info.add_argument('bag', help='bag directory')
    info.add_argument('--json', action='store_true', help='print JSON instead of text')
    info.set_defaults(handler=_info)

    repair = commands.add_parser(
        'repair', help='complete a bag cut off by a killed recorder or power loss, or damaged on disk'
    )
    repair.add_argument('bag', help='bag directory')
    add_output_dir(
        repair,
        'write the repaired bag to this new directory and leave BAG untouched (default: repair in '
        'place, keeping the original files in BAG/repair-backup-<time>/)',
    )
    repair.add_argument('--json', action='store_true', help='print the report as JSON')
    repair.set_defaults(handler=_repair)

    check = commands.add_parser(
        'check', help='verify the files, then topics, counts, stamps, frame sizes and per-frame synced poses'
    )
    check.add_argument('bag', help='bag directory')
    check.add_argument('--json', action='store_true', help='print the result as JSON')
    check.set_defaults(handler=_check)

    fuzz = commands.add_parser(
        'fuzz',
        help='corrupt a bag many seeded ways and run info, check, repair and the dataset builder on each',
    )
    fuzz.add_argument('--corruptions', type=int, default=250, help='corruptions per kind (default 250)')
    fuzz.add_argument('--seed', type=int, default=0, help='seed of the corruptions (default 0)')
    fuzz.add_argument('--bag', default=None, help='bag to corrupt (default: a small generated one)')
    add_output_dir(fuzz, 'report folder (default out/bag-fuzz)', default='out/bag-fuzz')
    fuzz.add_argument('--jobs', type=int, default=1, help='worker processes (default 1)')
    fuzz.add_argument(
        '--kinds',
        default=None,
        help='comma-separated corruption kinds (default: truncate,flip_header,flip_data,zero_range,'
        'metadata_yaml)',
    )
    fuzz.set_defaults(handler=_fuzz)

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


def _refusal(exc, as_json=False):
    """Print the verdict for a bag the command could not use; return its exit status."""
    from echo_guidance.bags.errors import EXIT_DAMAGED, EXIT_NOT_A_BAG, EXIT_PROBLEMS

    code = getattr(exc, 'exit_code', EXIT_NOT_A_BAG)
    labels = {EXIT_DAMAGED: 'DAMAGED', EXIT_NOT_A_BAG: 'NOT USABLE', EXIT_PROBLEMS: 'PROBLEM'}
    label = labels.get(code, 'ERROR')
    if as_json:
        print(json.dumps({'verdict': label.lower(), 'exit_code': code, 'offset': getattr(exc, 'offset', None),
                          'error': str(exc)}, indent=2))
    else:
        print(f'{label}: {exc}', file=sys.stderr)
    return code


def _info(args):
    from echo_guidance.bags.errors import BagError
    from echo_guidance.bags.reader import DemonstrationBagReader

    try:
        with DemonstrationBagReader(args.bag) as reader:
            info = reader.info()
    except BagError as exc:
        return _refusal(exc, args.json)
    except OSError as exc:
        return _refusal(exc, args.json)
    session = info['session']
    session['flange_to_probe'] = session['flange_to_probe'].round(6).tolist()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f'bag:            {info["path"]} ({info["mcap_file"]}, {info["size_bytes"] / 1e6:.1f} MB)')
    print(f'state:          {info["state"]}' + (f' ({info["repair"]})' if info['repair'] else ''))
    print(f'integrity:      {info["integrity"]}')
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
    import dataclasses

    from echo_guidance.bags.errors import BagError
    from echo_guidance.bags.repair import repair_bag

    try:
        report = repair_bag(args.bag, out=args.out)
    except BagError as exc:
        return _refusal(exc, args.json)
    except OSError as exc:
        print(f'ERROR: writing the repaired bag failed: {exc}', file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print(report.summary())
    return 0


def _check(args):
    from echo_guidance.bags.check import check_bag

    result = check_bag(args.bag)
    if args.json:
        print(json.dumps(
            {'verdict': result.verdict, 'exit_code': result.exit_code, 'offset': result.offset,
             'problems': result.problems, 'notes': result.notes, 'stats': result.stats},
            indent=2,
        ))
        return result.exit_code
    for key, value in result.stats.items():
        print(f'{key}: {value:.3f}' if isinstance(value, float) else f'{key}: {value}')
    for note in result.notes:
        print(f'note: {note}')
    for problem in result.problems:
        print(f'PROBLEM: {problem}')
    print(result.verdict)
    return result.exit_code


def _fuzz(args):
    import shlex

    from echo_guidance.bags import fuzz

    kinds = tuple(args.kinds.split(',')) if args.kinds else fuzz.KINDS + fuzz.EXTRA_KINDS
    unknown = [k for k in kinds if k not in fuzz.KINDS + fuzz.EXTRA_KINDS]
    if unknown or args.corruptions < 1 or args.jobs < 1:
        print(
            f'error: unknown kind(s) {unknown} (known: {",".join(fuzz.KINDS + fuzz.EXTRA_KINDS)}), or '
            '--corruptions / --jobs below 1',
            file=sys.stderr,
        )
        return 2
    command = f'echo-guidance bag fuzz --corruptions {args.corruptions} --seed {args.seed} --jobs {args.jobs}'
    command += f' --kinds {",".join(kinds)}' if args.kinds else ''
    command += f' --bag {shlex.quote(args.bag)}' if args.bag else ''
    report = fuzz.run_fuzz(
        args.corruptions, args.seed, args.bag, kinds=kinds, jobs=args.jobs, progress=fuzz._print_progress
    )
    json_path, md_path = fuzz.write_report(report, args.out, command)
    print(fuzz.markdown(report, command))
    print(f'report: {json_path}, {md_path}')
    return 0 if fuzz.passed(report) else 1


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
