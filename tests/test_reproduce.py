"""--reproduce: identical rounds on the same machine, and elsewhere a verdict that flags a
realistic shift just past its tolerance and accepts one just inside."""
import json
import os
import shutil
import tempfile
import unittest

from tests.common import reproduce, run_cli, summary


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
        self.assertRegex(done.stdout, r'this rerun differs in: cpu: committed another CPU, here ')
        self.assertIn('verdict: reproduced: all 1 rows consistent', done.stdout)

    def test_elsewhere_one_round_or_a_diverged_rerun_never_agrees(self):
        def elsewhere_and_diverging(data):
            elsewhere(data)
            data['rows'][0]['config']['lr'] = 1e30
        done = self.reproduce(elsewhere, '--rounds', '1')
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn('verdict: too few rounds to judge', done.stdout)
        self.assertNotIn('NOT reproduced', done.stdout)
        done = self.reproduce(elsewhere_and_diverging, '--rounds', '2')
        self.assertEqual(done.returncode, 1, done.stdout)
        self.assertIn('NOT consistent (2 round(s) diverged)', done.stdout)

    def test_elsewhere_differences_without_spread_are_too_few_to_judge(self):
        # Two rounds elsewhere that each come out one test pair worse (+1/300 here): their
        # interval has width zero, which says nothing about noise, so no verdict either way.
        committed = json.loads(json.dumps(self.data))
        rerun = json.loads(json.dumps(self.data))
        elsewhere(rerun)
        for row in rerun['rows']:
            row['runs'] = row['runs'][:2]
            for run in row['runs']:
                run['test_error'] += 100 / 300
        rows = reproduce.compare(committed, rerun)['rows']
        self.assertEqual([r['verdict'] for r in rows], [reproduce.TOO_FEW] * len(rows))
        for run in rerun['rows'][0]['runs'][:1]:  # some spread: a verdict again
            run['test_error'] += 100 / 300
        self.assertTrue(reproduce.compare(committed, rerun)['rows'][0]['verdict']
                        .endswith('consistent'))

    def test_recorded_settings_are_not_overridden(self):
        done = run_cli('--reproduce', self.path, '--epochs', '3')
        self.assertEqual(done.returncode, 2)
        self.assertIn('drop --epochs', done.stderr)
        done = run_cli('--reproduce', os.path.join(self.dir, 'nothing.json'))
        self.assertEqual(done.returncode, 2)
        self.assertIn('there is no results file', done.stderr)

if __name__ == '__main__':
    unittest.main()
