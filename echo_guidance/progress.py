"""Progress that stays readable in a log: a tqdm bar on a terminal, plain lines elsewhere.

tqdm redraws its bar with a carriage return; in a log file (``cmd > run.log``, CI, ``nohup``) that is
one endless line. :func:`progress_bar` returns a tqdm bar only when the stream is a terminal, and
otherwise a :class:`PlainProgress` that prints a complete line at most every ``interval_s`` seconds
(and at the end)::

    train demo_dreamer: 1200/3000 step (40%), 3.1 step/s, 9 min 40 s left, loss=0.4312

Both have ``update(n)``, ``set_postfix(**values)``, ``close()`` and work as context managers.
``enabled=False`` (``--no-progress``) gives one that prints nothing.
"""

import sys
import time


class PlainProgress:
    """Progress as whole lines (see the module docstring)."""

    def __init__(self, total, desc='', unit='it', initial=0, stream=None, interval_s=10.0, enabled=True):
        """Start counting at ``initial`` of ``total``."""
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.enabled = enabled
        self.postfix = {}
        self._start_n = initial
        self._started = time.monotonic()
        self._last_line = self._started
        self._closed = False

    def update(self, n=1):
        """Count ``n`` more; print a line when ``interval_s`` has passed since the last one."""
        self.n += n
        if self.enabled and time.monotonic() - self._last_line >= self.interval_s:
            self._print()

    def set_postfix(self, **values):
        """Values shown at the end of the next line (loss, lr, ...)."""
        self.postfix = {k: str(v) for k, v in values.items()}

    def line(self):
        """The progress line as it would be printed now."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        text = f'{self.desc + ": " if self.desc else ""}{self.n}'
        if self.total:
            text += f'/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)'
        else:
            text += f' {self.unit}'
        text += f', {rate:.3g} {self.unit}/s'
        if self.total and rate > 0 and self.n < self.total:
            left = (self.total - self.n) / rate
            minutes = f'{int(left // 60)} min ' if left >= 60 else ''
            text += f', {minutes}{int(left % 60)} s left'
        if self.postfix:
            text += ', ' + ', '.join(f'{k}={v}' for k, v in self.postfix.items())
        return text

    def _print(self):
        self._last_line = time.monotonic()
        try:
            print(self.line(), file=self.stream, flush=True)
        except (OSError, ValueError):
            pass

    def close(self):
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            if self.enabled and self.n != self._start_n:
                self._print()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(total, desc='', unit='it', initial=0, enabled=True, stream=None, interval_s=10.0):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else :class:`PlainProgress` lines."""
    stream = stream or sys.stderr
    if enabled and getattr(stream, 'isatty', lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return PlainProgress(total, desc, unit, initial, stream, interval_s, enabled)
