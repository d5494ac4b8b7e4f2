"""The ``echo-guidance bag info|repair|check`` commands."""

import json

from bags_helpers import T0_NS, frame, make_session, pose, write_demo

from echo_guidance.bags import DemonstrationBagWriter
from echo_guidance.cli import main


def _bag(tmp_path, name='bag', frames=3):
    path = tmp_path / name
    with DemonstrationBagWriter(path, make_session()) as writer:
        write_demo(writer, frames)
    return path


def test_info_prints_session_and_counts(tmp_path, capsys):
    path = _bag(tmp_path)
    assert main(['bag', 'info', str(path)]) == 0
    out = capsys.readouterr().out
    assert 'state:          complete' in out and "'PSAX-AV'" in out
    assert '/us/image                3' in out
    assert main(['bag', 'info', '--json', str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['message_counts']['/arm/probe_pose'] == 12 and info['session']['subject_id'] == 'sim-0003'


def test_info_on_a_non_bag_fails_with_a_message(tmp_path, capsys):
    assert main(['bag', 'info', str(tmp_path / 'missing')]) == 4  # not a bag: repair cannot help
    assert 'does not exist' in capsys.readouterr().err


def test_check_passes_a_good_bag_and_reports_unsynced_frames(tmp_path, capsys):
    path = _bag(tmp_path, frames=5)
    assert main(['bag', 'check', str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        'frames: 5' in out
        and '1 of 5 frames have no valid synchronised pose' in out
        and out.rstrip().endswith('OK')
    )


def test_check_finds_frames_without_synced_pose_and_backward_stamps(tmp_path, capsys):
    path = tmp_path / 'bad'
    with DemonstrationBagWriter(path, make_session()) as writer:
        writer.write_probe_pose(pose(0), T0_NS)
        writer.write_image(frame(0), T0_NS + 10)
        writer.write_synced_pose(pose(0), T0_NS + 10, True, 0.0, 0.0)
        writer.write_image(frame(1), T0_NS + 5, log_time_ns=T0_NS + 20)  # stamp goes back, no synced pose
    assert main(['bag', 'check', str(path)]) == 1
    out = capsys.readouterr().out
    assert 'PROBLEM: 1 frame stamp(s) not strictly increasing' in out
    assert 'PROBLEM: 1 frame(s) have no /recorder/synced_pose message' in out
    assert 'FAILED: 2 problem(s)' in out


def test_repair_then_check(tmp_path, capsys):
    path = _bag(tmp_path, frames=4)
    mcap = path / 'bag_0.mcap'
    mcap.write_bytes(mcap.read_bytes()[:-400])  # lose the footer and summary: like a crash during close
    assert main(['bag', 'check', str(path)]) == 3  # damaged: repair it
    out = capsys.readouterr().out
    assert 'CorruptBagError' in out and 'DAMAGED at byte' in out and f'bag repair {path}' in out
    assert main(['bag', 'repair', str(path)]) == 0
    out = capsys.readouterr().out
    assert 'action: rewritten' in out and '/us/image: 4' in out and 'original files kept in' in out
    assert main(['bag', 'check', str(path)]) == 0
    assert 'bag was repaired' in capsys.readouterr().out
    assert main(['bag', 'repair', str(path)]) == 0
    assert 'action: none' in capsys.readouterr().out


def test_bench_writes_and_reports(capsys):
    args = ['bag', 'bench', '--seconds', '0.2', '--width', '64', '--height', '48', '--fsync-interval', '0']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert '6 frames 64x48 mono8' in out and '200 poses' in out and 'x real time' in out
