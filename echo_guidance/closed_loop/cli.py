r"""``echo-guidance closed-loop`` (or ``evaluate closed-loop``): autonomous runs in simulation.

    echo-guidance closed-loop --policy baseline=onnx:out/models/cpu_baseline.onnx \
        --policy dreamer=onnx:out/models/cpu_dreamer.onnx \
        --policy fused=fused:out/models/cpu_dreamer.onnx --patients 10 --starts 5 --out out/closed_loop

``evaluate`` takes checkpoints as positional arguments, so ``closed-loop`` cannot be one of its
subcommands; this module registers the stage as its own command and routes ``evaluate closed-loop
...`` to it before the ``evaluate`` parser sees the arguments.
"""

import argparse
import functools
import sys

from echo_guidance.cli_options import add_output_dir

COMMAND = 'closed-loop'


def _add_arguments(parser):
    parser.add_argument(
        '--policy',
        action='append',
        required=True,
        metavar='[NAME=]SPEC',
        help='policy to evaluate (repeatable): oracle[:MM,DEG], onnx:PATH (single frame), fused:PATH '
        '(guidance engine with temporal fusion), stack:COARSE,FINE (coarse-to-fine engine with the stop '
        'judgement), default (the engine with the default models, as the guidance node runs it)',
    )
    parser.add_argument(
        '--guidance-config',
        default=None,
        metavar='FILE',
        help='guidance node parameter file the engine policies read (fusion, reached, stages; default '
        'config/guidance.yaml)',
    )
    parser.add_argument('--patients', type=int, default=10, help='held-out patients (default 10)')
    parser.add_argument(
        '--split', default='test', help='simulator split the patients come from (default test)'
    )
    parser.add_argument(
        '--first-seed', type=int, default=0, help='first patient seed to consider (default 0)'
    )
    parser.add_argument('--planes', default='PLAX,PSAX-AV,PSAX-MV', help='comma-separated target planes')
    parser.add_argument(
        '--starts', type=int, default=5, help='random starts per patient and plane (default 5)'
    )
    parser.add_argument('--seed', type=int, default=0, help='seed of the start poses (default 0)')
    parser.add_argument(
        '--config',
        action='append',
        default=None,
        help='arm_control parameter file with limits.* and planner.* (default config/arm_control.yaml; '
        'repeat to layer files)',
    )
    parser.add_argument(
        '--time-limit', type=float, default=30.0, help='simulated seconds per run (default 30)'
    )
    parser.add_argument(
        '--frame-rate', type=float, default=10.0, help='frames (and guidance) per second (default 10)'
    )
    parser.add_argument('--latency', type=float, default=0.05, help='guidance latency, s (default 0.05)')
    parser.add_argument(
        '--image-size', type=int, default=128, help='rendered frame size (default 128, as the demos)'
    )
    parser.add_argument(
        '--max-offset-mm', type=float, default=30.0, help='start offset x/y, ±mm (default 30)'
    )
    parser.add_argument(
        '--max-offset-deg', type=float, default=30.0, help='start roll/pitch/yaw, ±deg (default 30)'
    )
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads (default 1)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='worker processes, patients shared out among them (default 1; results do not depend on it)',
    )
    add_output_dir(parser, 'output directory (default out/closed_loop)', default='out/closed_loop')
    parser.add_argument(
        '--trace',
        default=None,
        metavar='DIR',
        help="write one CSV per episode into DIR: per frame the true remaining action, the policy's "
        "answer, the planner's target estimate error and the controller state (diagnosis)",
    )
    parser.add_argument('--no-progress', dest='quiet', action='store_true', help='no per-run progress lines')
    parser.add_argument('--quiet', dest='quiet', action='store_true', help=argparse.SUPPRESS)  # older name
    parser.set_defaults(handler=run)


def register(subparsers):
    """Add ``closed-loop`` and route ``evaluate closed-loop ...`` to it."""
    parser = subparsers.add_parser(
        COMMAND,
        help='closed-loop evaluation: autonomous runs on held-out simulated patients',
        description=__doc__.splitlines()[0],
    )
    _add_arguments(parser)
    _route_evaluate(subparsers, parser)


def _forward(evaluate_parser, target):
    """Make ``evaluate_parser`` hand argument lists starting with ``closed-loop`` to ``target``."""
    original = evaluate_parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        if args and args[0] == COMMAND:
            return target.parse_known_args(args[1:], namespace)
        return original(args, namespace)

    evaluate_parser.parse_known_args = parse_known_args
    evaluate_parser.epilog = (
        (evaluate_parser.epilog or '') + f' Closed-loop evaluation: echo-guidance evaluate {COMMAND} --help.'
    ).strip()


def _route_evaluate(subparsers, target):
    """Forward ``evaluate closed-loop`` whether ``evaluate`` is registered before or after this stage."""
    existing = subparsers.choices.get('evaluate')
    if existing is not None:
        _forward(existing, target)
        return
    add_parser = subparsers.add_parser

    def add_parser_and_route(name, **kwargs):
        parser = add_parser(name, **kwargs)
        if name == 'evaluate':
            _forward(parser, target)
        return parser

    subparsers.add_parser = add_parser_and_route


def load_controller_config(paths=None):
    """Return (SafetyLimits, PlannerConfig) from arm_control params files (default: config/arm_control.yaml).

    Several files are layered in order, as ROS loads several ``--params-file``: later values win.

    Raises:
        ValueError: a file is missing or not YAML, or its limits / planner values are malformed.
    """
    import yaml

    from echo_guidance.control.limits import PlannerConfig, SafetyLimits
    from echo_guidance.resources import config_path

    if paths is None:
        paths = [config_path('arm_control.yaml')]
    elif isinstance(paths, (str, bytes)) or hasattr(paths, '__fspath__'):
        paths = [paths]
    limits, planner = {}, {}
    for file in paths:
        try:
            with open(file) as handle:
                document = yaml.safe_load(handle)
        except OSError as error:
            raise ValueError(f'cannot read {file}: {error}') from error
        except yaml.YAMLError as error:
            raise ValueError(f'{file} is not valid YAML: {error}') from error
        if not isinstance(document, dict):
            raise ValueError(f'{file}: expected a ROS parameter file (node: ros__parameters: ...)')
        for section in document.values():
            params = section.get('ros__parameters') if isinstance(section, dict) else None
            if isinstance(params, dict):
                limits.update(params.get('limits') or {})
                planner.update(params.get('planner') or {})
    source = ', '.join(str(p) for p in paths)
    return (
        SafetyLimits.from_mapping(limits, source=source, key_prefix='limits.'),
        PlannerConfig.from_mapping(planner, source=source, key_prefix='planner.'),
    )


def build_policies(specs, seed=0, threads=1, guidance_parameters=None):
    """{name: factory} for command-line policy specs (a worker process rebuilds them with this).

    Raises:
        PolicySpecError, ValueError: a bad spec, or two policies with one name.
    """
    from echo_guidance.closed_loop.policies import parse_policy

    policies = {}
    for spec in specs:
        name, factory = parse_policy(spec, seed, threads, guidance_parameters)
        if name in policies:
            raise ValueError(f'two policies are called {name!r}: name them NAME=SPEC')
        policies[name] = factory
    return policies


def run(args):
    """Run the closed-loop evaluation; return the exit status."""
    from echo_guidance.closed_loop.episode import ClosedLoopConfig
    from echo_guidance.closed_loop.evaluate import evaluate_closed_loop, write_report
    from echo_guidance.closed_loop.policies import PolicySpecError
    from echo_guidance.planes import GUIDANCE_PLANES, UnknownPlaneError, check_plane
    from echo_guidance.sim.splits import seeds_for_split

    try:
        planes = [check_plane(p.strip(), GUIDANCE_PLANES) for p in args.planes.split(',') if p.strip()]
        if args.patients < 1 or args.starts < 1:
            raise ValueError('--patients and --starts must be at least 1')
        seeds = seeds_for_split(args.split, args.patients, args.first_seed)
        limits, planner = load_controller_config(args.config)
        config = ClosedLoopConfig(
            time_limit_s=args.time_limit,
            frame_rate_hz=args.frame_rate,
            guidance_latency_s=args.latency,
            image_size=args.image_size,
            max_start_offset_mm=args.max_offset_mm,
            max_start_offset_deg=args.max_offset_deg,
        )
        from echo_guidance.guidance.settings import guidance_parameters_from_yaml

        guidance_parameters = (
            guidance_parameters_from_yaml(args.guidance_config) if args.guidance_config else None
        )
        if args.jobs < 1:
            raise ValueError(f'--jobs must be at least 1, got {args.jobs}')
        build = functools.partial(
            build_policies, tuple(args.policy), args.seed, args.threads, guidance_parameters
        )
        policies = build()
    except (PolicySpecError, UnknownPlaneError, ValueError) as error:
        print(f'closed-loop: {error}', file=sys.stderr)
        return 2
    for name, factory in policies.items():
        print(f'closed-loop: {name}: {factory.describe()}', file=sys.stderr)
    progress = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    results = evaluate_closed_loop(
        policies,
        seeds,
        planes,
        args.starts,
        limits,
        planner,
        config,
        seed=args.seed,
        progress=progress,
        trace_dir=args.trace,
        jobs=args.jobs,
        build_policies=build,
    )
    print(write_report(results, args.out))
    print(f'closed-loop: wrote {args.out}/results.md, results.json, episodes.csv', file=sys.stderr)
    return 0
