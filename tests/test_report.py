"""The committed report and README block are what make_report.py writes from the committed results."""
import copy
import os
import re
import sys
import unittest

from tests.common import ROOT

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402


class Report(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.results = make_report.load_results()
        with open(os.path.join(ROOT, 'report', 'report.md')) as f:
            cls.committed = f.read()
        with open(os.path.join(ROOT, 'README.md')) as f:
            cls.readme = f.read()

    def test_results_are_committed(self):
        for name in ('variants', 'tuning'):
            self.assertIn(name, self.results, f'report/results/{name}.json is missing')
            self.assertTrue(self.results[name]['complete'], name)

    def test_report_is_regenerated_from_the_results(self):
        self.assertEqual(make_report.build_report(self.results), self.committed,
                         'report/report.md is stale: run python report/make_report.py')

    def test_readme_block_is_regenerated_from_the_results(self):
        self.assertIn(make_report.build_readme_block(self.results), self.readme,
                      'the results block of README.md is stale: run python report/make_report.py')

    def test_every_table_row_matches_its_json(self):
        # Independent of the formatting code: find each row's line and check its figures.
        for name, data in self.results.items():
            if name == 'bench':
                continue
            for row in data['rows']:
                s = row['summary']
                if not s['n']:
                    continue
                error = s['test_error']
                cell = f"{error['mean']:.2f} ± {error['std']:.2f}" if error['std'] is not None \
                    else f"{error['mean']:.2f}"
                line = f"| {row['name']} | {row['nb_parameters']:,} | {cell} | {error['min']:.2f} | " \
                       f"{error['max']:.2f} |"
                self.assertTrue(line in self.committed, f'{name}: no table line {line!r}')

    def test_summaries_match_their_runs(self):
        # A hand-edited summary would not match the per-round numbers it claims to summarize.
        for name, data in self.results.items():
            if name == 'bench':
                continue
            for row in data['rows']:
                errors = [r['test_error'] for r in row['runs'] if r['status'] == 'ok']
                if errors:
                    self.assertAlmostEqual(row['summary']['test_error']['mean'],
                                           sum(errors) / len(errors), places=9)
                    self.assertEqual(row['summary']['n'], len(errors))

    def test_best_is_pooled_only_with_the_same_model_on_other_rounds(self):
        best = make_report.rows_by_name(self.results['variants'])['best']
        more = make_report.rows_by_name(self.results['fastpaths_on'])['best']
        errors = [r['test_error'] for r in best['runs'] + more['runs']]
        text = make_report.best_on_more_rounds(self.results)[0]
        self.assertIn(f'Over all {len(errors)} rounds: {sum(errors) / len(errors):.2f} %', text)
        self.assertTrue(text in self.committed, 'report/report.md lacks the pooled best figure')
        self.assertTrue(text in self.readme, 'README.md lacks the pooled best figure')
        for change in (lambda d: d['rows'][-1]['config'].update(width=1),
                       lambda d: d['settings'].update(bf16=False),
                       lambda d: d['settings'].update(seed=self.results['variants']['settings']['seed'])):
            results = dict(self.results, fastpaths_on=copy.deepcopy(self.results['fastpaths_on']))
            self.assertEqual(results['fastpaths_on']['rows'][-1]['name'], 'best')
            change(results['fastpaths_on'])
            self.assertEqual(make_report.best_on_more_rounds(results), [])

    def test_figures_referenced_exist(self):
        for path in re.findall(r'\]\((figures/[^)]+)\)', self.committed):
            self.assertTrue(os.path.exists(os.path.join(ROOT, 'report', path)), path)


if __name__ == '__main__':
    unittest.main()
