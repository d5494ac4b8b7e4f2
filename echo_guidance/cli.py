"""`echo-guidance`: one command, one subcommand per pipeline step.

Each pipeline-stage subpackage that offers commands has a module ``cli.py`` with a function
``register(subparsers)`` that adds its subcommands; this module discovers them, so stages never
edit a shared list. Those modules import nothing heavy at import time (torch, rclpy, cv2 are
imported inside the command handlers) so that ``echo-guidance --help`` stays fast.
"""

import argparse
import importlib
import importlib.util
import pkgutil
import sys

import echo_guidance


def _stage_cli_modules():
    """Yield the ``echo_guidance.<stage>.cli`` modules that exist, in name order."""
    for info in sorted(pkgutil.iter_modules(echo_guidance.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        name = f'echo_guidance.{info.name}.cli'
        if importlib.util.find_spec(name) is not None:
            yield importlib.import_module(name)


def build_parser():
    """Build the argument parser with every stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog='echo-guidance',
        description='Guide an ultrasound probe to the standard planes of the heart.')
    parser.add_argument('--version', action='version', version=echo_guidance.__version__)
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for module in _stage_cli_modules():
        module.register(subparsers)
    return parser


def main(argv=None):
    """Run the command named on the command line; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'handler', None):
        parser.print_help()
        return 2
    return args.handler(args) or 0


if __name__ == '__main__':
    sys.exit(main())
