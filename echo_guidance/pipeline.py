"""Multi-step recipes run as the project's own commands: each step a printed subprocess, resumable.

A recipe (the default guidance models' training, for instance) is a list of :class:`Step`: the
``echo-guidance`` command a person would type, the output it produces and a test of whether that
output is already complete. :func:`run_steps` prints each command as it runs it and skips every step
whose output exists, so a second run (or a run after an interruption) goes on where it stopped.
"""

import dataclasses
import shlex
import subprocess
import sys
import time
from pathlib import Path


class PipelineError(RuntimeError):
    """A step failed (names the step, its command and exit status) or left its output incomplete."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One command, and how to tell that its output is already there."""

    name: str
    argv: tuple
    output: Path
    done: object  # callable () -> bool
    clean: bool = False  # remove an unfinished output folder before running (commands that refuse one)

    def command_line(self):
        """The command as a shell line (``python -m echo_guidance.cli`` shown as ``echo-guidance``)."""
        words = list(self.argv)
        if words[:3] == [sys.executable, '-m', 'echo_guidance.cli']:
            words = ['echo-guidance', *words[3:]]
        return shlex.join(words)


def cli(*args):
    """The argv of an ``echo-guidance`` command run with this interpreter."""
    return (sys.executable, '-m', 'echo_guidance.cli', *[str(a) for a in args])


def run_steps(steps, say=print, runner=subprocess.run, prefix=''):
    """Run the steps still missing; return {step name: seconds} of those that ran.

    A step runs only after the last one whose output exists (a kept dataset needs no new data).

    Raises:
        PipelineError: a step exited with a non-zero status or did not produce its output.
    """
    done = [step.done() for step in steps]
    first = max((i + 1 for i, ok in enumerate(done) if ok), default=0)
    timings = {}
    for number, step in enumerate(steps, 1):
        if number <= first or step.done():
            say(f'{prefix}step {number}/{len(steps)} {step.name}: done already ({step.output})')
            continue
        if step.clean and Path(step.output).is_dir():
            import shutil

            say(f'{prefix}removing the unfinished {step.output}')
            shutil.rmtree(step.output)
        say(f'{prefix}step {number}/{len(steps)} {step.name}:\n  $ {step.command_line()}')
        started = time.monotonic()
        result = runner(list(step.argv))
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise PipelineError(
                f'step {step.name} failed with exit status {result.returncode}: {step.command_line()}'
            )
        if not step.done():
            raise PipelineError(f'step {step.name} finished but its output {step.output} is not complete')
        timings[step.name] = seconds
        say(f'{prefix}step {number}/{len(steps)} {step.name}: {seconds:.0f} s')
    return timings


def dataset_complete(folder):
    """Whether ``folder`` holds a finished dataset (its manifest is written last)."""
    return (Path(folder) / 'manifest.json').is_file()


def training_finished(out_dir):
    """Whether ``out_dir`` holds best.pt and a metrics log that ends with the ``end`` record."""
    import json

    out_dir = Path(out_dir)
    metrics = out_dir / 'metrics.jsonl'
    if not (out_dir / 'best.pt').is_file() or not metrics.is_file():
        return False
    lines = metrics.read_text().strip().splitlines()
    try:
        return bool(lines) and json.loads(lines[-1]).get('kind') == 'end'
    except ValueError:
        return False
