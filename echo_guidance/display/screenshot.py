"""Screenshots of the display page in headless Chromium (Debian's ``chromium``), for tests and docs."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
WINDOW_SIZE = (1100, 720)
"""Screenshot size in CSS pixels: the page's image canvas and panel fit."""


class ScreenshotError(RuntimeError):
    """Chromium is missing or did not produce a screenshot."""


def find_chromium():
    """Path of a Chromium binary (``$CHROMIUM`` first), or None when there is none."""
    override = os.environ.get('CHROMIUM')
    if override:
        return override if Path(override).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium_args(binary, user_dir, window_size):
    return [
        binary,
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--hide-scrollbars',
        '--mute-audio',
        '--no-first-run',
        '--disable-extensions',
        '--disable-dev-shm-usage',
        '--force-device-scale-factor=1',
        f'--user-data-dir={user_dir}',
        f'--window-size={window_size[0]},{window_size[1]}',
    ]


def screenshot(url, out_path, window_size=WINDOW_SIZE, budget_ms=3000, timeout_s=60):
    """Load ``url`` in headless Chromium and write a PNG screenshot to ``out_path``; return the path.

    ``budget_ms`` is Chromium's virtual-time budget: time the page's scripts get to fetch and draw.
    Use the page's ``?once=1`` mode: an open event stream keeps Chromium waiting for the network.
    """
    binary = find_chromium()
    if binary is None:
        raise ScreenshotError(
            'no Chromium found (tried $CHROMIUM, '
            + ', '.join(CHROMIUM_NAMES)
            + '): install it with apt-get install chromium'
        )
    out_path = Path(out_path).resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists():
        out_path.unlink()
    with tempfile.TemporaryDirectory(prefix='echo_guidance-chromium-') as user_dir:
        args = _chromium_args(binary, user_dir, window_size) + [
            f'--virtual-time-budget={int(budget_ms)}',
            f'--screenshot={out_path}',
            url,
        ]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f'chromium did not finish within {timeout_s} s loading {url}') from None
    if not out_path.is_file():
        raise ScreenshotError(
            f'chromium wrote no screenshot of {url} (exit {done.returncode}):\n{done.stderr[-2000:]}'
        )
    return out_path


def dump_dom(url, budget_ms=3000, timeout_s=60):
    """The page's DOM (as HTML) after its scripts ran for ``budget_ms`` of virtual time."""
    binary = find_chromium()
    if binary is None:
        raise ScreenshotError('no Chromium found: install it with apt-get install chromium')
    with tempfile.TemporaryDirectory(prefix='echo_guidance-chromium-') as user_dir:
        args = _chromium_args(binary, user_dir, WINDOW_SIZE) + [
            f'--virtual-time-budget={int(budget_ms)}',
            '--dump-dom',
            url,
        ]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f'chromium did not finish within {timeout_s} s loading {url}') from None
    if done.returncode != 0 or '<html' not in done.stdout:
        raise ScreenshotError(
            f'chromium could not dump {url} (exit {done.returncode}):\n{done.stderr[-2000:]}'
        )
    return done.stdout
