"""`echo-guidance bench ...`: benchmark commands whose figures go into the docs.

Each benchmark is a module ``echo_guidance/bench/<name>.py`` that defines
``register_bench(subparsers)``; it adds its own ``bench <name>`` parser there and sets
``handler``. This module only discovers them, so a new benchmark never edits a shared list.
"""

import importlib
import pkgutil


def _bench_modules():
    """Yield the benchmark modules of this package, in name order."""
    import echo_guidance.bench as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith('_') or info.name == 'cli':
            continue
        module = importlib.import_module(f'echo_guidance.bench.{info.name}')
        if hasattr(module, 'register_bench'):
            yield module


def register(subparsers):
    """Add ``bench`` with one subcommand per benchmark module."""
    parser = subparsers.add_parser(
        'bench', help='run a benchmark and print its figures', description=__doc__.splitlines()[0]
    )
    bench_subparsers = parser.add_subparsers(dest='bench', metavar='BENCHMARK')
    for module in _bench_modules():
        module.register_bench(bench_subparsers)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
