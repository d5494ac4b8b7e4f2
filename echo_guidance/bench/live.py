"""`echo-guidance bench live`: capture → guidance → receipt latency in separate processes at the capture rate.

Three processes on one ROS domain (plus the arm-state node for ``--source sim``):

* the capture node: the test pattern (``--source test_pattern``, default) or the virtual patient
  rendered at the scripted arm's pose (``--source sim``), ``--size``² mono8 at ``--rate`` fps;
* the guidance node with ``--model`` (or, without one, the ``--config`` network with random weights,
  exported and quantized to int8 like a trained model would be; the output says which);
* a receiver (``python -m echo_guidance.bench.live --receive``) subscribing to ``/guidance`` and
  ``/us/frame_info`` (every frame the capture published, with its stamp).

For ``--duration`` seconds after a short warm-up, the receiver notes when each guidance arrives
(system clock, the clock the capture stamps frames with, so receipt − header.stamp is the latency
from frame acquisition to guidance in hand). Reported: p50 / p90 / p99 / max latency, frames
published, guided, skipped (published but never answered), and a backlog check (the latency of the
last tenth of the run against the first tenth). Pass: p99 <= 50 ms and no backlog.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

TARGET_P99_MS = 50.0
BACKLOG_GROWTH_MS = 20.0
"""A median latency this much higher in the last tenth of the run than in the first means a backlog."""
TAIL_GRACE_S = 0.3
"""Frames this close to the end of the window may still have their guidance in flight: not counted."""


SIM_SEED = 0
SIM_PLANE = 'PLAX'
# Small sways about the plane (x, y mm; roll, pitch, yaw deg about the flange, 135 mm above the probe
# face, so 1 deg moves the face 2.4 mm; no depth change): small enough that (measured over 120 s) all
# frames show the heart and the guidance runs its models (coarse, then fine) on every frame.
SIM_SWAY = [1.0, 1.0, 0.0, 0.5, 0.5, 0.5]


def scripted_scan_near_plane(seed=SIM_SEED, plane=SIM_PLANE, sway=SIM_SWAY):
    """``scripted.centre`` / ``scripted.amplitude`` that keep the scripted probe at ``plane`` on the skin.

    The scripted arm's built-in trajectory is the recorder benchmark's and lies where the simulated
    patient shows no echo; there the guidance answers "no echo" without running a model, so the
    latency would not include the models. The centre is the flange pose that puts the probe (the
    flange → probe calibration of config/arm_calibration.yaml) on the plane of virtual patient
    ``seed``, slid onto the skin.
    """
    from echo_guidance.arm.calibration import calibration_from_file
    from echo_guidance.geometry import matrix_to_action
    from echo_guidance.sim import Patient

    calibration = calibration_from_file()
    patient = Patient.from_seed(seed)
    probe = patient.in_contact(patient.standard_plane_pose(plane))
    centre = matrix_to_action(calibration.flange_pose(probe))
    return {'scripted.centre': [float(v) for v in centre], 'scripted.amplitude': [float(v) for v in sway]}


def register_bench(subparsers):
    """Add ``bench live``."""
    parser = subparsers.add_parser(
        'live',
        help='frame-to-guidance latency across processes at 30 fps',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument('--duration', type=float, default=60.0, help='measured seconds (default 60)')
    parser.add_argument('--rate', type=float, default=30.0, help='capture frame rate (default 30)')
    parser.add_argument('--size', type=int, default=128, help='frame side in pixels (default 128)')
    parser.add_argument(
        '--source',
        choices=('test_pattern', 'sim'),
        default='test_pattern',
        help='frame source (sim also starts the scripted arm)',
    )
    parser.add_argument(
        '--model',
        default=None,
        help='ONNX model, or "default" for the default coarse + fine models (the full guidance stack); '
        'without it, a random-weight --config network',
    )
    parser.add_argument(
        '--fine-model', default='', help='fine model with --model FILE (coarse-to-fine guidance)'
    )
    parser.add_argument(
        '--config',
        default='config/train/cpu_dreamer.yaml',
        help='architecture timed when no --model is given',
    )
    parser.add_argument('--no-int8', action='store_true', help='with no --model: use the float graph')
    parser.add_argument(
        '--backend', default='onnxruntime-cpu', help='guidance backend (default onnxruntime-cpu)'
    )
    parser.add_argument('--threads', type=int, default=2, help='guidance threads (default 2)')
    parser.add_argument('--no-overlay', action='store_true', help='do not publish the overlay image')
    parser.add_argument('--warmup', type=float, default=3.0, help='seconds ignored after the first guidance')
    parser.add_argument(
        '--domain-id', type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)"
    )
    parser.add_argument('--output-dir', default=None, help='logs and models (default out/bench_live/<time>)')
    parser.add_argument('--json', default=None, metavar='PATH', help='also write the figures as JSON')
    parser.add_argument('--startup-timeout', type=float, default=90.0, help='seconds to wait for the nodes')
    parser.set_defaults(handler=run)


# ------------------------------------------------------------------------------------------------
# The receiver process


def receive(duration_s, warmup_s, out_path, timeout_s=60.0):
    """Record guidance receipts and published frames for ``duration_s`` after the first one; write JSON."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import UInt64MultiArray

    from echo_guidance.msg import Guidance
    from echo_guidance.nodes._common import DIAGNOSTICS_QOS, IMAGE_QOS
    from echo_guidance.nodes.guidance import GUIDANCE_QOS

    rclpy.init()
    node = rclpy.create_node('bench_live_receiver')
    guidance, frames, diagnostics = [], [], {}

    def on_guidance(msg):
        guidance.append(
            (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, time.time_ns(), bool(msg.valid))
        )

    def on_frame_info(msg):
        frames.append((int(msg.data[0]), int(msg.data[1])))

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith('guidance'):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(Guidance, '/guidance', on_guidance, GUIDANCE_QOS)
    node.create_subscription(UInt64MultiArray, '/us/frame_info', on_frame_info, IMAGE_QOS)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, DIAGNOSTICS_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print('receiver ready', flush=True)
    try:
        deadline = time.monotonic() + timeout_s
        # Both streams must flow before the window opens (DDS discovery of each publisher takes its time).
        while not (guidance and frames):
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                print(
                    f'receiver: within {timeout_s} s got {len(guidance)} guidance and {len(frames)} '
                    'frame-info messages; need both',
                    file=sys.stderr,
                    flush=True,
                )
                return 2
        start_ns = time.time_ns() + int(warmup_s * 1e9)
        end_ns = start_ns + int(duration_s * 1e9)
        print(
            f'receiver: first guidance; measuring {duration_s:g} s after {warmup_s:g} s warm-up', flush=True
        )
        while time.time_ns() < end_ns + int(TAIL_GRACE_S * 1e9):
            executor.spin_once(timeout_sec=0.05)
        Path(out_path).write_text(
            json.dumps(
                {
                    'window_ns': [start_ns, end_ns],
                    'guidance': guidance,
                    'frames': frames,
                    'diagnostics': diagnostics,
                }
            )
        )
        print('receiver done', flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# ------------------------------------------------------------------------------------------------
# Evaluation (plain Python)


def evaluate(record, frame_period_s):
    """Latency and skip figures from the receiver's record (see the module docstring)."""
    start_ns, end_ns = record['window_ns']
    stamps = {}
    for stamp, receipt, valid in record['guidance']:
        stamps.setdefault(stamp, (receipt, valid))
    frames = sorted({s for s, _ in record['frames'] if start_ns <= s <= end_ns})
    latency, invalid, order = [], 0, []
    for stamp in frames:
        if stamp in stamps:
            receipt, valid = stamps[stamp]
            latency.append((receipt - stamp) * 1e-6)
            order.append(stamp)
            invalid += not valid
    latency = np.array(latency)
    skipped = len(frames) - len(latency)
    sequences = sorted(q for s, q in record['frames'] if start_ns <= s <= end_ns)
    lost_before_receiver = (sequences[-1] - sequences[0] + 1 - len(sequences)) if sequences else 0
    out = {
        'frames_published': len(frames),
        'frames_guided': int(latency.size),
        'frames_skipped': skipped,
        'frame_info_gaps': int(lost_before_receiver),
        'invalid_guidance': int(invalid),
        'window_s': (end_ns - start_ns) * 1e-9,
    }
    if latency.size:
        tenth = max(1, latency.size // 10)
        first, last = float(np.median(latency[:tenth])), float(np.median(latency[-tenth:]))
        out.update(
            {
                'latency_ms': {
                    q: round(float(np.percentile(latency, p)), 2)
                    for q, p in (('p50', 50), ('p90', 90), ('p99', 99))
                },
                'latency_max_ms': round(float(latency.max()), 2),
                'latency_first_tenth_median_ms': round(first, 2),
                'latency_last_tenth_median_ms': round(last, 2),
                'backlog': bool(last - first > BACKLOG_GROWTH_MS),
                'guidance_rate_hz': round(latency.size / max(out['window_s'], 1e-9), 2),
                'expected_rate_hz': round(1.0 / frame_period_s, 2),
            }
        )
    return out


def failures(result):
    """Reasons the run fails the criteria (empty when it passes)."""
    reasons = []
    if not result.get('frames_guided'):
        return ['no guidance received for the frames of the measured window']
    if result['latency_ms']['p99'] > TARGET_P99_MS:
        reasons.append(f'p99 latency {result["latency_ms"]["p99"]} ms > {TARGET_P99_MS} ms')
    if result['backlog']:
        reasons.append(
            f'backlog: median latency grew from {result["latency_first_tenth_median_ms"]} ms to '
            f'{result["latency_last_tenth_median_ms"]} ms'
        )
    return reasons


# ------------------------------------------------------------------------------------------------
# The command


def _prepare_model(args, work_dir, log):
    from echo_guidance.bench._guidance_models import (
        describe_file,
        export_checkpoint,
        model_config_from,
        quantized_copy,
        random_checkpoint,
    )

    if args.model == 'default':
        from echo_guidance.guidance.default_models import default_model_paths

        for path in default_model_paths():
            log(f'model: {describe_file(path)}')
        return 'default'
    if args.model:
        log(f'model: {describe_file(args.model)}')
        if args.fine_model:
            log(f'fine model: {describe_file(args.fine_model)}')
        return Path(args.model).resolve()
    config = model_config_from(args.config, args.size)
    onnx_path = export_checkpoint(random_checkpoint(config, work_dir), work_dir)
    if args.no_int8:
        log(
            f'model: random weights, {config.kind} {config.encoder} at {args.size}² ({args.config}), float: '
            f'{onnx_path}'
        )
        return onnx_path.resolve()
    path, _, calibration = quantized_copy(onnx_path, work_dir)
    log(
        f'model: random weights, {config.kind} {config.encoder} at {args.size}² ({args.config}), int8 '
        f'({calibration}): {path}'
    )
    return path.resolve()


def run(args):
    """Run the benchmark; return 0 when it passes, 1 when it fails, 2 when it could not run."""
    from echo_guidance.bench.record import CpuMeter
    from echo_guidance.recording.launcher import LaunchError, ManagedProcess
    from echo_guidance.recording.profiles import NodeSpec, node_command

    if not (args.duration > 0 and args.rate > 0 and args.size >= 16):
        print('bench live: --duration and --rate must be positive and --size >= 16', file=sys.stderr)
        return 2
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    out_dir = Path(args.output_dir or Path('out') / 'bench_live' / time.strftime('%Y%m%dT%H%M%S')).resolve()
    logs = out_dir / 'logs'
    logs.mkdir(parents=True, exist_ok=True)

    def log(text):
        print(text, flush=True)

    log(
        f'bench live: {args.duration:g} s at {args.rate:g} fps, {args.size}x{args.size} {args.source}, '
        f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, '
        f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, output {out_dir}'
    )
    try:
        model = _prepare_model(args, out_dir / 'models', log)
    except (ValueError, OSError, RuntimeError) as err:
        print(f'bench live: cannot prepare the model: {err}', file=sys.stderr)
        return 2
    nodes = []
    if args.source == 'sim':
        nodes.append(
            NodeSpec(
                'arm_state',
                'arm_state',
                ('arm_calibration.yaml', 'arm_scripted.yaml'),
                {'scripted.epoch_s': float(math.floor(time.time())), **scripted_scan_near_plane()},
            )
        )
        capture = {'source_kind': 'sim', 'sim_seed': 0, 'rate_hz': args.rate}
    else:
        capture = {
            'source_kind': 'test_pattern',
            'source_spec': f'{args.size}x{args.size}',
            'rate_hz': args.rate,
        }
    nodes.append(NodeSpec('capture', 'capture', (), capture))
    guidance_params = {'model_path': str(model), 'backend': args.backend, 'threads': args.threads}
    if args.fine_model:
        guidance_params['fine_model_path'] = str(Path(args.fine_model).resolve())
    if args.no_overlay:
        guidance_params['overlay.enabled'] = False
    nodes.append(NodeSpec('guidance', 'guidance', ('guidance.yaml',), guidance_params))
    record_path = out_dir / 'receiver.json'
    processes = []
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    try:
        receiver = ManagedProcess(
            'receiver',
            [
                sys.executable,
                '-m',
                'echo_guidance.bench.live',
                '--receive',
                '--duration',
                str(args.duration),
                '--warmup',
                str(args.warmup),
                '--out',
                str(record_path),
                '--timeout',
                str(args.startup_timeout),
            ],
            logs / 'receiver.log',
            env,
        )
        processes.append(receiver)
        receiver.wait_for('receiver ready', args.startup_timeout)
        for spec in nodes:
            processes.append(
                ManagedProcess(spec.name, node_command(spec, params_dir=logs), logs / f'{spec.name}.log', env)
            )
        by_name = {p.name: p for p in processes}
        by_name['guidance'].wait_for('guidance ready', args.startup_timeout)
        by_name['capture'].wait_for('capturing from', args.startup_timeout)
        receiver.wait_for('first guidance', args.startup_timeout)
        meter = CpuMeter({p.name: p.pid for p in processes if p is not receiver})
        meter.start()
        status = receiver.popen.wait(timeout=args.duration + args.warmup + 60)
        cpu = meter.stop()
        if status != 0:
            raise LaunchError(f'the receiver failed ({status}):\n{receiver.tail()}')
        for process in processes:
            if not process.running() and process is not receiver:
                raise LaunchError(f'{process.name} exited ({process.popen.returncode}):\n{process.tail()}')
    except (LaunchError, OSError) as err:
        print(f'bench live: {err}', file=sys.stderr)
        return 2
    except Exception as err:  # subprocess timeouts and the like: still stop the nodes
        print(f'bench live: {type(err).__name__}: {err}', file=sys.stderr)
        return 2
    finally:
        exits = {p.name: p.stop() for p in reversed(processes)}
    log(f'processes stopped: {", ".join(f"{k} exit {v}" for k, v in exits.items())}')
    record = json.loads(record_path.read_text())
    result = evaluate(record, 1.0 / args.rate)
    result['node_diagnostics'] = {
        k: record['diagnostics'].get(k)
        for k in (
            'frames_skipped',
            'inference_ms_p50',
            'inference_ms_p99',
            'latency_ms_p50',
            'latency_ms_p99',
            'model_id',
            'backend',
            'rate_hz',
        )
    }
    result['cpu_percent_of_one_core'] = {k: round(v, 1) for k, v in cpu['processes'].items()}
    result['machine_cpu_percent'] = round(cpu['machine_percent'], 1)
    result['load_average'] = [round(v, 2) for v in cpu['load_average']]
    result['failures'] = failures(result)
    _print_report(result, log)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if not result['failures'] else 1


def _print_report(result, log):
    log(
        f'frames published {result["frames_published"]}, guided {result["frames_guided"]}, skipped '
        f'{result["frames_skipped"]} (window {result["window_s"]:.1f} s; invalid guidance '
        f'{result["invalid_guidance"]})'
    )
    if result.get('latency_ms'):
        lat = result['latency_ms']
        log(
            f'frame stamp -> guidance receipt: p50 {lat["p50"]} ms, p90 {lat["p90"]} ms, '
            f'p99 {lat["p99"]} ms, max {result["latency_max_ms"]} ms; first/last tenth median '
            f'{result["latency_first_tenth_median_ms"]} / {result["latency_last_tenth_median_ms"]} ms '
            f'(backlog: {"YES" if result["backlog"] else "no"})'
        )
    diag = result['node_diagnostics']
    log(
        f'guidance node: inference p50 {diag["inference_ms_p50"]} ms, p99 {diag["inference_ms_p99"]} ms, '
        f'skipped {diag["frames_skipped"]}, model {diag["model_id"]}'
    )
    log(
        f'CPU (% of one core): {result["cpu_percent_of_one_core"]}; '
        f'machine {result["machine_cpu_percent"]} %, '
        f'load average {result["load_average"]}'
    )
    log('PASS' if not result['failures'] else 'FAIL: ' + '; '.join(result['failures']))


def _main(argv=None):
    parser = argparse.ArgumentParser(description='bench live receiver (started by echo-guidance bench live)')
    parser.add_argument('--receive', action='store_true', required=True)
    parser.add_argument('--duration', type=float, required=True)
    parser.add_argument('--warmup', type=float, default=3.0)
    parser.add_argument('--out', required=True)
    parser.add_argument('--timeout', type=float, default=60.0)
    args = parser.parse_args(argv)
    return receive(args.duration, args.warmup, args.out, args.timeout)


if __name__ == '__main__':
    raise SystemExit(_main())
