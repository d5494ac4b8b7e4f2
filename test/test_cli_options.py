"""One spelling per option across commands, help text for every option, progress readable in a log.

The parsers are walked as built (``echo_guidance.cli.build_parser``): every option and positional
has help text; no command shows ``--out`` (folders are ``--output-dir``, files ``--output``; ``--out``
is a hidden alias that still parses); every command with a progress bar takes ``--no-progress``;
without a terminal progress comes as whole lines (no carriage returns).
"""

import argparse
import io
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from echo_guidance.cli import build_parser
from echo_guidance.progress import PlainProgress, progress_bar

# Commands that show a progress bar or progress lines.
WITH_PROGRESS = ['train', 'sim demos', 'dataset sample', 'closed-loop']


def commands(parser=None, path=()):
    """Yield (command words, parser) for every (sub)command."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def options(parser):
    return [
        a for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
    ]


def test_every_option_has_help_text():
    missing = [
        f'{" ".join(words)} {"/".join(a.option_strings) or a.dest}'
        for words, parser in commands()
        for a in options(parser)
        if not a.help
    ]
    assert not missing, f'options without help text: {missing}'


def test_out_is_only_a_hidden_alias_of_output_dir_or_output():
    shown, orphaned = [], []
    for words, parser in commands():
        for action in options(parser):
            if '--out' not in action.option_strings:
                continue
            if action.help != argparse.SUPPRESS:
                shown.append(' '.join(words))
            canonical = [
                a for a in options(parser)
                if a.dest == action.dest and {'--output-dir', '--output'} & set(a.option_strings)
            ]
            if not canonical:
                orphaned.append(' '.join(words))
    assert not shown, f'commands that still show --out: {shown}'
    assert not orphaned, f'--out without --output-dir/--output beside it: {orphaned}'
    for words, parser in commands():
        helptext = parser.format_help()
        assert '--out ' not in helptext and '--out\n' not in helptext, words


@pytest.mark.parametrize(
    'argv, dest, value',
    [
        (['dataset', 'build', 'bags', '--out', 'd1'], 'out', 'd1'),
        (['dataset', 'build', 'bags', '--output-dir', 'd1'], 'out', 'd1'),
        (['export', 'best.pt', '--out', 'm.onnx'], 'out', 'm.onnx'),
        (['export', 'best.pt', '--output', 'm.onnx'], 'out', 'm.onnx'),
        (['evaluate', 'best.pt', '--data', 'd', '--out', 'e'], 'out', 'e'),
        (['closed-loop', '--policy', 'oracle'], 'out', 'out/closed_loop'),
        (['closed-loop', '--policy', 'oracle', '--output-dir', 'c'], 'out', 'c'),
    ],
)
def test_old_and_canonical_spellings_parse_the_same(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert str(getattr(args, dest)) == value


def test_a_required_output_folder_is_still_required(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(['dataset', 'build', 'bags'])
    assert '--output-dir' in capsys.readouterr().err


def test_plane_takes_one_plane_and_planes_several():
    for words, parser in commands():
        for action in options(parser):
            if '--plane' in action.option_strings:
                assert 'PLAX' in action.help or 'plane' in action.help, words
            if '--planes' in action.option_strings:
                assert action.nargs is None, words  # one comma-separated argument


@pytest.mark.parametrize('command', WITH_PROGRESS)
def test_every_command_with_progress_takes_no_progress(command):
    parser = dict(commands()).get(tuple(command.split()))
    if parser is None:
        pytest.skip(f'{command} is not in this tree')
    assert any('--no-progress' in a.option_strings for a in options(parser)), command


def test_progress_without_a_terminal_is_plain_lines():
    stream = io.StringIO()
    bar = progress_bar(100, 'train tiny', 'step', stream=stream, interval_s=0.0)
    assert isinstance(bar, PlainProgress)
    with bar:
        for _ in range(3):
            bar.update(1)
            bar.set_postfix(loss='0.5')
    text = stream.getvalue()
    assert '\r' not in text
    assert text.splitlines()[0].startswith('train tiny: 1/100 step (1%)') and 'loss=0.5' in text
    quiet = io.StringIO()
    with progress_bar(10, 'x', stream=quiet, enabled=False, interval_s=0.0) as bar:
        bar.update(5)
    assert quiet.getvalue() == ''


def test_sim_demos_into_a_log_prints_lines_not_a_bar(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'echo_guidance.cli', 'sim', 'demos', '--patients', '1', '--planes', 'PLAX',
         '--size', '64x64', '--output-dir', str(tmp_path / 'demos')],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert '\r' not in result.stdout + result.stderr
    assert 'sim demos (train): 1/1 demo (100%)' in result.stderr
