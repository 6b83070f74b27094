"""test.py as a user runs it: results files, bad input, interruption and determinism."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

from tests.common import PROJECT, ROOT, cli, entry, prologue, reproduce, run_cli, summary

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
        self.assertEqual(names, ['plain', 'ws', 'aux', 'ws+aux', 'ws+aux+re-pair', 'best'])
        self.assertTrue(data['complete'])
        self.assertEqual(data['study'], 'variants')
        self.assertEqual(data['code']['fingerprint'], provenance.code_fingerprint())
        self.assertEqual(data['environment']['bf16_kind'], provenance.bf16_kind())
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

    def test_only_a_whole_unchanged_study_replaces_the_committed_results(self):
        path = lambda *args: cli.results_path('heads', cli.parse_args(list(args), PROJECT))
        committed = os.path.join(cli.RESULTS, 'heads.json')
        self.assertEqual(path('--study', 'heads'), committed)
        self.assertEqual(path('--study', 'heads', '--rounds', '20', '--seed', '3'), committed)
        self.assertEqual(path('--study', 'all'), committed)
        for changed in (('--quick',), ('--variant', 'mlp'), ('--epochs', '3'), ('--lr', '0.1'),
                        ('--batch_size', '20'), ('--pairs', '500'), ('--test_pairs', '500'),
                        ('--validation',)):
            with self.subTest(changed=changed):
                self.assertIsNone(path('--study', 'heads', *changed))
                self.assertIsNone(path('--study', 'all', *changed))
        self.assertIsNone(path())  # plain python test.py prints and saves nothing
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
        (('--rounds', 'ten'), "expected a whole number, got 'ten'"),
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
        (('--variant', 'nope'), 'choose from plain, ws, aux, ws+aux, ws+aux+re-pair, best'),
        (('--device', 'tpu'), "choose from 'auto', 'cpu', 'cuda'"),
        (('--json', '/nonexistent-folder/x.json'), 'does not exist'),
        (('--json', tempfile.gettempdir()), 'is a folder'),
        (('--seed', '-1'), '--seed'),
        (('--workers', '0'), '--workers'),
        (('--bogus',), 'unrecognized arguments'),
        (('--fast', '--study', 'heads'), '--fast runs its own study'),
        (('--bench', '--variant', 'nope'), 'choose from plain, ws, aux, ws+aux, ws+aux+re-pair, best, fast'),
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
        with mock.patch.object(torch, '__version__', '1.7.1'):
            status, out, err = run_main('--quick')
        self.assertEqual(status, 2)
        self.assertEqual(err, 'test.py: error: torch 1.7.1 is installed, but this project needs '
                              'torch 1.8 or newer: pip install -r requirements.txt\n')
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
            for args in (('--validation', '--variant', 'ws'), ('--study', 'tuning', '--variant', 'best')):
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


class Workers(unittest.TestCase):
    """A failure inside a worker process ends the run with its one-line error and exit status 1:
    never a hang, never a worker started again and again. The failure is planted by a wrapper
    script that patches the project in every process it starts (a spawned worker imports the
    parent's main script first), so the project's own code runs unchanged."""

    PLANTS = {
        'start-up': 'runner.warm_up = fail',
        'round': 'train.run_round = fail',
        'death': 'train.run_round = lambda *args, **kwargs: os._exit(3)',
    }

    def run_planted(self, plant, *args):
        folder = tempfile.mkdtemp()
        try:
            script = os.path.join(folder, 'planted.py')
            with open(script, 'w') as f:
                f.write(f"""import os, sys
sys.path.insert(0, {ROOT!r})
import train
from study import runner

def fail(*args, **kwargs):
    raise RuntimeError('planted failure')

{self.PLANTS[plant]}
import test
if __name__ == '__main__':
    sys.exit(test.main(sys.argv[1:]))
""")
            # A hang fails the test through the timeout instead of blocking the suite.
            done = subprocess.run([sys.executable, script, '--quick', '--variant', 'ws', '--rounds',
                                   '3', *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=300)
        finally:
            shutil.rmtree(folder)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertNotIn('Traceback', done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        return done.stderr

    def test_a_worker_that_fails_to_start_ends_the_run(self):
        for workers in ('2', '1'):
            with self.subTest(workers=workers):
                err = self.run_planted('start-up', '--workers', workers)
                self.assertIn('test.py: error: RuntimeError: planted failure', err)

    def test_a_round_that_fails_in_a_worker_ends_the_run(self):
        err = self.run_planted('round', '--workers', '2')
        self.assertIn('test.py: error: RuntimeError: planted failure', err)

    def test_a_worker_that_dies_ends_the_run(self):
        err = self.run_planted('death', '--workers', '2')
        self.assertIn('a worker process ended without finishing its rounds (exit code 3)', err)


class Orphans(unittest.TestCase):
    def test_workers_stop_when_their_study_is_killed(self):
        # A study killed outright (SIGKILL: no chance to stop its workers): each worker finishes
        # its round and exits instead of waiting forever for the next.
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'test.py'), '--variant', 'ws', '--rounds', '5000',
             '--pairs', '40', '--test_pairs', '25', '--epochs', '1', '--workers', '2'],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if line.startswith('run study=variants row=ws round='):
                    break
            workers = children(proc.pid)
            self.assertEqual(len(workers), 2)
        finally:
            proc.kill()
            proc.wait()
        for _ in range(600):  # a hang guard, not a timing: 60 s for a one-epoch round to end
            if not any(alive(pid) for pid in workers):
                break
            threading.Event().wait(0.1)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.assertFalse(any(alive(pid) for pid in workers))


def children(pid):
    """The worker processes of pid (Linux /proc): its children that multiprocessing spawned,
    not its resource tracker."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                with open(f'/proc/{entry}/cmdline') as f:
                    command = f.read()
            except OSError:
                continue
            if int(fields[1]) == pid and 'spawn_main' in command:
                found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


class Training(unittest.TestCase):
    def test_huge_learning_rate_stops_the_run_with_a_clear_message(self):
        done = run_cli(*QUICK, '--variant', 'ws+aux', '--lr', '1e30')
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r'row ws\+aux round 0: the training loss became (nan|inf) '
                                      r'at epoch \d; try a smaller --lr')
        self.assertNotIn('Traceback', done.stderr)
        self.assertIn('diverged', done.stdout)
        self.assertNotIn('test_error=', done.stdout)


class Interrupt(unittest.TestCase):
    def test_ctrl_c_keeps_finished_rounds(self):
        # A study far too long to end by itself; Ctrl-C once a round has finished, so the signal
        # lands while rounds still run, in the workers' parent and in a single process alike.
        for workers in ('1', '2'):
            with self.subTest(workers=workers):
                self.interrupt(workers)

    def interrupt(self, workers):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, 'partial.json')
        try:
            proc = subprocess.Popen(
                [sys.executable, os.path.join(ROOT, 'test.py'), '--variant', 'ws', '--rounds',
                 '5000', '--pairs', '40', '--test_pairs', '25', '--epochs', '1', '--workers',
                 workers, '--threads', '1', '--json', path],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Hang guards, not timings: a study that never prints, or never ends, fails the test.
            watchdog = threading.Timer(600, proc.kill)
            watchdog.start()
            for line in proc.stdout:
                if line.startswith('run study=variants row=ws round='):
                    break
            watchdog.cancel()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=600)
            self.assertEqual(proc.returncode, 130, err)
            self.assertNotIn('Traceback', err)
            self.assertIn('interrupted', err)
            self.assertIn('test error %', out)
            with open(path) as f:
                data = json.load(f)
            self.assertFalse(data['complete'])
            runs = data['rows'][0]['runs']
            self.assertGreaterEqual(len(runs), 1)
            self.assertLess(len(runs), 5000)
            self.assertEqual(data['rows'][0]['summary']['n'], len(runs))
            self.assertEqual(os.listdir(folder), ['partial.json'])
        finally:
            if proc.poll() is None:
                proc.kill()
            shutil.rmtree(folder)


# Rounds of the small results file that the reproduction tests rerun.
ROUNDS = 10


def elsewhere(data):
    """A committed results file that another CPU made: rounds may differ, means must agree."""
    data['environment']['cpu'] = 'another CPU'


class Reproduce(unittest.TestCase):
    """--reproduce on a small results file made here: identical on this machine, and a verdict
    that fails when the file disagrees with the rerun."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.path = os.path.join(cls.dir, 'fast.json')
        done = run_cli('--fast', '--rounds', str(ROUNDS), '--pairs', '300', '--test_pairs', '300',
                       '--epochs', '2', '--workers', '1', '--threads', '1', '--json', cls.path)
        assert done.returncode == 0, done.stderr
        with open(cls.path) as f:
            cls.data = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def reproduce(self, change=None, *args):
        data = json.loads(json.dumps(self.data))
        if change:
            change(data)
        path = os.path.join(self.dir, 'changed.json')
        with open(path, 'w') as f:
            json.dump(data, f)
        return run_cli('--reproduce', path, '--workers', '1', *args)

    def test_the_same_machine_gives_identical_rounds(self):
        done = self.reproduce()
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn('every round must be identical', done.stdout)
        self.assertRegex(done.stdout, rf'fast +{ROUNDS} +[0-9.]+ +[0-9.]+ +\+0\.00 \[\+0\.00, '
                                      rf'\+0\.00\] +{ROUNDS}/{ROUNDS} +{ROUNDS}/{ROUNDS} +identical')
        self.assertTrue(done.stdout.rstrip().endswith('verdict: reproduced: every row identical, '
                                                      'round by round'))

    def test_a_changed_round_is_not_identical(self):
        def change(data):
            data['rows'][0]['runs'][1]['test_error'] += 0.1
        done = self.reproduce(change)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f'{ROUNDS - 1}/{ROUNDS}', done.stdout)
        self.assertIn('verdict: NOT reproduced: fast are not identical', done.stdout)

    def test_elsewhere_a_realistic_shift_is_flagged_just_past_the_tolerance(self):
        # Another CPU: the committed rounds differ from the rerun's by noise of a realistic size
        # (0.5 pp per round, as between machines) plus a shift. The rerun is this machine's, so
        # the paired differences are exactly -(noise + shift): the row is consistent when the
        # shift lies inside the tolerance the code uses (its joint interval's half-width) and
        # flagged just past it.
        pattern = [1, -1, 2, -2, 0.5, -0.5, 1.5, -1.5, 0, 0]  # mean 0
        scale = 0.5 / summary.mean_std(pattern)[1]
        noise = [scale * z for z in pattern]
        level = 1 - (1 - reproduce.JOINT_LEVEL) / 1  # one row
        tolerance = summary.t_quantile(level, ROUNDS - 1) * 0.5 / ROUNDS ** 0.5
        self.assertTrue(0.4 < tolerance < 0.6, tolerance)  # about half a point at 10 rounds
        for factor, status, verdict in ((0.97, 0, 'verdict: reproduced: all 1 rows consistent'),
                                        (1.03, 1, 'verdict: NOT reproduced: fast disagree')):
            with self.subTest(factor=factor):
                def shifted(data):
                    elsewhere(data)
                    for run, n in zip(data['rows'][0]['runs'], noise):
                        run['test_error'] += n + factor * tolerance
                done = self.reproduce(shifted)
                self.assertEqual(done.returncode, status, done.stdout)
                self.assertIn(verdict, done.stdout)

    def test_elsewhere_identical_rounds_are_consistent(self):
        done = self.reproduce(elsewhere, '--rounds', '2')
        self.assertEqual(done.returncode, 0, done.stdout)
        self.assertIn('cpu another CPU here', done.stdout)
        self.assertIn('verdict: reproduced: all 1 rows consistent', done.stdout)

    def test_elsewhere_one_round_or_a_diverged_rerun_never_agrees(self):
        def elsewhere_and_diverging(data):
            elsewhere(data)
            data['rows'][0]['config']['lr'] = 1e30
        done = self.reproduce(elsewhere, '--rounds', '1')
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn('NOT judged (fewer than 2 rounds)', done.stdout)
        done = self.reproduce(elsewhere_and_diverging, '--rounds', '2')
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn('NOT consistent (2 round(s) diverged)', done.stdout)

    def test_recorded_settings_are_not_overridden(self):
        done = run_cli('--reproduce', self.path, '--epochs', '3')
        self.assertEqual(done.returncode, 2)
        self.assertIn('drop --epochs', done.stderr)
        done = run_cli('--reproduce', os.path.join(self.dir, 'nothing.json'))
        self.assertEqual(done.returncode, 2)
        self.assertIn('there is no results file', done.stderr)


if __name__ == '__main__':
    unittest.main()
