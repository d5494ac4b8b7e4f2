"""The seeded bag fuzz: no bag input crashes a tool, and the fuzz notices when one does."""

import json

import pytest

from echo_guidance.bags import fuzz
from echo_guidance.cli import main


@pytest.fixture(scope='module')
def fuzz_bag(tmp_path_factory):
    """One small bag shared by the tests (made once; the fuzz only reads it)."""
    return fuzz.make_fuzz_bag(tmp_path_factory.mktemp('fuzz') / 'bag')


def test_fuzz_finds_no_traceback_no_false_complete_and_keeps_every_intact_message(fuzz_bag):
    report = fuzz.run_fuzz(corruptions=10, seed=7, bag=fuzz_bag)
    total = report['total']
    assert total['cases'] == 40 and report['kinds']['metadata_yaml']['cases'] == 10
    assert total['mcap_changed'] >= 38
    assert total['tracebacks'] == 0, report['examples'].get('tracebacks')
    assert total['info_complete_on_changed'] == 0 and total['check_ok_on_changed'] == 0
    assert total['dataset_built_from_changed'] == 0
    assert total['unclear_verdicts'] == 0, report['examples'].get('unclear')
    assert total['intact_lost'] == 0, report['examples'].get('intact_lost')
    assert 0 < total['intact_after_damage'] == total['intact_after_damage_kept']
    assert total['repaired_unreadable'] == 0
    assert fuzz.passed(report)


def test_the_same_seed_gives_the_same_corruptions(fuzz_bag):
    import random

    original = fuzz._Original(fuzz_bag)
    for kind in fuzz.KINDS + fuzz.EXTRA_KINDS:
        first = fuzz.corrupt(original, kind, random.Random(f'3:{kind}:5'))
        second = fuzz.corrupt(original, kind, random.Random(f'3:{kind}:5'))
        assert first == second and first[:2] != (original.data, original.metadata)


def test_a_tool_that_crashes_is_counted_as_a_traceback(fuzz_bag, monkeypatch):
    from echo_guidance.bags import check

    def broken(path):
        raise RuntimeError('boom')

    monkeypatch.setattr(check, 'check_bag', broken)
    report = fuzz.run_fuzz(corruptions=2, seed=1, bag=fuzz_bag, kinds=('truncate',))
    assert report['total']['tracebacks_by_tool'].get('check', 0) >= 2
    assert 'RuntimeError: boom' in report['examples']['tracebacks'][0]['traceback']
    assert not fuzz.passed(report)


def test_a_reader_that_ignores_the_data_checksum_is_counted(fuzz_bag, monkeypatch):
    from echo_guidance.bags import _mcap

    real = _mcap.check_file

    def ignoring_data_checksum(buf, size):
        found = real(buf, size)
        if found.data_crc == 'mismatch':
            return found._replace(problem='', offset=None, data_crc='verified')
        return found

    monkeypatch.setattr(_mcap, 'check_file', ignoring_data_checksum)
    report = fuzz.run_fuzz(corruptions=4, seed=2, bag=fuzz_bag, kinds=('flip_data',))
    assert report['total']['info_complete_on_changed'] > 0
    assert not fuzz.passed(report)


def test_a_repair_that_loses_intact_messages_is_counted(fuzz_bag, monkeypatch):
    from echo_guidance.bags import repair

    real_keep = repair._Salvage._keep

    def lossy(self, record):
        if record.body.log_time % 3:
            real_keep(self, record)

    monkeypatch.setattr(repair._Salvage, '_keep', lossy)
    report = fuzz.run_fuzz(corruptions=2, seed=3, bag=fuzz_bag, kinds=('zero_range',))
    assert report['total']['intact_lost'] > 0 and report['examples']['intact_lost']
    assert not fuzz.passed(report)


def test_fuzz_command_writes_its_report(tmp_path, capsys):
    out = tmp_path / 'report'
    argv = ['bag', 'fuzz', '--corruptions', '2', '--kinds', 'truncate,flip_header', '--out', str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert '| truncate | 2 | 0 | 0 | 0 | 0 |' in printed and 'PASSED' in printed
    report = json.loads((out / 'report.json').read_text())
    assert report['command'].startswith('echo-guidance bag fuzz --corruptions 2 --seed 0')
    assert report['kinds']['flip_header']['cases'] == 2
    assert (out / 'report.md').read_text().startswith('`echo-guidance bag fuzz')
    assert main(['bag', 'fuzz', '--kinds', 'nonsense']) == 2
