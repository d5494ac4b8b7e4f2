"""ruff (pyflakes, pycodestyle, pydocstyle, isort; configured in pyproject.toml) finds nothing to report."""

import subprocess
import sys

from conftest import REPO_ROOT

LINTED = ['echo_guidance', 'test', 'launch', 'scripts', 'setup.py']


def test_ruff_reports_nothing():
    paths = [name for name in LINTED if (REPO_ROOT / name).exists()]
    command = [sys.executable, '-m', 'ruff', 'check', '--no-cache', '--output-format', 'concise', *paths]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f'ruff check {" ".join(paths)} failed (many are fixed by "ruff check --fix"):\n'
        f'{result.stdout}{result.stderr}')
