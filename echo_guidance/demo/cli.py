"""`echo-guidance demo`: autonomous scanning on the built-in simulated patient, end to end.

With the default guidance models of the repository (models/guidance/: a coarse and a fine model with
the stop judgement, trained once by the project's own pipeline; ``--retrain`` reproduces them), it
starts the autonomous graph on virtual patient 0 (or ``--patient N``; kinematic simulated arm under
arm control, capture rendering the patient at the arm's pose, scripted pedal pressing the deadman,
guidance, the sonographer's page, the recorder), stops once the controller reports the plane reached and
held, reads the recorded bags back with an independent reader, and prints what happened against
the simulator's ground truth, with a plot.

Exit status: 0 plane reached; 1 the run completed but the plane was not reached; 2 bad input or a
failure of the set-up (a node died, a bad model file, a bag that does not check), named.
"""

import datetime
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_MODEL = 'default'
RETRAIN_DIR = Path('out/default_models')
PROFILE = 'demo_sim'
DEFAULT_DURATION_S = 45.0
HOLD_S = 1.0


def register(subparsers):
    """Add ``demo``."""
    parser = subparsers.add_parser(
        'demo',
        help='autonomous scan of the simulated patient with a trained model; prints a summary',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        '--model',
        default=DEFAULT_MODEL,
        help='exported ONNX model (echo-guidance export) of the guidance node; default: the default '
        'coarse and fine models (models/guidance/)',
    )
    parser.add_argument(
        '--fine-model',
        default='',
        help='fine model for coarse-to-fine guidance with --model FILE (default: none; with the default '
        'models, the default fine model)',
    )
    parser.add_argument(
        '--patient',
        type=int,
        default=0,
        help="virtual patient seed (default 0, held out of the default models' training; the test split "
        'starts 2, 14, 16, ...)',
    )
    parser.add_argument(
        '--retrain',
        action='store_true',
        help=f'first reproduce the default models with the pipeline in {RETRAIN_DIR} (echo-guidance '
        'guidance train-default: hours on a 2-core CPU; finished steps are kept) and run with them',
    )
    parser.add_argument(
        '--plane', default='PLAX', help='target plane: PLAX, PSAX-AV or PSAX-MV (default PLAX)'
    )
    parser.add_argument(
        '--duration',
        type=float,
        default=DEFAULT_DURATION_S,
        help=f'longest run in seconds (default {DEFAULT_DURATION_S:g}); it ends earlier once the controller '
        f'has held plane_reached for {HOLD_S:g} s',
    )
    parser.add_argument('--output-dir', default='out/demo', help='runs go to OUTPUT_DIR/runs/<time>_<plane>/')
    parser.add_argument(
        '--domain-id', type=int, default=None, help="ROS_DOMAIN_ID of the graph (default: the environment's)"
    )
    parser.set_defaults(handler=run)


def _say(text):
    print(f'demo: {text}', flush=True)


def _fail(text):
    print(f'demo: error: {text}', file=sys.stderr, flush=True)
    return 2


def _profile_seed(profile, values):
    """The virtual patient seed the profile's arm and capture both use (placeholders filled from ``values``).

    Raises:
        ValueError: the two nodes render / start on different patients, or the seed is not an integer.
    """
    from echo_guidance.recording.profiles import substitute

    arm = substitute(profile.node('arm_control').parameters.get('kinematic.sim_seed', 0), values)
    capture = substitute(profile.node('capture').parameters.get('sim_seed', 0), values)
    try:
        arm, capture = int(arm), int(capture)
    except ValueError:
        raise ValueError(
            f'profile {profile.name}: patient seeds must be integers, got {arm!r}, {capture!r}'
        ) from None
    if arm != capture:
        raise ValueError(
            f'profile {profile.name}: arm_control kinematic.sim_seed {arm} and capture sim_seed {capture} '
            'differ: the arm would start near one patient while the capture renders another'
        )
    return arm


def _held_out_note(seed):
    """Whether the default models' recipe trained on this patient."""
    from echo_guidance.guidance.recipe import training_seeds
    from echo_guidance.sim.splits import split_of_seed

    if seed in training_seeds():
        return ' (a patient the default models were trained on)'
    return f' (held out of the default models\' training; {split_of_seed(seed)} split)'


def _check_models(model, fine):
    """Resolve and load the models as the guidance node will (one warm-up frame); return their ids.

    Raises:
        BackendError: a model file that cannot be loaded; DefaultModelError: damaged default models.
    """
    from echo_guidance.guidance.backends import load_backend
    from echo_guidance.guidance.default_models import resolve_model_paths

    ids = []
    for path in resolve_model_paths(model, fine):
        if path:
            backend = load_backend(str(path), threads=1, warm_up=True)
            ids.append(backend.model_id)
            backend.close()
    return ' + '.join(ids)


def run(args):
    """Run the demo; return the exit status (0 reached, 1 not reached, 2 bad input or set-up failure)."""
    from echo_guidance.guidance.backends import BackendError
    from echo_guidance.guidance.default_models import DefaultModelError
    from echo_guidance.planes import UnknownPlaneError, check_plane

    try:
        check_plane(args.plane)
    except UnknownPlaneError as error:
        return _fail(str(error))
    if not args.duration > 0:
        return _fail(f'--duration must be > 0 seconds, got {args.duration}')
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        return _fail(f'--domain-id must be 0..232, got {args.domain_id}')
    if args.patient < 0:
        return _fail(f'--patient must be a seed >= 0, got {args.patient}')
    model, fine = args.model, args.fine_model
    if args.retrain:
        if model != DEFAULT_MODEL or fine:
            return _fail('--retrain reproduces the default models: give no --model / --fine-model with it')
        from echo_guidance.guidance.cli import train_default_models
        from echo_guidance.pipeline import PipelineError

        try:
            model, fine = (str(p) for p in train_default_models(RETRAIN_DIR, say=_say))
        except PipelineError as error:
            return _fail(f'retraining the default models: {error}')
    for path in (model, fine):
        if path and path != DEFAULT_MODEL and not Path(path).is_file():
            return _fail(
                f'model file {path} does not exist (give an ONNX file written by echo-guidance export)'
            )
    try:
        model_id = _check_models(model, fine)
    except (BackendError, DefaultModelError) as error:
        return _fail(f'bad model: {error}')
    return _run_demo(args, model, fine, model_id)


def _run_demo(args, model, fine, model_id):
    from echo_guidance.demo.readback import RunBagError, check_demonstration_bag, read_run
    from echo_guidance.demo.run import DemoInterrupted, DemoSetupError, free_display_port, run_graph
    from echo_guidance.demo.summary import format_summary, plot_run, summarise_run
    from echo_guidance.recording.profiles import ProfileError, load_profile
    from echo_guidance.sim import Patient
    from echo_guidance.up.graph import builtin_values, check_profile

    try:
        profile = load_profile(PROFILE)
        port = free_display_port()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
        run_dir = Path(args.output_dir) / 'runs' / f'{stamp}_{args.plane}_patient{args.patient}'
        values = {
            **builtin_values(profile, run_dir),
            **profile.argument_values(
                {
                    'model': str(model),
                    'fine_model': str(fine or ''),
                    'target_plane': args.plane,
                    'display_port': str(port),
                    'patient': str(args.patient),
                }
            ),
        }
        seed = _profile_seed(profile, values)
    except (ProfileError, ValueError) as error:
        return _fail(str(error))
    problems = check_profile(profile, values)
    if problems:
        return _fail(f'profile {profile.name}: ' + '; '.join(problems))
    patient = Patient.from_seed(seed)
    target = patient.standard_plane_pose(args.plane)
    overrides = {
        'recorder': {
            'session.subject_id': patient.patient_id,
            'session.operator_id': 'echo-guidance demo (autonomous)',
            'session.extra_yaml': json.dumps(
                {'profile': profile.name, 'model': str(model), 'simulator': {'seed': seed}}
            ),
        }
    }
    env = dict(os.environ)
    if args.domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(args.domain_id)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # This process's own node (the monitor) must be on the graph's domain.
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE') if k in env})

    _say(
        f'model {model_id} ({model}); target plane {args.plane}; virtual patient {patient.patient_id} '
        f'(seed {seed}); ROS_DOMAIN_ID={env.get("ROS_DOMAIN_ID", "0")}; run folder {run_dir}'
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        record = run_graph(profile, values, run_dir, args.duration, HOLD_S, overrides=overrides, env=env)
    except DemoSetupError as error:
        return _fail(f'{error}\n(node logs in {run_dir / "logs"})')
    except DemoInterrupted as stop:
        from echo_guidance.up.supervise import repair_hint

        statuses = ', '.join(f'{name} ({code})' for name, code in stop.record.exit_statuses.items())
        _say(f'{stop}: graph stopped: {statuses}; no summary (the run did not finish)')
        for bag in stop.record.cut_off_bags:
            _say(repair_hint(bag))
        return stop.exit_status
    failed_exits = {name: code for name, code in record.exit_statuses.items() if code != 0}
    _say(
        f'graph stopped after {record.wall_s:.1f} s: '
        + ', '.join(f'{name} ({code})' for name, code in record.exit_statuses.items())
    )

    ok, output = check_demonstration_bag(record.demonstration_bag)
    if not ok:
        return _fail(
            f'the recorded bag {record.demonstration_bag} does not pass echo-guidance bag check:\n{output}'
        )
    try:
        data = read_run([record.demonstration_bag, record.control_bag])
        summary = summarise_run(
            args.plane, data.pose_stamps_s, data.poses_mm, target, data.states, data.press_stamps_s
        )
    except (RunBagError, ValueError) as error:
        return _fail(str(error))
    plot_path = run_dir / 'demo_run.png'
    plot_run(
        summary,
        data.poses_mm,
        target,
        plot_path,
        title=f'echo-guidance demo: {patient.patient_id}, {args.plane}, {model_id}',
    )

    recorded_ids = ', '.join(sorted(data.model_ids)) or model_id
    counts = data.counts
    held_out = _held_out_note(seed) if model == DEFAULT_MODEL else ''
    fields = [
        ('model', f'{recorded_ids} ({model})'),
        (
            'patient',
            f'virtual patient {patient.patient_id} (seed {seed}){held_out}; ground truth: the '
            f"simulator's {args.plane} pose",
        ),
        (
            '>recorded',
            f'{counts.get("/us/image", 0)} frames, {counts.get("/arm/probe_pose", 0)} probe poses, '
            f'{counts.get("/guidance", 0)} guidance ({record.guidance_valid} valid live), '
            f'{counts.get("/arm_control/state", 0)} controller states, '
            f'{counts.get("/pedal/event", 0)} pedal events',
        ),
        (
            '>bags',
            f'{record.demonstration_bag} (echo-guidance bag check: ok) + {record.control_bag}; both read '
            'back with rosbags',
        ),
        ('>plot', str(plot_path)),
        ('>page', f'{record.display_url or "(the display did not report its address)"} (while it ran)'),
        ('>run', f'stopped: {record.stop_reason}; wall time {record.wall_s:.1f} s'),
    ]
    if failed_exits:
        fields.append(('>warning', f'nodes exited with non-zero status on shutdown: {failed_exits}'))
    lines = format_summary(summary, fields)
    text = '\n'.join(lines)
    print('\n' + '=' * 30 + ' echo-guidance demo ' + '=' * 30)
    print(text)
    if summary.reached:
        verdict = 'PLANE REACHED: exit 0'
    else:
        verdict = 'NOT REACHED: the run completed, but the plane was not reached: exit 1'
    print('=' * 80 + f'\ndemo: {verdict}', flush=True)
    (run_dir / 'summary.txt').write_text(text + '\n' + verdict + '\n')
    details = {
        **summary.as_dict(),
        'model': str(model),
        'model_id': recorded_ids,
        'patient_id': patient.patient_id,
        'seed': seed,
        'counts': counts,
        'demonstration_bag': str(record.demonstration_bag),
        'control_bag': str(record.control_bag),
        'plot': str(plot_path),
        'display_url': record.display_url,
        'stop_reason': record.stop_reason,
        'wall_s': record.wall_s,
        'exit_statuses': record.exit_statuses,
        'finished_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    }
    (run_dir / 'summary.json').write_text(json.dumps(details, indent=2, default=str) + '\n')
    return 0 if summary.reached else 1
