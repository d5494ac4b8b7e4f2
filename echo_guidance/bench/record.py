"""`echo-guidance bench record`: record with simulated sources and check nothing is lost or mis-synchronised.

The ``bench_record`` profile runs three nodes as separate processes: the arm-state node playing
the scripted analytic trajectory T(t) at 1 kHz, the capture node's 640×480 mono8 test pattern at
30 fps (each frame carries its index in the image), and the recorder. The benchmark starts one
demonstration through ``/recorder/start``, lets it run for ``--duration`` seconds, stops it,
stops the nodes and reads the bag back:

* frames recorded vs produced: the frame indexes in the images must be contiguous;
* poses recorded vs produced: pose stamps lie on the arm's 1 ms grid and must be contiguous;
* synchronised-pose error: each valid synced pose against T(frame stamp), the same function the
  arm played, through the calibration stored in the bag (mm and degrees);
* CPU use per process over the recording (% of one core), the machine's total and the busiest
  other processes; bag size and write rate.

Pass criteria: zero frames and zero poses dropped, every frame synchronised, errors under
0.1 mm and 0.05°.
"""

import dataclasses
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

MAX_TRANSLATION_ERROR_MM = 0.1
MAX_ROTATION_ERROR_DEG = 0.05


def register_bench(subparsers):
    """Add ``bench record``."""
    parser = subparsers.add_parser(
        'record',
        help='record with simulated sources; count losses, check sync',
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        '--duration',
        type=float,
        default=60.0,
        metavar='SECONDS',
        help='length of the recorded demonstration (default 60)',
    )
    parser.add_argument(
        '--output-dir', default=None, help='where bags and logs go (default out/bench_record/<time>)'
    )
    parser.add_argument(
        '--keep-bag', action='store_true', help='keep the bag (default: delete it after reading)'
    )
    parser.add_argument(
        '--domain-id',
        type=int,
        default=None,
        help="ROS_DOMAIN_ID for the nodes and the benchmark (default: the environment's)",
    )
    parser.add_argument('--json', default=None, metavar='PATH', help='also write the figures as JSON')
    parser.add_argument('--startup-timeout', type=float, default=60.0, help='seconds to wait for the nodes')
    parser.set_defaults(handler=run)


# ------------------------------------------------------------------------------------------------
# Reading the bag back (plain Python)


@dataclasses.dataclass
class RecordingEvaluation:
    """What the bag holds compared with what the simulated sources produced."""

    frames_recorded: int
    frames_produced: int
    frame_index_first: int
    frame_index_last: int
    frames_duplicated: int
    poses_recorded: int
    poses_produced: int
    poses_off_grid: int
    synced_poses: int
    synced_valid: int
    synced_missing: int
    translation_error_mm: dict
    rotation_error_deg: dict
    raw_pose_error_mm: float
    duration_s: float
    bag_bytes: int
    bag_messages: int

    @property
    def frames_dropped(self):
        """Frames produced in the recorded span but not in the bag."""
        return self.frames_produced - (self.frames_recorded - self.frames_duplicated)

    @property
    def poses_dropped(self):
        """Pose samples produced in the recorded span but not in the bag."""
        return self.poses_produced - self.poses_recorded

    def failures(self):
        """Reasons the recording fails the benchmark's criteria (empty when it passes)."""
        reasons = []
        if self.frames_recorded == 0:
            reasons.append('no frames recorded')
        if self.frames_dropped:
            reasons.append(f'{self.frames_dropped} frames dropped')
        if self.frames_duplicated:
            reasons.append(f'{self.frames_duplicated} frames recorded twice')
        if self.poses_dropped:
            reasons.append(f'{self.poses_dropped} poses dropped')
        if self.poses_off_grid:
            reasons.append(f'{self.poses_off_grid} pose stamps off the 1 ms grid')
        if self.synced_missing:
            reasons.append(f'{self.synced_missing} frames without a synced-pose message')
        if self.synced_valid < self.synced_poses:
            reasons.append(f'{self.synced_poses - self.synced_valid} frames flagged without a valid pose')
        if self.synced_valid and self.translation_error_mm['max'] >= MAX_TRANSLATION_ERROR_MM:
            reasons.append(
                f'translation error {self.translation_error_mm["max"]:.4f} mm >= '
                f'{MAX_TRANSLATION_ERROR_MM} mm'
            )
        if self.synced_valid and self.rotation_error_deg['max'] >= MAX_ROTATION_ERROR_DEG:
            reasons.append(
                f'rotation error {self.rotation_error_deg["max"]:.4f} deg >= {MAX_ROTATION_ERROR_DEG} deg'
            )
        return reasons


def _summary(values):
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {'mean': math.nan, 'p99': math.nan, 'max': math.nan}
    return {'mean': float(values.mean()), 'p99': float(np.percentile(values, 99)), 'max': float(values.max())}


def pose_errors(estimated_mm, truth_mm):
    """Translation error (mm) and geodesic rotation error (degrees) between two 4×4 poses."""
    translation = float(np.linalg.norm(estimated_mm[:3, 3] - truth_mm[:3, 3]))
    relative = estimated_mm[:3, :3].T @ truth_mm[:3, :3]
    cosine = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return translation, math.degrees(math.acos(cosine))


def evaluate_bag(bag_path, trajectory, pose_rate_hz=1000.0, decode_index=None):
    """Compare a recorded bag with the scripted sources that produced it.

    Args:
        bag_path: the bag.
        trajectory: the SinusoidTrajectory the arm played (its epoch is the pose grid's origin).
        pose_rate_hz: the arm's sample rate.
        decode_index: function image -> frame index (the test pattern's decoder by default).
    """
    from echo_guidance.arm.calibration import FlangeToProbeCalibration
    from echo_guidance.bags import DemonstrationBagReader

    if decode_index is None:
        from echo_guidance.sources.test_pattern import decode_pattern_index as decode_index
    with DemonstrationBagReader(bag_path) as bag:
        info = bag.info()
        calibration = FlangeToProbeCalibration(info['session']['flange_to_probe'], source='bag session info')
        indexes, frame_stamps = [], []
        for stamp, image in bag.iter_frames():
            indexes.append(decode_index(image))
            frame_stamps.append(stamp)
        synced = bag.synced_poses()
        poses = bag.probe_poses()
    indexes = np.asarray(indexes, dtype=np.int64)
    grid = (poses.stamps_ns * 1e-9 - trajectory.epoch_s) * pose_rate_hz
    ticks = np.round(grid).astype(np.int64)
    off_grid = int(np.sum(np.abs(grid - ticks) > 0.01))
    unique_ticks = np.unique(ticks)
    raw_errors = [
        pose_errors(poses.poses_mm[i], trajectory.probe_pose(poses.stamps_ns[i] * 1e-9, calibration))[0]
        for i in range(0, len(ticks), max(len(ticks) // 200, 1))
    ]
    by_stamp = {int(s): i for i, s in enumerate(synced.stamps_ns)}
    translation, rotation = [], []
    for i, stamp in enumerate(synced.stamps_ns):
        if not synced.valid[i]:
            continue
        t_err, r_err = pose_errors(synced.poses_mm[i], trajectory.probe_pose(stamp * 1e-9, calibration))
        translation.append(t_err)
        rotation.append(r_err)
    return RecordingEvaluation(
        frames_recorded=len(indexes),
        frames_produced=int(indexes.max() - indexes.min() + 1) if len(indexes) else 0,
        frame_index_first=int(indexes.min()) if len(indexes) else -1,
        frame_index_last=int(indexes.max()) if len(indexes) else -1,
        frames_duplicated=int(len(indexes) - len(np.unique(indexes))),
        poses_recorded=len(unique_ticks),
        poses_produced=int(unique_ticks.max() - unique_ticks.min() + 1) if len(unique_ticks) else 0,
        poses_off_grid=off_grid,
        synced_poses=len(synced.stamps_ns),
        synced_valid=int(synced.valid.sum()),
        synced_missing=sum(1 for s in frame_stamps if int(s) not in by_stamp),
        translation_error_mm=_summary(translation),
        rotation_error_deg=_summary(rotation),
        raw_pose_error_mm=float(max(raw_errors)) if raw_errors else math.nan,
        duration_s=float(info['duration_s']),
        bag_bytes=int(info['size_bytes']),
        bag_messages=int(info['message_count']),
    )


# ------------------------------------------------------------------------------------------------
# CPU accounting from /proc


def _clock_ticks():
    return os.sysconf('SC_CLK_TCK')


def process_cpu_ticks(pid):
    """Utime + stime of a process in clock ticks, or None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _process_name(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            parts = [p.decode(errors='replace') for p in handle.read().split(b'\0') if p]
    except OSError:
        return '?'
    if not parts:
        return '?'
    shown = [Path(parts[0]).name] + parts[1:4]
    return ' '.join(shown)[:80]


def all_process_ticks():
    """{pid: cpu ticks} of every process on the machine."""
    ticks = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            value = process_cpu_ticks(int(entry))
            if value is not None:
                ticks[int(entry)] = value
    return ticks


def machine_busy_ticks():
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    with open('/proc/stat') as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU use of named processes, the whole machine and the busiest others, between start() and stop()."""

    def __init__(self, named_pids):
        """Remember which processes are ours ({name: pid})."""
        self.named_pids = dict(named_pids)

    def start(self):
        """Take the first reading."""
        self._wall = time.monotonic()
        self._all = all_process_ticks()
        self._machine = machine_busy_ticks()

    def stop(self):
        """Take the second reading; return a dict of percentages of one core."""
        wall = time.monotonic() - self._wall
        after = all_process_ticks()
        busy, total = machine_busy_ticks()
        hz = _clock_ticks()

        def percent(ticks):
            return 100.0 * ticks / hz / wall

        ours = {
            name: percent(after.get(pid, self._all.get(pid, 0)) - self._all.get(pid, 0))
            for name, pid in self.named_pids.items()
        }
        our_pids = set(self.named_pids.values())
        others = sorted(
            (
                (percent(after[pid] - self._all[pid]), pid)
                for pid in after
                if pid in self._all and pid not in our_pids and after[pid] > self._all[pid]
            ),
            reverse=True,
        )
        cpus = os.cpu_count() or 1
        machine = 100.0 * cpus * (busy - self._machine[0]) / max(total - self._machine[1], 1)
        return {
            'wall_s': wall,
            'processes': ours,
            'machine_percent': machine,
            'cpus': cpus,
            'others': [(round(p, 1), _process_name(pid)) for p, pid in others[:6]],
            'load_average': os.getloadavg(),
        }


# ------------------------------------------------------------------------------------------------
# The command


def _print(text=''):
    print(text, flush=True)


def run(args):
    """Run the benchmark; return 0 when it passes, 1 when it fails, 2 when it could not run."""
    if not args.duration > 0:
        print('bench record: --duration must be positive', file=sys.stderr)
        return 2
    env_updates = {
        'ROS_AUTOMATIC_DISCOVERY_RANGE': os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    }
    if args.domain_id is not None:
        env_updates['ROS_DOMAIN_ID'] = str(args.domain_id)
    os.environ.update(env_updates)  # for this process's own rclpy and the nodes alike

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from echo_guidance.arm.trajectory import SinusoidTrajectory
    from echo_guidance.recording.launcher import LaunchError, ProfileRun
    from echo_guidance.recording.monitor import RosStatusMonitor, format_status
    from echo_guidance.recording.profiles import load_profile

    out_dir = Path(args.output_dir or Path('out') / 'bench_record' / time.strftime('%Y%m%dT%H%M%S'))
    bags_dir = out_dir / 'bags'
    epoch = float(math.floor(time.time()))
    profile = load_profile('bench_record')
    run_ = ProfileRun(
        profile,
        out_dir / 'logs',
        values={'output_dir': str(bags_dir.resolve())},
        overrides={'arm_state': {'scripted.epoch_s': epoch}},
    )
    _print(
        f'bench record: {args.duration:g} s on {socket.gethostname()} ({os.cpu_count()} CPUs), '
        f'profile {profile.name}, ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, output {out_dir}'
    )
    rclpy.init()
    node = rclpy.create_node('bench_record')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    monitor = RosStatusMonitor(node)
    bag_path = ''
    try:
        run_.start()
        # Ready = the recorder is receiving both streams (its subscriptions have matched).
        deadline = time.monotonic() + args.startup_timeout
        while True:
            executor.spin_once(timeout_sec=0.1)
            run_.check_running()
            entry = monitor.snapshot.find('recorder')
            if (
                entry
                and int(entry[2].get('frames_received_total', 0)) > 3
                and int(entry[2].get('poses_received_total', 0)) > 100
            ):
                break
            if time.monotonic() > deadline:
                raise LaunchError(
                    f'the recorder did not receive frames and poses within {args.startup_timeout:.0f} s; '
                    f'logs in {out_dir / "logs"}'
                )
        meter = CpuMeter({**{p.name: p.pid for p in run_.processes}, 'bench (this process)': os.getpid()})
        meter.start()
        ok, message = monitor.call(monitor.start_client, executor)
        if not ok:
            raise LaunchError(f'recorder refused to start: {message}')
        bag_path = message
        started = time.monotonic()
        next_print = started + 5.0
        while time.monotonic() - started < args.duration:
            executor.spin_once(timeout_sec=0.1)
            run_.check_running()
            if time.monotonic() >= next_print:
                _print('  ' + format_status(monitor.snapshot))
                next_print += 5.0
        ok, message = monitor.call(monitor.stop_client, executor)
        if not ok:
            raise LaunchError(f'recorder refused to stop: {message}')
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            last = monitor.status_messages[-1] if monitor.status_messages else {}
            if last.get('state') != 1 and last.get('bag_path') == bag_path:
                break
        cpu = meter.stop()
        final_status = monitor.status_messages[-1] if monitor.status_messages else {}
        arm = monitor.snapshot.find('arm_state')
        capture = monitor.snapshot.find('capture')
    except LaunchError as error:
        print(f'bench record: {error}', file=sys.stderr)
        return 2
    finally:
        statuses = run_.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    _print(f'nodes stopped: {", ".join(f"{k} exit {v}" for k, v in statuses.items())}')
    trajectory = SinusoidTrajectory(epoch_s=epoch)
    evaluation = evaluate_bag(bag_path, trajectory)
    report = _report(args, evaluation, cpu, final_status, arm, capture, bag_path)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if not args.keep_bag:
        import shutil

        shutil.rmtree(bag_path, ignore_errors=True)
    return 0 if not report['failures'] else 1


def _report(args, e, cpu, final_status, arm, capture, bag_path):
    arm_values = arm[2] if arm else {}
    capture_values = capture[2] if capture else {}
    _print(f'bag: {bag_path}')
    _print(
        f'frames: recorded {e.frames_recorded} / produced {e.frames_produced} in the recorded span '
        f'(test-pattern index {e.frame_index_first}..{e.frame_index_last}); dropped {e.frames_dropped}; '
        f'recorder-reported drops {final_status.get("frames_dropped", "?")}, capture-reported source drops '
        f'{capture_values.get("frames_dropped_by_source", "?")}'
    )
    _print(
        f'poses: recorded {e.poses_recorded} / produced {e.poses_produced} on the 1 kHz grid; dropped '
        f'{e.poses_dropped}; off-grid stamps {e.poses_off_grid}; arm skipped (overload) '
        f'{arm_values.get("backend_samples_skipped", "?")}; raw pose vs T(t) max {e.raw_pose_error_mm:.2e} mm'
    )
    _print(
        f'synchronised poses: {e.synced_valid} valid of {e.synced_poses} '
        f'({e.synced_poses - e.synced_valid} flagged invalid, {e.synced_missing} frames without one)'
    )
    t, r = e.translation_error_mm, e.rotation_error_deg
    _print(
        f'sync error vs ground truth T(frame stamp): translation mean {t["mean"]:.2e} / p99 {t["p99"]:.2e} / '
        f'max {t["max"]:.2e} mm; rotation mean {r["mean"]:.2e} / p99 {r["p99"]:.2e} / max {r["max"]:.2e} deg'
    )
    processes = ', '.join(f'{name} {value:.1f}%' for name, value in cpu['processes'].items())
    _print(
        f'CPU over the {cpu["wall_s"]:.1f} s recording (% of one core): {processes}; machine total '
        f'{cpu["machine_percent"]:.0f}% of {100 * cpu["cpus"]}%; load average '
        f'{", ".join(f"{v:.2f}" for v in cpu["load_average"])}'
    )
    if cpu['others']:
        _print('  busiest other processes: ' + '; '.join(f'{name} {p}%' for p, name in cpu['others']))
    rate = e.bag_bytes / e.duration_s / 1e6 if e.duration_s > 0 else math.nan
    _print(
        f'bag write: {e.bag_bytes / 1e6:.1f} MB, {e.bag_messages} messages in {e.duration_s:.1f} s = '
        f'{rate:.2f} MB/s, {e.bag_messages / max(e.duration_s, 1e-9):.0f} messages/s'
    )
    failures = e.failures()
    verdict = 'PASS' if not failures else 'FAIL: ' + '; '.join(failures)
    _print(
        f'result: {verdict} (criteria: 0 frames and 0 poses dropped, error < {MAX_TRANSLATION_ERROR_MM} mm '
        f'and < {MAX_ROTATION_ERROR_DEG} deg)'
    )
    return {
        'duration_s': args.duration,
        'bag': bag_path,
        'evaluation': dataclasses.asdict(e),
        'frames_dropped': e.frames_dropped,
        'poses_dropped': e.poses_dropped,
        'cpu': cpu,
        'recorder_status': final_status,
        'arm_diagnostics': arm_values,
        'capture_diagnostics': capture_values,
        'failures': failures,
    }
