"""Every summary figure recomputed from the per-round runs, by code written here that calls
nothing of the project's statistics: the committed results files, a study run now (so that a
bug in the code that summarizes would show), and the figures the README prints."""
import contextlib
import io
import math
import os
import re
import unittest

from tests.common import DATA_DIR, ROOT, STUDIES, config, entry, runner, summary
from study import studies

RESULTS = os.path.join(ROOT, 'report', 'results')
TOLERANCE = 1e-9


def t_quantile(level, df):
    """Two-sided Student t quantile, by Simpson integration of the density and bisection (the
    project finds it another way, by the incomplete beta function's continued fraction)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def inside(q, steps=4000):  # P(|T| <= q)
        h = q / steps
        density = lambda t: math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        total = density(0) + density(q) + sum((4 if k % 2 else 2) * density(k * h)
                                              for k in range(1, steps))
        return 2 * total * h / 3

    low, high = 0.0, 700.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if inside(mid) < level else (low, mid)
    return (low + high) / 2


def mean_sd(values):
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None)


def contrast(rows, c, level=0.95):
    """n, mean and interval at `level` of a stored contrast, from its rows' runs: a - b for
    (a, b), (a - b) - (c - d) for the interaction (a, b, c, d); older files name row and vs."""
    names = c.get('rows') or [c['row'], c['vs']]
    errors = [{r['round']: r['test_error'] for r in rows[n]['runs'] if r['status'] == 'ok'}
              for n in names]
    rounds = sorted(set(errors[0]).intersection(*errors[1:]))
    signs = (1, -1, -1, 1)
    diffs = [sum(sign * e[k] for sign, e in zip(signs, errors)) for k in rounds]
    if len(diffs) < 2:
        return None
    mean, sd = mean_sd(diffs)
    half = t_quantile(level, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return len(diffs), mean, mean - half, mean + half


def paired(runs, reference, key='test_error'):
    """n, mean and 95 % interval of (run - reference run) over the rounds both finished."""
    ref = {r['round']: r[key] for r in reference if r['status'] == 'ok'}
    diffs = [r[key] - ref[r['round']] for r in runs if r['status'] == 'ok' and r['round'] in ref]
    if len(diffs) < 2:
        return None
    mean, sd = mean_sd(diffs)
    half = t_quantile(0.95, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return len(diffs), mean, mean - half, mean + half


class Check:
    """Assertions that a results dict says what its runs say."""

    def assertClose(self, a, b, what):
        self.assertLessEqual(abs(a - b), TOLERANCE * max(1.0, abs(b)), what)

    def check_study(self, name, data):
        by_name = {r['name']: r for r in data['rows']}
        for row in data['rows']:
            what = f"{name}/{row['name']}"
            ok = [r for r in row['runs'] if r['status'] == 'ok']
            s = row['summary']
            self.assertEqual((s['n'], s['diverged']), (len(ok), len(row['runs']) - len(ok)), what)
            self.assertEqual(sorted(r['round'] for r in row['runs']),
                             list(range(len(row['runs']))) if data['complete'] else
                             sorted(r['round'] for r in row['runs']), what)
            for key in ('test_error', 'test_digit_error', 'train_error', 'train_digit_error',
                        'matched_digit_error', 'seconds', 'eval_seconds', 'cpu_seconds'):
                values = [r[key] for r in ok if r.get(key) is not None]
                if not values:
                    self.assertNotIn(key, s, what)
                    continue
                mean, sd = mean_sd(values)
                self.assertClose(s[key]['mean'], mean, f'{what} {key} mean')
                if sd is None:
                    self.assertIsNone(s[key]['std'], what)
                else:
                    self.assertClose(s[key]['std'], sd, f'{what} {key} std')
            if ok:
                errors = [r['test_error'] for r in ok]
                self.assertEqual((s['test_error']['min'], s['test_error']['max']),
                                 (min(errors), max(errors)), what)
            if row['name'] != data['reference']:
                self.check_paired(row.get('paired_vs_reference'),
                                  paired(row['runs'], by_name[data['reference']]['runs']), what)
        family = data.get('contrasts', [])
        for c in family:
            what = f"{name}: {c.get('text') or c['row'] + ' - ' + c['vs']}"
            self.check_paired(c['paired'], contrast(by_name, c), what)
            if c['paired'] and 'ci' in c['paired']:  # adjusted for the family: Bonferroni
                self.assertEqual(c['paired']['family'], len(family), what)
                n, mean, low, high = contrast(by_name, c, 1 - 0.05 / len(family))
                self.assertLessEqual(abs(c['paired']['ci'][0] - low), 1e-6, what)
                self.assertLessEqual(abs(c['paired']['ci'][1] - high), 1e-6, what)

    def check_paired(self, stored, expected, what):
        if expected is None:
            self.assertIsNone(stored, what)
            return
        n, mean, low, high = expected
        self.assertEqual(stored['n'], n, what)
        self.assertClose(stored['mean'], mean, f'{what} paired mean')
        self.assertLessEqual(abs(stored['ci95'][0] - low), 1e-6, f'{what} interval')
        self.assertLessEqual(abs(stored['ci95'][1] - high), 1e-6, f'{what} interval')


class CommittedResults(Check, unittest.TestCase):
    def test_every_stored_summary_is_that_of_its_runs(self):
        names = [n for n in sorted(os.listdir(RESULTS)) if n.endswith('.json')]
        self.assertIn('variants.json', names)
        for name in names:
            data = summary.load_json(os.path.join(RESULTS, name))
            if 'rows' in data:
                with self.subTest(name=name):
                    self.check_study(name, data)

    def test_the_interval_here_is_students(self):
        # The independent t quantile of this file against printed tables.
        for (df, level), value in {(1, .95): 12.706, (9, .95): 2.262, (39, .95): 2.023,
                                   (99, .95): 1.984, (9, .99): 3.250}.items():
            self.assertAlmostEqual(t_quantile(level, df), value, places=3)


class StudyRunNow(Check, unittest.TestCase):
    """A small study run now through the runner: what it stores is what its runs say, and each
    round ran on the seeds of (seed, round)."""

    def test_a_study_summarizes_its_own_runs(self):
        short = dict(nb_pairs=60, nb_test_pairs=50, nb_epochs=1)
        rows = [config('a', **short), config('b', **dict(short, aux_weight=1.0)),
                config('c', **dict(short, share_weights=False))]
        study = studies.Study('t', 'three rows', rows, 'a', contrasts=(('b', 'c'), ('c', 'a')))
        machine = runner.Machine(data_dir=DATA_DIR)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # the study's lines, kept out of the test log
            result = runner.run_study(study, rows, 3, 11, machine, 'test')
        self.assertEqual(printed.getvalue().count('run study=t row='), 9)
        self.assertTrue(result['complete'])
        self.check_study('now', result)
        self.assertEqual([(c['row'], c['vs']) for c in result['contrasts']], [('b', 'c'), ('c', 'a')])
        for row in result['rows']:
            self.assertEqual([r['round'] for r in row['runs']], [0, 1, 2])
            for r in row['runs']:
                self.assertEqual(r['data_seed'], entry.seed_for(11, r['round'], 'data'))
            self.assertEqual(row['config'], studies.row_config(next(x for x in rows
                                                                    if x['name'] == row['name'])))


class Readme(unittest.TestCase):
    """The README's results block: its figures recomputed from the runs of their files."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(ROOT, 'README.md')) as f:
            cls.readme = f.read()

    def test_the_default_table(self):
        variants = summary.load_json(os.path.join(RESULTS, 'variants.json'))
        rows = {r['name']: r for r in variants['rows']}
        for name, row in rows.items():
            errors = [r['test_error'] for r in row['runs'] if r['status'] == 'ok']
            mean, sd = mean_sd(errors)
            cells = f"| {name} | {row['nb_parameters']:,} | {mean:.2f} ± {sd:.2f} | " \
                    f"{min(errors):.2f} | {max(errors):.2f} |"
            self.assertIn(cells, self.readme, name)
        def signed(x):  # a figure that rounds to zero carries no minus sign
            return f'{x:+.2f}'.replace('-0.00', '+0.00')
        family = variants['contrasts']
        for c in family:  # each with the interval the file says it quotes
            adjusted = 'ci' in c['paired']
            n, mean, low, high = contrast(rows, c, 1 - 0.05 / len(family) if adjusted else 0.95)
            text = c.get('text') or f"{c['row']} - {c['vs']}"
            self.assertIn(f"{text}: {signed(mean)} [{signed(low)}, {signed(high)}] pp over {n} "
                          f"rounds", self.readme)

    def test_the_tuning_is_the_declared_one(self):
        tuning = summary.load_json(os.path.join(RESULTS, 'tuning.json'))
        declared = studies.TUNING
        self.assertEqual((tuning['study'], tuning['settings']['seed'], tuning['settings']['rounds']),
                         (declared['study'], declared['seed'], declared['rounds']))
        self.assertTrue(tuning['complete'])
        self.assertEqual(tuning['evaluated_on'], 'held-out training pairs')
        self.assertEqual([r['name'] for r in tuning['rows']],
                         [r['name'] for r in STUDIES['tuning'].rows])

    def test_the_headline_is_the_declared_confirmation(self):
        confirm = summary.load_json(os.path.join(RESULTS, 'confirm.json'))
        declared = studies.HEADLINE
        self.assertEqual((confirm['study'], confirm['settings']['seed'],
                          confirm['settings']['rounds']),
                         (declared['study'], declared['seed'], declared['rounds']))
        self.assertTrue(confirm['complete'])
        self.assertEqual([r['name'] for r in confirm['rows']], ['best'])
        self.assertEqual(confirm['rows'][0]['config'], studies.row_config(
            next(r for r in STUDIES['variants'].rows if r['name'] == 'best')))
        errors = [r['test_error'] for r in confirm['rows'][0]['runs'] if r['status'] == 'ok']
        self.assertGreaterEqual(len(errors), 40)
        mean, sd = mean_sd(errors)
        headline = re.search(r'\*\*The best model: ([0-9.]+) % mean test error over (\d+) rounds '
                             r'\(± ([0-9.]+) std, standard error of the mean ([0-9.]+)\)\*\*',
                             self.readme)
        self.assertIsNotNone(headline, 'README.md has no headline sentence')
        self.assertEqual(headline.groups(), (f'{mean:.2f}', str(len(errors)), f'{sd:.2f}',
                                             f'{sd / math.sqrt(len(errors)):.2f}'))


if __name__ == '__main__':
    unittest.main()
