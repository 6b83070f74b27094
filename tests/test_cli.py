"""test.py as a user runs it: results files, bad input, the data, validation from the command
line and determinism."""
import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest

from tests.common import PROJECT, cli, entry, prologue, run_cli, train

from study import provenance

QUICK = ('--quick', '--workers', '1')


def run_main(*args):
    """test.py's main(args) in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = entry.main(list(args))
        except SystemExit as e:  # argparse's errors exit
            status = e.code
    return status, out.getvalue(), err.getvalue()


class Results(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def run_json(self, *args, name='out.json'):
        path = os.path.join(self.dir, name)
        done = run_cli(*args, '--json', path)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(path) as f:
            return json.load(f), done

    def test_quick_json_has_the_four_variants_and_the_best_model(self):
        data, done = self.run_json(*QUICK)
        names = [r['name'] for r in data['rows']]
        self.assertEqual(names, ['plain', 'ws', 'aux', 'ws+aux', 'plain-small', 'ws+aux+re-pair',
                                 'best'])
        self.assertTrue(data['complete'])
        self.assertEqual(data['study'], 'variants')
        self.assertEqual(data['code']['fingerprint'], provenance.code_fingerprint())
        self.assertEqual(data['environment']['bf16_kind'], train.bf16_kind())
        for r in data['rows']:
            self.assertEqual(r['summary']['n'], 1)
            self.assertEqual((r['config']['nb_pairs'], r['config']['nb_epochs']), (200, 2))
            run = r['runs'][0]
            self.assertEqual(run['test_error'], r['summary']['test_error']['mean'])
            self.assertEqual(run['nb_parameters'], r['nb_parameters'])
        params = {r['name']: r['nb_parameters'] for r in data['rows']}
        self.assertEqual(params['ws'], params['ws+aux'])
        self.assertGreater(params['plain'], params['ws'])
        # One greppable line per run, with the figure the file holds, and the table.
        for r in data['rows']:
            self.assertIn(f"row={r['name']} round=0 test_error={r['runs'][0]['test_error']:.2f}",
                          done.stdout)
        self.assertIn('test error %', done.stdout)

    def test_same_seed_same_numbers_different_seed_different_pairs(self):
        args = QUICK + ('--variant', 'ws+aux', '--rounds', '2')
        a, _ = self.run_json(*args, name='a.json')
        b, _ = self.run_json(*args, name='b.json')
        c, _ = self.run_json(*args, '--seed', '7', name='c.json')
        pick = lambda d, k: [r[k] for r in d['rows'][0]['runs']]
        for key in ('test_error', 'final_loss', 'pairs_digest', 'init_digest'):
            self.assertEqual(pick(a, key), pick(b, key))
            self.assertNotEqual(pick(a, key), pick(c, key))
        self.assertEqual((a['settings']['seed'], c['settings']['seed']), (0, 7))

    def test_worker_processes_give_the_same_numbers(self):
        args = ('--quick', '--variant', 'ws,best', '--rounds', '2', '--threads', '1')
        one, _ = self.run_json(*args, '--workers', '1', name='one.json')
        two, _ = self.run_json(*args, '--workers', '2', name='two.json')
        losses = lambda d: [[r['final_loss'] for r in row['runs']] for row in d['rows']]
        self.assertEqual(losses(one), losses(two))

    def test_only_save_writes_into_the_results_and_only_a_whole_unchanged_study(self):
        path = lambda *args: cli.results_path('heads', cli.parse_args(list(args), PROJECT))
        committed = os.path.join(cli.RESULTS, 'heads.json')
        for args in ((), ('--study', 'heads'), ('--study', 'all'), ('--fast',),
                     ('--study', 'heads', '--quick'), ('--study', 'heads', '--rounds', '20')):
            with self.subTest(args=args):  # without --save or --json nothing is written
                self.assertIsNone(path(*args))
        self.assertEqual(path('--study', 'heads', '--save'), committed)
        self.assertEqual(path('--study', 'heads', '--rounds', '20', '--seed', '3', '--save'),
                         committed)
        self.assertEqual(path('--study', 'all', '--save'), committed)
        for changed in (('--quick',), ('--variant', 'mlp'), ('--epochs', '3'), ('--lr', '0.1'),
                        ('--batch_size', '20'), ('--pairs', '500'), ('--test_pairs', '500'),
                        ('--validation',)):
            with self.subTest(changed=changed):
                for study in ('heads', 'all'):
                    with self.assertRaisesRegex(cli.UsageError, '--save replaces .* --json PATH'):
                        path('--study', study, '--save', *changed)
        self.assertEqual(path('--study', 'heads', '--quick', '--json', 'x.json'), 'x.json')
        self.assertEqual(path('--study', 'all', '--quick', '--json', self.dir),
                         os.path.join(self.dir, 'heads.json'))

    def test_study_list_names_every_study(self):
        done = run_cli('--study', 'list')
        self.assertEqual(done.returncode, 0)
        for name in ('variants', 'baselines', 'backbones', 'heads', 'aux_weight',
                     'regularization', 'curves', 'data_size', 'no_digit_labels', 'tuning'):
            self.assertIn(name, done.stdout)


class BadInput(unittest.TestCase):
    """One line on stderr saying what is wrong and what is allowed; exit 2; nothing trained."""

    CASES = [
        (('--rounds', '0'), 'whole number >= 1'),
        (('--rounds', '-2'), 'whole number >= 1'),
        (('--rounds', 'ten'), "argument --rounds: invalid int value: 'ten'"),  # test.py's own
        (('--study', 'heads', '--rounds', 'ten'), "expected a whole number, got 'ten'"),
        (('--epochs', '0'), '--epochs'),
        (('--batch_size', '1'), 'whole number >= 2'),
        (('--pairs', '5'), 'use at least 8'),
        (('--pairs', '0'), '--pairs'),
        (('--pairs', '30001'), 'from 1 to 30000'),
        (('--test_pairs', '5001'), 'from 1 to 5000'),
        (('--lr', '-1'), 'positive finite number'),
        (('--lr', 'nan'), 'positive finite number'),
        (('--lr', 'fast'), 'expected a number'),
        (('--study', 'nope'), 'choose from list, all, variants'),
        (('--variant', 'nope'), 'choose from plain, ws, aux, ws+aux, plain-small, ws+aux+re-pair, '
                                'best'),
        (('--device', 'tpu'), "choose from 'auto', 'cpu', 'cuda'"),
        (('--json', '/nonexistent-folder/x.json'), 'does not exist'),
        (('--json', tempfile.gettempdir()), 'is a folder'),
        (('--seed', '-1'), '--seed'),
        (('--workers', '0'), '--workers'),
        (('--bogus',), 'unrecognized arguments'),
        (('--fast', '--study', 'heads'), '--fast runs its own study'),
        (('--bench', '--variant', 'nope'), 'choose from plain, ws, aux, ws+aux, plain-small, '
                                           'ws+aux+re-pair, best, fast'),
        (('--save', '--quick'), '--save replaces report/results/variants.json'),
        (('--save', '--json', 'x.json'), 'give one of them'),
    ]

    def test_each_bad_flag(self):
        # In this process, through test.py's main (a process each would cost seconds of imports).
        for args, expected in self.CASES:
            with self.subTest(args=args):
                status, out, err = run_main(*args)
                self.assertEqual(status, 2, err)
                self.assertIn(expected, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertNotIn('Traceback', err)
                self.assertEqual(out, '')

    def test_a_torch_below_the_floor_is_named_in_one_line(self):
        import torch
        from unittest import mock
        for args in (('--quick',), ('--study', 'heads', '--quick')):  # test.py's own, the package
            with self.subTest(args=args), mock.patch.object(torch, '__version__', '1.3.1'):
                status, out, err = run_main(*args)
                self.assertEqual(status, 2)
                self.assertEqual(err, 'test.py: error: torch 1.3.1 is installed; this project '
                                      'needs torch 1.4 or newer\n')
                self.assertEqual(out, '')

    def test_a_bad_flag_as_a_user_runs_it(self):
        done = run_cli('--rounds', '0')
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stderr, 'test.py: error: argument --rounds: 0 is out of range: use a '
                                      'whole number >= 1 (see --help)\n')
        self.assertEqual(done.stdout, '')

    def test_cuda_only_where_there_is_a_gpu(self):
        import torch
        done = run_cli('--device', 'cuda', '--quick', '--variant', 'ws')
        if torch.cuda.is_available():
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn('row=ws round=0', done.stdout)
        else:
            self.assertEqual(done.returncode, 2)
            self.assertIn('no CUDA GPU', done.stderr)

    def test_unwritable_json(self):
        folder = tempfile.mkdtemp()
        try:
            path = os.path.join(folder, 'r.json')
            with open(path, 'w'):
                pass
            os.chmod(path, 0o444)
            if os.geteuid() == 0:  # root writes anyway; a path under a file is unwritable for all
                path = os.path.join(path, 'x.json')
            done = run_cli(*QUICK, '--json', path)
            self.assertEqual(done.returncode, 2)
            self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
            self.assertEqual(done.stdout, '')
        finally:
            shutil.rmtree(folder)


class Data(unittest.TestCase):
    def test_missing_data_without_network(self):
        folder = tempfile.mkdtemp()
        try:  # a data folder that does not exist yet, as after a typo in --data_dir
            done = run_cli(*QUICK, '--data_dir', os.path.join(folder, 'typo'),
                           env={'MNIST_MIRROR': 'http://127.0.0.1:9/'})
            self.assertEqual(done.returncode, 1)
            lines = done.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, done.stderr)
            self.assertIn('train-images-idx3-ubyte.gz is missing and could not be downloaded', lines[0])
            self.assertIn('--data_dir', lines[0])
            self.assertNotIn('run study', done.stdout)
            self.assertEqual(os.listdir(folder), [])  # no file, no empty folder left behind
        finally:
            shutil.rmtree(folder)

    def test_corrupt_file_names_it(self):
        folder = tempfile.mkdtemp()
        try:
            raw = prologue.raw_dir(folder)
            shutil.copytree(prologue.raw_dir(), raw)
            bad = os.path.join(raw, 'train-labels-idx1-ubyte.gz')
            os.chmod(raw, 0o755)
            os.chmod(bad, 0o644)
            with open(bad, 'r+b') as f:
                f.truncate(1000)
            done = run_cli(*QUICK, '--data_dir', folder)
            self.assertEqual(done.returncode, 1)
            self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
            self.assertIn(bad, done.stderr)
            self.assertIn('truncated or corrupt', done.stderr)
        finally:
            shutil.rmtree(folder)


class ValidationFromTheCommandLine(unittest.TestCase):
    def test_validation_runs_on_the_training_files_alone(self):
        folder = tempfile.mkdtemp()
        try:
            raw = prologue.raw_dir(folder)
            os.makedirs(raw)
            for name in prologue.SPLITS['train']:
                shutil.copy(os.path.join(prologue.raw_dir(), name), raw)
            for args in (('--validation', '--variant', 'ws'), ('--study', 'tuning', '--variant', 'fast')):
                with self.subTest(args=args):
                    path = os.path.join(folder, 'v.json')
                    done = run_cli(*QUICK, *args, '--data_dir', folder, '--json', path,
                                   env={'MNIST_MIRROR': 'http://127.0.0.1:9/'})
                    self.assertEqual(done.returncode, 0, done.stderr)
                    with open(path) as f:
                        data = json.load(f)
                    self.assertEqual(data['evaluated_on'], 'held-out training pairs')
                    self.assertIn('valid_error=', done.stdout)
            self.assertEqual(sorted(os.listdir(raw)), sorted(prologue.SPLITS['train']))
        finally:
            shutil.rmtree(folder)


class Training(unittest.TestCase):
    def test_huge_learning_rate_stops_the_run_with_a_clear_message(self):
        done = run_cli(*QUICK, '--variant', 'ws+aux', '--lr', '1e30')
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r'row ws\+aux round 0: the training loss became (nan|inf) '
                                      r'at epoch \d; try a smaller --lr')
        self.assertNotIn('Traceback', done.stderr)
        self.assertIn('diverged', done.stdout)
        self.assertNotIn('test_error=', done.stdout)


if __name__ == '__main__':
    unittest.main()
