"""The default guidance models' recipe and the step runner: printed commands, skipped finished steps."""

import types
from pathlib import Path

import pytest

from echo_guidance.guidance.recipe import Recipe, install, recipe_steps, result_models, training_seeds
from echo_guidance.pipeline import PipelineError, Step, run_steps


def test_the_recipe_is_the_pipeline_commands_in_order(tmp_path):
    recipe = Recipe(dagger_rounds=2)
    steps = recipe_steps(tmp_path, recipe)
    words = [s.command_line().split()[1:3] for s in steps]
    assert words[:2] == [['dataset', 'sample'], ['dataset', 'sample']]
    assert [w[0] for w in words[2:6]] == ['train', 'export', 'train', 'export']
    assert [w for w in words if w == ['dataset', 'dagger']] == [['dataset', 'dagger']] * 2
    lines = [s.command_line() for s in steps]
    assert (
        '--first-seed' not in lines[0]  # dataset sample's default: seed 1 on
        and '--test-patients 10' in lines[0]
        and '--region 0.8:30,30,5' in lines[0]
    )
    assert '--size 128' in lines[1] and '--region 0.2:1.5,1.5,1' in lines[1]
    dagger = [line for line in lines if ' dagger ' in line]
    assert f'stack:{tmp_path}/rounds/r0/coarse.onnx,{tmp_path}/rounds/r0/fine.onnx' in dagger[0]
    assert f'train.init_from={tmp_path}/train/fine_r1/best.pt' in lines[-2]
    assert result_models(tmp_path, recipe) == (
        tmp_path / 'rounds/r2/coarse.onnx',
        tmp_path / 'rounds/r2/fine.onnx',
    )
    # The DAgger rounds' patients are new each round, after the sampled ones, and all of the train split.
    first = int(dagger[0].split('--first-seed ')[1].split()[0])
    second = int(dagger[1].split('--first-seed ')[1].split()[0])
    seeds = training_seeds(recipe)
    assert first > 1 and second > first and first in seeds and 0 not in seeds
    from echo_guidance.sim.splits import split_of_seed

    assert {split_of_seed(s) for s in seeds} == {'train'}


def test_steps_run_in_order_skip_what_exists_and_name_a_failure(tmp_path):
    made = []

    def step(name):
        out = tmp_path / name
        return Step(name, ('tool', name), out, out.exists)

    steps = [step('a'), step('b'), step('c')]

    def runner(argv):
        (tmp_path / argv[1]).write_text('x')
        made.append(argv[1])
        return types.SimpleNamespace(returncode=0)

    said = []
    assert set(run_steps(steps, say=said.append, runner=runner)) == {'a', 'b', 'c'}
    assert made == ['a', 'b', 'c'] and any('$ tool b' in line for line in said)
    made.clear()
    assert run_steps(steps, say=said.append, runner=runner) == {} and not made
    (tmp_path / 'c').unlink()
    with pytest.raises(PipelineError, match='step c failed with exit status 3: tool c'):
        run_steps(steps, say=said.append, runner=lambda argv: types.SimpleNamespace(returncode=3))
    with pytest.raises(PipelineError, match='output .* is not complete'):
        run_steps(steps, say=said.append, runner=lambda argv: types.SimpleNamespace(returncode=0))


def test_install_writes_models_configs_and_checksums(tmp_path):
    from echo_guidance.guidance.default_models import DefaultModelError, verify

    work = tmp_path / 'work'
    last = work / 'rounds' / f'r{Recipe().dagger_rounds}'  # the last round's models are installed
    last.mkdir(parents=True)
    (last / 'coarse.onnx').write_bytes(b'coarse')
    (last / 'fine.onnx').write_bytes(b'fine')
    target = tmp_path / 'models'
    sums = install(work, target)
    assert sorted(p.name for p in target.iterdir()) == [
        'SHA256SUMS',
        'coarse.onnx',
        'default_coarse.yaml',
        'default_fine.yaml',
        'fine.onnx',
    ]
    assert verify(target) == [target / 'coarse.onnx', target / 'fine.onnx']
    assert 'coarse.onnx' in sums.read_text()
    (target / 'fine.onnx').write_bytes(b'fine, changed')
    with pytest.raises(DefaultModelError, match='does not match its recorded checksum'):
        verify(target)
    (target / 'fine.onnx').unlink()
    with pytest.raises(DefaultModelError, match='is missing'):
        verify(target)
    assert Path(sums).is_file()
