"""Statistics against values computed by hand or read from a table; results files; provenance."""
import json
import math
import os
import shutil
import tempfile
import unittest
from unittest import mock

from tests.common import ROOT, summary, train

from study import provenance


def runs(errors, start=0):
    return [dict(round=start + k, status='ok', test_error=e) for k, e in enumerate(errors)]


class Statistics(unittest.TestCase):
    def test_mean_and_sample_std(self):
        mean, std = summary.mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
        self.assertEqual(mean, 5.0)
        self.assertAlmostEqual(std, math.sqrt(32 / 7))  # n - 1 = 7, not 8
        self.assertEqual(summary.mean_std([3.0, None]), (3.0, None))
        self.assertEqual(summary.mean_std([]), (None, None))

    def test_t_quantiles_match_the_table(self):
        # Two-sided Student t quantiles, as printed in any statistics table.
        table = {(1, .95): 12.706, (2, .95): 4.303, (4, .95): 2.776, (9, .95): 2.262,
                 (29, .95): 2.045, (39, .95): 2.023, (60, .95): 2.000, (120, .95): 1.980,
                 (9, .99): 3.250, (39, .99): 2.708, (1, .99): 63.657}
        for (df, level), value in table.items():
            self.assertAlmostEqual(summary.t_quantile(level, df), value, places=3,
                                   msg=f'df={df} level={level}')
        self.assertAlmostEqual(summary.t_quantile(0.95, 10 ** 6), 1.960, places=3)

    def test_paired_difference_by_hand(self):
        # Round by round: 11-10, 13-11, 13-10, 16-12 = 1, 2, 3, 4: mean 2.5, std 1.29099,
        # standard error 0.645497, t(3) = 3.18245. Unpaired, the spread would be far larger.
        diff = summary.paired_difference(runs([11, 13, 13, 16]), runs([10, 11, 10, 12]))
        self.assertEqual(diff['n'], 4)
        self.assertAlmostEqual(diff['mean'], 2.5)
        self.assertAlmostEqual(diff['ci95'][0], 2.5 - 3.182446 * 0.6454972, places=5)
        self.assertAlmostEqual(diff['ci95'][1], 2.5 + 3.182446 * 0.6454972, places=5)

    def test_forty_rounds_use_student_t_not_the_normal(self):
        # 40 rounds: t(39) = 2.0227, about 3 % wider than the normal 1.96.
        errors = [(k * 7) % 5 for k in range(40)]
        diff = summary.paired_difference(runs(errors), runs([0] * 40))
        mean, std = summary.mean_std(errors)
        self.assertAlmostEqual(diff['ci95'][1] - mean, 2.022691 * std / math.sqrt(40), places=5)

    def test_pairs_only_rounds_both_finished(self):
        row = runs([5, 6, 7]) + [dict(round=3, status='diverged')]
        reference = runs([1, 1]) + [dict(round=2, status='diverged')] + runs([1], start=3)
        self.assertEqual(summary.paired_diffs(row, reference), [4, 5])

    def test_summary_counts_and_ranges(self):
        s = summary.summarize(runs([1.0, 3.0]) + [dict(round=2, status='diverged')])
        self.assertEqual((s['n'], s['diverged']), (2, 1))
        self.assertEqual((s['test_error']['mean'], s['test_error']['min'], s['test_error']['max']),
                         (2.0, 1.0, 3.0))
        self.assertNotIn('test_digit_error', s)


class FourFilesStatistics(unittest.TestCase):
    """test.py's table (train.py, no package) gives the package's figures: t quantiles, and the
    family's contrasts with their Bonferroni-adjusted intervals."""

    def test_t_quantiles_agree(self):
        for df in (1, 2, 9, 39, 99):
            for level in (0.95, 0.99, 1 - 0.05 / 8):
                self.assertAlmostEqual(train.t_quantile(level, df), summary.t_quantile(level, df),
                                       places=4, msg=(df, level))

    def test_contrasts_agree_and_are_adjusted(self):
        errors = {'a': [5.0, 6.1, 4.9, 5.5], 'b': [4.0, 5.2, 4.4, 4.1], 'c': [3.0, 2.5, 3.3, 2.0],
                  'd': [2.0, 2.2, 1.1, 1.9]}
        by_row = {name: [dict(run, name=name) for run in runs(values)]
                  for name, values in errors.items()}
        family = [('b', 'a'), ('c', 'a'), ('d', 'c', 'b', 'a')]
        package = summary.contrasts(by_row, family)
        for names, entry in zip(family, package):
            text, mean, ci = train.contrast(by_row, names, len(family))
            self.assertEqual(text, entry['text'])
            self.assertAlmostEqual(mean, entry['paired']['mean'])
            for x, y in zip(ci, entry['paired']['ci']):
                self.assertAlmostEqual(x, y, places=6)
            # Adjusted for three contrasts: wider than the plain 95 % interval.
            self.assertLess(ci[0], entry['paired']['ci95'][0])
            self.assertEqual(entry['paired']['family'], 3)
        # The interaction by hand: (d - c) - (b - a), round by round.
        diffs = [(d - c) - (b - a) for a, b, c, d in zip(*errors.values())]
        self.assertAlmostEqual(package[2]['paired']['mean'], sum(diffs) / 4)


class Table(unittest.TestCase):
    def test_markdown_row(self):
        data = dict(evaluated_on='test pairs', reference='a', rows=[
            dict(name='a', nb_parameters=1234, summary=summary.summarize(
                [dict(round=0, status='ok', test_error=2.0, train_error=0.5, seconds=1.0,
                      eval_seconds=0.25)]))])
        lines = summary.markdown_table(data).splitlines()
        self.assertEqual(lines[0], '| row | params | test error % | min | max | digit error % | '
                                   'train error % | s / run | vs a (pp, 95% CI) |')
        self.assertEqual(lines[2], '| a | 1,234 | 2.00 | 2.00 | 2.00 | - | 0.50 | 1.25 | reference |')


class Signs(unittest.TestCase):
    def test_a_difference_that_rounds_to_zero_has_no_minus_sign(self):
        self.assertEqual(summary.ci_text(dict(n=3, mean=-0.004, ci95=[-0.3, 0.001])),
                         '+0.00 [-0.30, +0.00]')
        self.assertEqual(summary.ci_text(dict(n=3, mean=-0.006, ci95=[-0.3, 0.2])),
                         '-0.01 [-0.30, +0.20]')


class ResultsFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, 'r.json')

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(self):
        summary.write_json(self.path, {'a': 1})
        with mock.patch.object(summary.os, 'replace', side_effect=OSError('disk full')):
            with self.assertRaises(OSError):
                summary.write_json(self.path, {'a': 2})  # written, then the rename fails
        with self.assertRaises(TypeError):
            summary.write_json(self.path, {'a': object()})  # not JSON
        with open(self.path) as f:
            self.assertEqual(json.load(f), {'a': 1})
        self.assertEqual(os.listdir(self.dir), ['r.json'])


class Fingerprint(unittest.TestCase):
    SOURCE = '"""Doc."""\nimport os  # why\n\n\ndef f(x):\n    """What f does."""\n    return x + 1\n'

    def test_comments_and_docstrings_do_not_count_code_does(self):
        reworded = self.SOURCE.replace('# why', '# another reason').replace('What f', 'How f')
        self.assertEqual(provenance.code_only(self.SOURCE), provenance.code_only(reworded))
        self.assertNotEqual(provenance.code_only(self.SOURCE),
                            provenance.code_only(self.SOURCE.replace('x + 1', 'x + 2')))
        self.assertEqual(provenance.code_only(self.SOURCE), 'import os\ndef f(x):\n    return x + 1\n')

    def test_a_docstring_after_non_ascii_text_is_cut_exactly(self):
        # ast counts columns in bytes, the source is sliced in characters: the code after a
        # docstring that holds a non-ASCII character must stay.
        self.assertEqual(provenance.code_only('def f():\n    """± doc"""; x = 1\n'),
                         'def f():\n    ; x = 1\n')

    def test_the_fingerprint_covers_the_round_code_and_nothing_else(self):
        copy = tempfile.mkdtemp()
        try:
            shutil.copytree(ROOT, os.path.join(copy, 'p'), ignore=shutil.ignore_patterns(
                '.git', 'report', 'tests', '__pycache__', 'data'))
            copy = os.path.join(copy, 'p')
            self.assertEqual(provenance.code_fingerprint(copy), provenance.code_fingerprint(ROOT))
            # Code outside the round (the benchmark, reproduction, the command line) changes
            # nothing; code of the round does, in any of its files.
            for name in ('study/bench.py', 'study/reproduce.py', 'study/cli.py', 'test.py'):
                with open(os.path.join(copy, name), 'a') as f:
                    f.write('\nCHANGED = 1\n')
            self.assertEqual(provenance.code_fingerprint(copy), provenance.code_fingerprint(ROOT))
            # test.py's round (its seeds, network and run_round) counts, the rest of it not.
            path = os.path.join(copy, 'test.py')
            with open(path) as f:
                source = f.read()
            for old, new in (("'weights'", "'weight'"), ("round_index % 4", "round_index % 3"),
                             ("models.SiameseNet(config['share_weights']",
                              "models.SiameseNet(not config['share_weights']")):
                self.assertIn(old, source)
                with open(path, 'w') as f:
                    f.write(source.replace(old, new))
                self.assertNotEqual(provenance.code_fingerprint(copy),
                                    provenance.code_fingerprint(ROOT), new)
            with open(path, 'w') as f:
                f.write(source)
            for name in provenance.ROUND_CODE:
                with open(os.path.join(copy, name)) as f:
                    source = f.read()
                with open(os.path.join(copy, name), 'a') as f:
                    f.write('\nCHANGED = 1\n')
                self.assertNotEqual(provenance.code_fingerprint(copy),
                                    provenance.code_fingerprint(ROOT), name)
                with open(os.path.join(copy, name), 'w') as f:
                    f.write(source)
        finally:
            shutil.rmtree(os.path.dirname(copy))

if __name__ == '__main__':
    unittest.main()
