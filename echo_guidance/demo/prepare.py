"""Prepare the demo's model once with the project's own pipeline commands, each a printed subprocess.

One command per step, as a person would type them; a step whose output already exists is skipped,
so a second run (or a run after an interruption) goes straight to what is missing:

1. ``echo-guidance sim demos`` for the training patients, then for the validation patients
   (the simulator's patient splits; the demo patient, seed 0, is left out of training);
2. ``echo-guidance dataset build`` (splits as the simulator declared them);
3. ``echo-guidance train config/train/demo_dreamer.yaml`` (``--resume``: an interrupted run goes on);
4. ``echo-guidance export`` (ONNX, checked against PyTorch).

The sizes below (patients, demonstrations, image size) and the training config were chosen by
measurement so the whole preparation fits in about ten minutes on a 2-core CPU (docs/autonomous.md,
"The demo").
"""

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

TRAIN_CONFIG = 'train/demo_dreamer.yaml'
MODEL_NAME = 'demo_dreamer.onnx'


class PrepareError(RuntimeError):
    """A preparation step failed (names the step, its command and exit status)."""


@dataclasses.dataclass(frozen=True)
class PreparePlan:
    """How much simulated data the demo model is trained on.

    Attributes:
        train_patients: patients of the simulator's train split.
        val_patients: patients of its val split (validation during training picks the best checkpoint).
        demos_per_plane: demonstrations per patient and plane.
        first_seed: first patient seed considered; 1 keeps the demo patient (seed 0) out of training.
        render_size: side of the rendered frames (the capture node renders the same 128x128).
        dataset_size: side of the stored frames (the model resizes on load when its input differs).
        workers: processes rendering demonstrations (one per core of the 2-core machine).
    """

    train_patients: int = 24
    val_patients: int = 3
    demos_per_plane: int = 1
    first_seed: int = 1
    render_size: int = 128
    dataset_size: int = 128
    workers: int = 2


@dataclasses.dataclass(frozen=True)
class Step:
    """One pipeline command, and how to tell that its output is already there."""

    name: str
    argv: tuple
    output: Path
    done: object  # callable () -> bool

    def command_line(self):
        """The command as a shell line (``python -m echo_guidance.cli`` shown as ``echo-guidance``)."""
        words = list(self.argv)
        if words[:3] == [sys.executable, '-m', 'echo_guidance.cli']:
            words = ['echo-guidance', *words[3:]]
        return shlex.join(words)


def _cli(*args):
    return (sys.executable, '-m', 'echo_guidance.cli', *[str(a) for a in args])


def _demos_complete(root, split, expected):
    """Whether ``root/manifest.yaml`` lists ``expected`` bags of ``split`` and each exists."""
    import yaml

    manifest = root / 'manifest.yaml'
    if not manifest.is_file():
        return False
    try:
        bags = (yaml.safe_load(manifest.read_text()) or {}).get('bags', [])
    except yaml.YAMLError:
        return False
    present = [b for b in bags if b.get('split') == split and (root / b['path'] / 'metadata.yaml').is_file()]
    return len(present) >= expected


def _training_finished(out_dir):
    """Whether ``out_dir`` holds best.pt and a metrics log that ends with the ``end`` record."""
    metrics = out_dir / 'metrics.jsonl'
    if not (out_dir / 'best.pt').is_file() or not metrics.is_file():
        return False
    lines = metrics.read_text().strip().splitlines()
    try:
        return bool(lines) and json.loads(lines[-1]).get('kind') == 'end'
    except ValueError:
        return False


def plan_steps(model_path, plan=None):
    """The steps that produce ``model_path``; their work folders sit beside the model's folder.

    ``out/demo/model/demo_dreamer.onnx`` gives ``out/demo/{sim_demos,dataset,train}``.
    """
    from echo_guidance.planes import GUIDANCE_PLANES
    from echo_guidance.resources import config_path

    plan = plan or PreparePlan()
    model_path = Path(model_path)
    root = model_path.parent.parent
    demos, dataset, train = root / 'sim_demos', root / 'dataset', root / 'train'
    size = f'{plan.render_size}x{plan.render_size}'
    steps = []
    for split, patients in (('train', plan.train_patients), ('val', plan.val_patients)):
        expected = patients * len(GUIDANCE_PLANES) * plan.demos_per_plane
        steps.append(
            Step(
                f'simulated demonstrations ({split}: {patients} patients)',
                _cli(
                    'sim',
                    'demos',
                    '--patients',
                    patients,
                    '--split',
                    split,
                    '--seed',
                    plan.first_seed,
                    '--demos-per-plane',
                    plan.demos_per_plane,
                    '--size',
                    size,
                    '--out',
                    demos,
                    '--workers',
                    plan.workers,
                    '--skip-existing',
                ),
                demos,
                lambda split=split, expected=expected: _demos_complete(demos, split, expected),
            )
        )
    steps.append(
        Step(
            'dataset',
            _cli(
                'dataset', 'build', demos, '--out', dataset, '--size', plan.dataset_size, '--declared-splits'
            ),
            dataset,
            lambda: (dataset / 'manifest.json').is_file(),
        )
    )
    steps.append(
        Step(
            'training',
            _cli(
                'train',
                config_path(TRAIN_CONFIG),
                '--resume',
                '--set',
                f'data.dir={dataset}',
                '--set',
                f'train.out_dir={train}',
            ),
            train,
            lambda: _training_finished(train),
        )
    )
    steps.append(
        Step(
            'export to ONNX',
            _cli('export', train / 'best.pt', '--out', model_path),
            model_path,
            model_path.is_file,
        )
    )
    return steps


def prepare_model(model_path, plan=None, say=print, runner=subprocess.run):
    """Run the steps still missing for ``model_path``; return {step name: seconds} of those that ran.

    Raises:
        PrepareError: a step exited with a non-zero status or did not produce its output.
    """
    steps = plan_steps(model_path, plan)
    done = [step.done() for step in steps]
    # A step is needed only after the last one whose output exists (a kept dataset needs no demos).
    first = max((i + 1 for i, ok in enumerate(done) if ok), default=0)
    if first == len(steps):
        return {}
    say(
        f'demo: the demo model {model_path} does not exist yet: training it once with the pipeline below '
        f'({len(steps) - first} of {len(steps)} steps to run; about 10 minutes on a 2-core CPU). '
        'Later runs reuse it.'
    )
    timings = {}
    for number, step in enumerate(steps, 1):
        if number <= first or step.done():
            say(f'demo: step {number}/{len(steps)} {step.name}: done already ({step.output})')
            continue
        if step.name == 'dataset' and step.output.exists():
            # An interrupted build leaves a folder without manifest.json that `dataset build` refuses.
            say(f'demo: removing the unfinished dataset {step.output}')
            shutil.rmtree(step.output)
        say(f'demo: step {number}/{len(steps)} {step.name}:\n  $ {step.command_line()}')
        started = time.monotonic()
        result = runner(list(step.argv))
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise PrepareError(
                f'step {step.name} failed with exit status {result.returncode}: {step.command_line()}'
            )
        if not step.done():
            raise PrepareError(f'step {step.name} finished but its output {step.output} is not complete')
        timings[step.name] = seconds
        say(f'demo: step {number}/{len(steps)} {step.name}: {seconds:.0f} s')
    say(f'demo: model prepared in {sum(timings.values()):.0f} s: {model_path}')
    return timings
