"""The course submission stands alone: in a copy of the repository that holds the four files
and nothing else, `python test.py` runs the study and prints the numbers that the study package
gives for the same seed, with one process or two; a research flag says in one line that it
needs the package; Ctrl-C and a dead worker end the run cleanly and change no file."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from tests.common import DATA_DIR, ROOT, interrupt, run_cli

FOUR_FILES = ('test.py', 'dlc_practical_prologue.py', 'models.py', 'train.py')
# What a grader reads to follow one round of one variant from `python test.py` to its printed
# number (digit_branch: its default branch only, 8 lines; models' other branches and heads,
# re-pairing, deskewing, validation and the MNIST reading are off that path).
ONE_ROUND = {'test.py': ('main', 'run_jobs', 'run_round', 'seed_for', 'network'),
             'dlc_practical_prologue.py': ('generate_pair_sets', 'generate_split_pairs',
                                           'mnist_to_pairs'),
             'train.py': ('prepare_inputs', 'standardize', 'train_model', 'shift_images',
                          'one_cycle', 'evaluate'),
             'models.py': ('SiameseNet', 'conv_block', 'linear_block', 'classifier', 'MLPHead')}


def lines_without_times(stdout):
    """test.py's per-round lines and table, with the measured times cut out (they are noise)."""
    kept = []
    for line in stdout.splitlines():
        if line.startswith('row=') or line.startswith('  '):
            kept.append(re.sub(r' seconds=[0-9.]+', '', line))
        elif re.match(r'\S+ +\d+ ', line):  # a table row: its last column is s/run
            kept.append(line.rsplit(None, 1)[0])
    return kept


def files_of(folder):
    """{relative path: content} of every file under folder but Python's byte-code caches."""
    out = {}
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in names:
            path = os.path.join(top, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


class Reading(unittest.TestCase):
    def test_one_round_reads_in_300_lines_and_each_file_is_short(self):
        total = 8  # the default branch of models.digit_branch
        for name, functions in ONE_ROUND.items():
            with open(os.path.join(ROOT, name), encoding='utf-8') as f:
                text = f.read()
            self.assertLessEqual(len(text.splitlines()), 250 if name == 'test.py' else 400, name)
            spans = {node.name: node.end_lineno - node.lineno + 1 for node in ast.parse(text).body
                     if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
            total += sum(spans[f] for f in functions)
        self.assertLessEqual(total, 300)


class FourFilesAlone(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.mkdtemp()
        for name in FOUR_FILES:
            shutil.copy(os.path.join(ROOT, name), cls.folder)
        cls.env = dict(os.environ)
        cls.env.pop('PYTORCH_DATA_DIR', None)  # the copy is told where MNIST is by --data_dir

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.folder)

    def alone(self, *args, timeout=900):
        return subprocess.run([sys.executable, 'test.py', *args, '--data_dir', DATA_DIR],
                              cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def test_the_copy_holds_the_four_files_only(self):
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(FOUR_FILES))

    def test_the_same_numbers_as_the_study_package(self):
        done = self.alone('--quick', '--rounds', '2', '--seed', '7')
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr, '')
        path = os.path.join(self.folder, 'variants.json')
        try:
            study = run_cli('--study', 'variants', '--quick', '--rounds', '2', '--seed', '7',
                            '--json', path)
            self.assertEqual(study.returncode, 0, study.stderr)
            with open(path) as f:
                data = json.load(f)
        finally:
            if os.path.exists(path):
                os.remove(path)
        printed = {(m['name'], int(m['round'])): m for m in (
            re.match(r'row=(?P<name>\S+) round=(?P<round>\d+) test_error=(?P<test>\S+) '
                     r'digit_error=(?P<digit>\S+) train_error=(?P<train>\S+)', line).groupdict()
            for line in done.stdout.splitlines() if line.startswith('row='))}
        expected = {(r['name'], run['round']): run for r in data['rows'] for run in r['runs']}
        self.assertEqual(set(printed), set(expected))
        self.assertEqual(len(printed), 2 * 7)
        two = lambda x: '-' if x is None else f'{x:.2f}'
        for key, run in expected.items():
            got = printed[key]
            self.assertEqual((got['test'], got['digit'], got['train']),
                             (two(run['test_error']), two(run['test_digit_error']),
                              two(run['train_error'])), key)
        # The table's paired differences are the package's adjusted contrasts.
        for c in data['contrasts']:
            low, high = c['paired']['ci']
            sign = lambda x: f'{x:+.2f}'.replace('-0.00', '+0.00')
            self.assertIn(f"{c['text']:<34} {sign(c['paired']['mean'])} [{sign(low)}, "
                          f"{sign(high)}]", done.stdout)

    def test_a_process_pool_gives_the_numbers_of_one_process(self):
        one = self.alone('--quick', '--rounds', '2', '--workers', '1')
        two = self.alone('--quick', '--rounds', '2', '--workers', '2')
        self.assertEqual((one.returncode, two.returncode), (0, 0), one.stderr + two.stderr)
        self.assertIn('1 process(es)', one.stdout)
        self.assertIn('2 process(es)', two.stdout)
        self.assertEqual(lines_without_times(one.stdout), lines_without_times(two.stdout))
        self.assertEqual(len([l for l in one.stdout.splitlines() if l.startswith('row=')]), 14)

    def test_a_research_flag_says_it_needs_the_package(self):
        for flag, args in (('--study', ('--study', 'heads')), ('--fast', ('--fast',)),
                           ('--save', ('--save',)), ('--json', ('--json', 'x.json')),
                           ('--reproduce', ('--reproduce',)), ('--bench', ('--quick', '--bench'))):
            with self.subTest(args=args):
                done = self.alone(*args)
                self.assertEqual(done.returncode, 2)
                self.assertEqual(done.stderr, f'test.py: error: {flag} needs the package study/, '
                                 'which is not here (python test.py runs without it)\n')
                self.assertEqual(done.stdout, '')

    def test_ctrl_c_keeps_the_finished_rounds_and_changes_no_file(self):
        for workers in ('1', '2'):
            with self.subTest(workers=workers):
                before = files_of(self.folder)
                status, out, err = interrupt(
                    [sys.executable, 'test.py', '--quick', '--rounds', '5000', '--workers',
                     workers, '--data_dir', DATA_DIR], self.folder, 'row=', env=self.env)
                self.assertEqual(status, 130, err)
                self.assertEqual(err, 'test.py: error: interrupted: the table keeps the rounds '
                                      'that finished\n')
                self.assertIn('test error %', out)
                self.assertEqual(files_of(self.folder), before)

    def test_a_dead_worker_ends_the_run_in_one_line(self):
        script = os.path.join(self.folder, 'planted.py')
        with open(script, 'w') as f:  # the spawned workers import this main script first
            f.write('import os, sys\nimport test\n\n\ndef die(*args, **kwargs):\n'
                    '    os._exit(3)\n\n\ntest.run_round = die\n'
                    "if __name__ == '__main__':\n    sys.exit(test.main(sys.argv[1:]))\n")
        try:
            done = subprocess.run([sys.executable, script, '--quick', '--rounds', '3',
                                   '--workers', '2', '--data_dir', DATA_DIR], cwd=self.folder,
                                  env=self.env, capture_output=True, text=True, timeout=300)
        finally:
            os.remove(script)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertNotIn('Traceback', done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        self.assertRegex(done.stderr, r'^test.py: error: a round failed \(BrokenProcessPool: .*\); '
                                      r'rerun with --workers 1 to see it alone\n$')


if __name__ == '__main__':
    unittest.main()
