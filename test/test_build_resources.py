"""echo_guidance.resources finds config/ and launch/ files in the source tree and in the installed copy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, files_under

from echo_guidance import resources


def test_source_tree_share_dir_is_the_repository_root():
    assert resources.share_dir() == REPO_ROOT


def test_config_path_finds_an_existing_file(tmp_path, monkeypatch):
    (tmp_path / 'package.xml').write_text('<package/>')
    (tmp_path / 'config' / 'profiles').mkdir(parents=True)
    (tmp_path / 'config' / 'profiles' / 'sim.yaml').write_text('a: 1\n')
    monkeypatch.setenv(resources.SHARE_DIR_VARIABLE, str(tmp_path))
    assert resources.config_path('profiles/sim.yaml') == tmp_path / 'config' / 'profiles' / 'sim.yaml'


def test_missing_file_error_lists_what_exists(tmp_path, monkeypatch):
    (tmp_path / 'package.xml').write_text('<package/>')
    (tmp_path / 'launch').mkdir()
    (tmp_path / 'launch' / 'record.launch.py').write_text('')
    monkeypatch.setenv(resources.SHARE_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(resources.ResourceNotFoundError, match='record.launch.py'):
        resources.launch_path('guide.launch.py')


@pytest.mark.parametrize('name', ['/etc/passwd', '../package.xml', ''])
def test_names_outside_the_folder_are_refused(name):
    with pytest.raises(ValueError, match='relative path'):
        resources.config_path(name)


def test_missing_share_dir_names_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.setenv(resources.SHARE_DIR_VARIABLE, str(tmp_path / 'nowhere'))
    with pytest.raises(resources.ResourceNotFoundError, match='nowhere'):
        resources.share_dir()


def test_installed_copy_finds_its_installed_data(tmp_path):
    """Run from outside the clone, so the installed package (not the source tree) is imported."""
    code = 'import json, echo_guidance.resources as r; print(json.dumps([r.__file__, str(r.share_dir())]))'
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module_file, share = json.loads(result.stdout)
    assert not module_file.startswith(str(REPO_ROOT / 'echo_guidance')), 'imported the source tree'
    share = Path(share)
    assert share.parts[-2:] == ('share', 'echo_guidance')
    for kind in ('config', 'launch'):
        assert files_under(share / kind) == files_under(REPO_ROOT / kind), \
            f'installed {kind}/ differs from the source tree: run scripts/bootstrap.sh'
