"""The recipe of the default guidance models (``models/guidance/``): the pipeline's own commands, in order.

``echo-guidance guidance train-default`` (and ``echo-guidance demo --retrain``) runs it, printing each
command; a step whose output exists is skipped, so an interrupted run goes on where it stopped.
Everything comes from the simulator's *train* split (patient seeds from 1: the demo's patient, seed 0,
and every validation and test patient stay unseen):

1. ``dataset sample`` for the coarse model: poses anywhere a scan may start, some near the plane;
2. ``dataset sample`` for the fine model: poses densely around each plane, a fifth of them right at
   the plane (where a converging policy spends its time and the stop judgement must tell 1 mm from
   3 mm);
3. ``train`` the coarse and the fine model (config/train/default_coarse.yaml, default_fine.yaml);
4. ``export`` both to ONNX (round 0);
5. DAgger rounds (``Recipe.dagger_rounds``; two in the installed models, see
   docs/guidance-models.md): ``dataset dagger`` runs the current coarse-to-fine stack in closed loop on other
   training patients and labels every pose it visited; ``dataset merge`` adds those samples to both
   datasets; ``train`` continues each model from its previous weights (``train.init_from``) on the
   merged data; ``export`` again;
6. the last round's models are the result: ``WORK/rounds/r<N>/{coarse,fine}.onnx``;
   ``--install`` copies them (with their training configs) into ``models/guidance/`` and writes
   ``SHA256SUMS``.

docs/guidance-models.md lists the figures each round reached and the time it took.
"""

import dataclasses
import shutil
from pathlib import Path

from echo_guidance.pipeline import Step, cli, dataset_complete, training_finished

COARSE_CONFIG = 'train/default_coarse.yaml'
FINE_CONFIG = 'train/default_fine.yaml'


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The amounts of data and training of the default models (defaults: what models/guidance/ holds).

    Attributes:
        coarse_patients, fine_patients: train-split patients the sampled datasets draw poses from.
        val_patients: val-split patients (validation during training picks the best checkpoint).
        test_patients: test-split patients (held out; the offline benchmark of docs/guidance-models.md).
        poses_per_plane: sampled poses per patient and plane.
        coarse_regions: ``dataset sample --region`` values of the coarse data.
        fine_regions: the same for the fine data (the last region: right at the plane).
        coarse_size, fine_size: stored frame sides (the models' input sizes).
        dagger_rounds: DAgger rounds after the first training.
        dagger_patients: train-split patients of each round (seeds after the sampled ones).
        dagger_starts: closed-loop starts per patient and plane in each round.
        finetune_steps: training steps of each DAgger round, per model.
        first_seed: first patient seed of the sampled data (1: the demo patient stays unseen).
    """

    coarse_patients: int = 60
    fine_patients: int = 80
    val_patients: int = 8
    test_patients: int = 10
    poses_per_plane: int = 300
    coarse_regions: tuple = ('0.2:6,6,3', '0.8:30,30,5')
    fine_regions: tuple = ('0.4:4,4,2', '0.4:10,10,4', '0.2:1.5,1.5,1')
    coarse_size: int = 96
    fine_size: int = 128
    dagger_rounds: int = 2
    dagger_patients: int = 60
    dagger_starts: int = 2
    finetune_steps: int = 3000
    first_seed: int = 1


def _export_done(path):
    return lambda: Path(path).is_file()


def recipe_steps(work_dir, recipe=None):
    """The steps that make the default models in ``work_dir`` (see the module docstring)."""
    from echo_guidance.resources import config_path
    from echo_guidance.sim.splits import seeds_for_split

    recipe = recipe or Recipe()
    work = Path(work_dir)
    data, train, rounds = work / 'data', work / 'train', work / 'rounds'
    steps = []

    def sample(name, patients, regions, size, seed):
        out = data / f'{name}_r0'
        argv = ['dataset', 'sample', '--output-dir', out, '--train-patients', patients]
        argv += ['--val-patients', recipe.val_patients, '--test-patients', recipe.test_patients]
        argv += ['--poses-per-plane', recipe.poses_per_plane, '--size', size, '--seed', seed, '--no-progress']
        for region in regions:
            argv += ['--region', region]
        steps.append(Step(f'{name} data', cli(*argv), out, lambda: dataset_complete(out), clean=True))

    def fit(name, config, data_dir, out_dir, init_from=None, steps_override=None):
        argv = ['train', config_path(config), '--resume', '--no-progress']
        argv += ['--set', f'data.dir={data_dir}', '--set', f'train.out_dir={out_dir}']
        if init_from is not None:
            argv += ['--set', f'train.init_from={init_from}', '--set', f'train.steps={steps_override}']
            argv += ['--set', 'train.warmup_steps=100', '--set', 'train.lr=3.0e-4']
        steps.append(Step(f'train {name}', cli(*argv), out_dir, lambda: training_finished(out_dir)))

    def export(name, checkpoint, out):
        steps.append(
            Step(f'export {name}', cli('export', checkpoint, '--output', out), out, _export_done(out))
        )

    sample('coarse', recipe.coarse_patients, recipe.coarse_regions, recipe.coarse_size, 1)
    sample('fine', recipe.fine_patients, recipe.fine_regions, recipe.fine_size, 2)
    for name, config in (('coarse', COARSE_CONFIG), ('fine', FINE_CONFIG)):
        fit(f'{name} (round 0)', config, data / f'{name}_r0', train / f'{name}_r0')
        export(f'{name} (round 0)', train / f'{name}_r0' / 'best.pt', rounds / 'r0' / f'{name}.onnx')
    # DAgger patients: the train-split patients after the sampled ones, new in every round.
    sampled = seeds_for_split('train', max(recipe.coarse_patients, recipe.fine_patients), recipe.first_seed)
    next_seed = sampled[-1] + 1 if sampled else recipe.first_seed
    for r in range(1, recipe.dagger_rounds + 1):
        previous = rounds / f'r{r - 1}'
        visited = data / f'dagger_r{r}'
        argv = [
            'dataset',
            'dagger',
            '--policy',
            f'r{r - 1}=stack:{previous / "coarse.onnx"},{previous / "fine.onnx"}',
        ]
        argv += ['--output-dir', visited, '--train-patients', recipe.dagger_patients]
        argv += ['--first-seed', next_seed, '--starts', recipe.dagger_starts, '--size', recipe.fine_size]
        argv += ['--seed', r, '--no-progress']
        steps.append(
            Step(f'DAgger round {r}', cli(*argv), visited, lambda v=visited: dataset_complete(v), clean=True)
        )
        next_seed = seeds_for_split('train', recipe.dagger_patients, next_seed)[-1] + 1
        for name, config, size in (
            ('coarse', COARSE_CONFIG, recipe.coarse_size),
            ('fine', FINE_CONFIG, recipe.fine_size),
        ):
            merged = data / f'{name}_r{r}'
            inputs = [data / f'{name}_r{r - 1}', visited]
            argv = ['dataset', 'merge', *inputs, '--output-dir', merged, '--size', size]
            steps.append(
                Step(
                    f'{name} data + round {r}',
                    cli(*argv),
                    merged,
                    lambda m=merged: dataset_complete(m),
                    clean=True,
                )
            )
            fit(
                f'{name} (round {r})',
                config,
                merged,
                train / f'{name}_r{r}',
                init_from=train / f'{name}_r{r - 1}' / 'best.pt',
                steps_override=recipe.finetune_steps,
            )
            export(
                f'{name} (round {r})', train / f'{name}_r{r}' / 'best.pt', rounds / f'r{r}' / f'{name}.onnx'
            )
    return steps


def training_seeds(recipe=None):
    """The patient seeds whose frames the recipe trains on (sampled data and every DAgger round)."""
    from echo_guidance.sim.splits import seeds_for_split

    recipe = recipe or Recipe()
    seeds = seeds_for_split('train', max(recipe.coarse_patients, recipe.fine_patients), recipe.first_seed)
    next_seed = seeds[-1] + 1 if seeds else recipe.first_seed
    for _ in range(recipe.dagger_rounds):
        rounds = seeds_for_split('train', recipe.dagger_patients, next_seed)
        seeds += rounds
        next_seed = rounds[-1] + 1
    return set(seeds)


def result_models(work_dir, recipe=None):
    """(coarse, fine) ONNX files of the recipe's last round in ``work_dir``."""
    recipe = recipe or Recipe()
    last = Path(work_dir) / 'rounds' / f'r{recipe.dagger_rounds}'
    return last / 'coarse.onnx', last / 'fine.onnx'


def write_checksums(folder, names=('coarse.onnx', 'fine.onnx')):
    """Write ``folder/SHA256SUMS`` for ``names`` (``sha256sum`` format); return the path."""
    from echo_guidance.resources import file_sha256

    lines = [f'{file_sha256(Path(folder) / name)}  {name}' for name in names]
    path = Path(folder) / 'SHA256SUMS'
    path.write_text('\n'.join(lines) + '\n')
    return path


def install(work_dir, target_dir, recipe=None):
    """Copy the last round's models and the training configs into ``target_dir``; write SHA256SUMS."""
    from echo_guidance.resources import config_path

    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    coarse, fine = result_models(work_dir, recipe)
    shutil.copyfile(coarse, target / 'coarse.onnx')
    shutil.copyfile(fine, target / 'fine.onnx')
    for config in (COARSE_CONFIG, FINE_CONFIG):
        shutil.copyfile(config_path(config), target / Path(config).name)
    return write_checksums(target)
