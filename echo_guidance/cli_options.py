"""Options that several commands share, spelt one way everywhere (docs/README: the conventions).

* an output **folder** is ``--output-dir DIR``; an output **file** is ``--output FILE``;
  ``--out`` (the older spelling of both) still works as a hidden alias, so existing commands and
  scripts keep running, but help and docs show the canonical names;
* ``--plane`` takes one plane, ``--planes`` a comma-separated list;
* every command that shows a progress bar takes ``--no-progress`` (:mod:`echo_guidance.progress`:
  a bar on a terminal, plain lines in a log).

Every option has help text; test/test_build_cli.py walks the parsers and fails on one without.
"""

import argparse


def _add_with_alias(parser, canonical, metavar, help, required, default, dest, **kwargs):
    target = parser
    if required:
        target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(canonical, dest=dest, metavar=metavar, default=default, help=help, **kwargs)
    hidden = argparse.SUPPRESS  # the older spelling: accepted, not shown
    target.add_argument('--out', dest=dest, metavar=metavar, default=default, help=hidden, **kwargs)


def add_output_dir(parser, help, required=False, default=None, dest='out', **kwargs):
    """Add ``--output-dir DIR`` (and the hidden alias ``--out``) storing into ``dest``."""
    _add_with_alias(parser, '--output-dir', 'DIR', help, required, default, dest, **kwargs)


def add_output_file(parser, help, required=False, default=None, dest='out', **kwargs):
    """Add ``--output FILE`` (and the hidden alias ``--out``) storing into ``dest``."""
    _add_with_alias(parser, '--output', 'FILE', help, required, default, dest, **kwargs)


def add_no_progress(parser, what='progress bar'):
    """Add ``--no-progress``."""
    parser.add_argument(
        '--no-progress',
        action='store_true',
        help=f'no {what} (without a terminal, progress is printed as plain lines instead of a bar)',
    )
