"""`echo-guidance demo`: the main job on the built-in simulated patient, end to end.

Records one demonstration in simulation (virtual patient, simulated Franka arm, capture, recorder,
each its own process talking over DDS), then validates the bag with the independent checker and
prints a summary.
"""

import subprocess
import sys
from pathlib import Path


def register(subparsers):
    """Add ``demo``."""
    parser = subparsers.add_parser(
        'demo',
        help='run the main job on the simulated patient and print a summary',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument('--output-dir', default='out/demo', help='where the bag and logs go')
    parser.add_argument('--duration', type=float, default=10.0, help='seconds to record (default 10)')
    parser.add_argument('--plane', default='PLAX', help='target plane (default PLAX)')
    parser.set_defaults(handler=run)


def _cli(*args):
    return [sys.executable, '-m', 'echo_guidance.cli', *args]


def run(args):
    """Record one simulated demonstration and check it; return the exit status."""
    output_dir = Path(args.output_dir)
    before = set(output_dir.glob('*/metadata.yaml')) if output_dir.exists() else set()
    step = subprocess.run(_cli(
        'record', '--profile', 'record_sim', '--demonstrations', '1', '--duration', str(args.duration),
        '--plane', args.plane, '--output-dir', str(output_dir), '--subject', 'sim-demo',
    ))
    if step.returncode != 0:
        print(f'demo: recording failed (exit {step.returncode}); node logs in {output_dir}/logs',
              file=sys.stderr)
        return step.returncode
    bags = sorted(set(output_dir.glob('*/metadata.yaml')) - before)
    if not bags:
        print(f'demo: the recorder saved no bag in {output_dir}', file=sys.stderr)
        return 1
    bag = bags[-1].parent
    check = subprocess.run(_cli('bag', 'check', str(bag)))
    print(f'\ndemo: {"PASS" if check.returncode == 0 else "FAIL"}: recorded {bag}')
    return check.returncode
