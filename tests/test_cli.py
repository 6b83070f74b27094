"""The two commands as a user runs them: python test.py (the four files, alone) and
python -m study. One-line errors with their exit statuses, Ctrl-C and a dead worker end cleanly,
nothing half-written, results only when asked, and imports that point one way."""
import ast
import json
import os
import re
import shutil
import sys

import pytest

from conftest import DATA_DIR, ROOT, command, interrupt

from study.runner import FOUR_FILES


def without_times(stdout):
    """The per-round lines and the table, the measured times cut out (they are noise)."""
    return [re.sub(r' seconds=[0-9.]+| +[0-9.]+$', '', line) for line in stdout.splitlines()
            if re.match(r'row=|\S+ +\d+ |  [^\d\s]', line)]


def files_of(folder):
    out = {}
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in names:
            with open(os.path.join(top, name), 'rb') as f:
                out[os.path.relpath(os.path.join(top, name), folder)] = f.read()
    return out


@pytest.fixture(scope='module')
def alone(tmp_path_factory):
    """A folder with the four files and nothing else."""
    folder = str(tmp_path_factory.mktemp('alone'))
    for name in FOUR_FILES:
        shutil.copy(os.path.join(ROOT, name), folder)
    return folder


@pytest.fixture(scope='module')
def quick(alone):
    return command(['test.py', '--quick', '--rounds', '2'], cwd=alone)


def test_the_four_files_run_alone_and_print_rounds_table_and_contrasts(alone, quick):
    assert quick.returncode == 0, quick.stderr
    lines = quick.stdout.splitlines()
    assert sum(line.startswith('row=') for line in lines) == 2 * 7
    assert any(line.startswith('ws+aux ') for line in lines)
    assert any(line.strip().startswith('interaction (relative)') for line in lines)
    assert sorted(n for n in os.listdir(alone) if n != '__pycache__') == sorted(FOUR_FILES)


def test_the_study_package_gives_the_same_numbers_with_one_process(quick):
    study = command(['-m', 'study', 'variants', '--quick', '--rounds', '2', '--workers', '1'])
    assert study.returncode == 0, study.stderr
    assert without_times(study.stdout) == without_times(quick.stdout)


def test_help_lists_test_pys_flags_alone():
    out = command(['test.py', '--help']).stdout
    flags = set(re.findall(r'--\w+', out))
    assert flags == {'--help', '--rounds', '--seed', '--quick', '--data_dir', '--device',
                     '--workers'}
    assert '--quick' in command(['-m', 'study', '--help']).stdout


@pytest.mark.parametrize('args,message', [
    (['--rounds', '0'], '--rounds: 0 is not a whole number >= 1'),
    (['--seed', 'x'], '--seed: x is not a whole number >= 0'),
    (['--workers', '-2'], '--workers: -2 is not a whole number >= 1'),
    (['--device', 'tpu'], "invalid choice: 'tpu'"),
    (['--bogus'], 'unrecognized arguments: --bogus')])
def test_a_bad_flag_is_one_line_and_status_2(args, message):
    for cmd in (['test.py'], ['-m', 'study', 'variants']):
        done = command(cmd + args)
        assert done.returncode == 2 and message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_study_errors_are_one_line_and_status_2(tmp_path):
    for args, message in ((['nosuch'], "no study 'nosuch'"),
                          (['variants', '--variant', 'zz'], '--variant zz: no such row'),
                          (['variants', '--save', '--quick'], '--save replaces'),
                          (['variants', '--save', '--rounds', '3'], '--save replaces'),
                          (['variants', '--json', str(tmp_path / 'no' / 'x.json')],
                           'not writable'),
                          (['all', '--reproduce'], '--reproduce reruns one')):
        done = command(['-m', 'study'] + args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_missing_mnist_is_one_line_and_status_1(tmp_path):
    empty = str(tmp_path)
    done = command(['test.py', '--quick', '--data_dir', empty],
                   env=dict(MNIST_MIRROR='http://127.0.0.1:9/'))
    assert done.returncode == 1 and 'could not be downloaded' in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and 'Traceback' not in done.stderr
    assert os.listdir(empty) == ['mnist']  # the folder it made, nothing half-written in it
    assert os.listdir(os.path.join(empty, 'mnist', 'MNIST', 'raw')) == []


def test_cuda_without_a_gpu_is_one_line():
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    done = command(['test.py', '--quick', '--device', 'cuda'])
    assert done.returncode == 2 and 'no CUDA GPU' in done.stderr


@pytest.mark.parametrize('workers', ['1', '2'])
def test_ctrl_c_keeps_the_finished_rounds_and_changes_no_file(alone, workers):
    before = files_of(alone)
    status, out, err = interrupt(['test.py', '--quick', '--rounds', '5000', '--workers',
                                  workers], cwd=alone)
    assert status == 130 and err == ('test.py: error: interrupted: the table keeps the rounds '
                                     'that finished\n')
    assert 'test error %' in out
    assert {k: v for k, v in files_of(alone).items() if not k.startswith('__')} == \
        {k: v for k, v in before.items() if not k.startswith('__')}


@pytest.fixture
def planted(tmp_path):
    """A copy of the project whose round kills its worker process."""
    folder = str(tmp_path / 'planted')
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns('.git', 'report', 'tests',
                                                                '__pycache__'))
    os.makedirs(os.path.join(folder, 'report', 'results'))
    path = os.path.join(folder, 'test.py')
    text = open(path).read().replace('    generator = torch.Generator().manual_seed(seed_for(',
                                     '    os._exit(3)\n    generator = torch.Generator().'
                                     'manual_seed(seed_for(', 1)
    open(path, 'w').write(text.replace('import argparse\n', 'import argparse\nimport os\n'))
    return folder


def test_a_dead_worker_ends_the_run_in_one_line(planted):
    for cmd in (['test.py', '--quick'], ['-m', 'study', 'fast', '--quick', '--json', 'x.json']):
        done = command(cmd + ['--rounds', '3', '--workers', '2'], cwd=planted)
        assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
        assert re.search(r'error: a round failed \(BrokenProcessPool: .*\); rerun with '
                         r'--workers 1 to see it alone(; x.json was not written)?\n$', done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
        assert not os.path.exists(os.path.join(planted, 'x.json'))


def test_ctrl_c_in_a_study_writes_nothing(tmp_path):
    path = str(tmp_path / 'fast.json')
    status, out, err = interrupt(['-m', 'study', 'fast', '--quick', '--rounds', '5000',
                                  '--json', path])
    assert status == 130 and 'was not written' in err and not os.path.exists(path)
    assert os.listdir(str(tmp_path)) == []  # no temporary file either


def test_json_is_written_whole_and_save_only_for_the_declared_study(tmp_path):
    path = str(tmp_path / 'fast.json')
    done = command(['-m', 'study', 'fast', '--quick', '--rounds', '2', '--json', path])
    assert done.returncode == 0, done.stderr
    data = json.load(open(path))
    assert data['complete'] and data['settings']['rounds'] == 2
    assert [len(r['runs']) for r in data['rows']] == [2]
    assert os.listdir(str(tmp_path)) == ['fast.json']


def test_the_readme_shows_no_command_that_writes_results():
    commands = [line.strip() for line in open(os.path.join(ROOT, 'README.md'))
                if line.strip().startswith(('python ', 'PYTORCH_DATA_DIR='))]
    assert len(commands) >= 4 and not any('--save' in c or '--json' in c for c in commands)


def imports(path):
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
            if node.module == 'study':
                names |= {'study.' + a.name for a in node.names}
    return names


def test_imports_point_one_way():
    # The four files import torch, the standard library and each other, never study/.
    for name in FOUR_FILES:
        found = imports(os.path.join(ROOT, name))
        assert 'study' not in found and not any(n.startswith('study') for n in found), name
    allowed = {'argparse', 'concurrent', 'functools', 'gzip', 'hashlib', 'http', 'math',
               'multiprocessing', 'os', 'signal', 'struct', 'sys', 'time', 'urllib', 'warnings',
               'zlib', 'torch', 'test', 'train', 'models', 'dlc_practical_prologue'}
    for name in FOUR_FILES:
        assert imports(os.path.join(ROOT, name)) <= allowed, name
    # Within study/: no module imports one that imports it back, directly or through others.
    graph = {}
    for name in os.listdir(os.path.join(ROOT, 'study')):
        if name.endswith('.py'):
            graph['study.' + name[:-3]] = {n for n in imports(os.path.join(ROOT, 'study', name))
                                           if n.startswith('study.')}

    def reaches(start, seen):
        for nxt in graph.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reaches(nxt, seen)
        return seen
    for module in graph:
        assert module not in reaches(module, set()), module
