"""The committed report and README block are what make_report.py writes from the committed results."""
import copy
import os
import re
import shutil
import sys
import tempfile
import unittest

from tests.common import ROOT

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402
import paper  # noqa: E402
from study import provenance  # noqa: E402


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
            if 'rows' not in data or 'reproduction' in data:
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
            if 'rows' not in data:
                continue
            for row in data['rows']:
                errors = [r['test_error'] for r in row['runs'] if r['status'] == 'ok']
                if errors:
                    self.assertAlmostEqual(row['summary']['test_error']['mean'],
                                           sum(errors) / len(errors), places=9)
                    self.assertEqual(row['summary']['n'], len(errors))

    def test_results_come_from_this_code(self):
        stale = make_report.stale_files(self.results)
        self.assertEqual(stale, {}, 'results files that the current code and settings would not '
                                    'produce: rerun those studies, then python report/make_report.py')

    def test_best_is_pooled_only_with_the_same_model_on_other_pairs(self):
        pool = make_report.pooled_best(self.results)
        names = [name for name, _, _ in pool['parts']]
        self.assertGreaterEqual(pool['summary']['n'], 40)
        errors = [run['test_error'] for _, _, row in pool['parts'] for run in row['runs']]
        self.assertEqual(pool['summary']['n'], len(errors))
        self.assertAlmostEqual(pool['summary']['test_error']['mean'], sum(errors) / len(errors))
        text = make_report.pooled_text(self.results)[0]
        self.assertIn(f"over {len(errors)} rounds: {sum(errors) / len(errors):.2f} %", text)
        self.assertIn(text, self.committed, 'report/report.md lacks the pooled best figure')
        self.assertIn(text, self.readme, 'README.md lacks the pooled best figure')
        other = names[1]
        best_of = lambda d: make_report.rows_by_name(d)['best']
        for change in (lambda d: best_of(d)['config'].update(width=1),
                       lambda d: d['settings'].update(allow_bf16=not d['settings']['allow_bf16']),
                       lambda d: d['settings'].update(channels_last=not d['settings']['channels_last']),
                       lambda d: d['settings'].update(seed=self.results['variants']['settings']['seed'])):
            results = dict(self.results, **{other: copy.deepcopy(self.results[other])})
            change(results[other])
            self.assertNotIn(other, [name for name, _, _ in make_report.pooled_best(results)['parts']])

    def test_figures_referenced_exist(self):
        for path in re.findall(r'\]\((figures/[^)]+)\)', self.committed):
            self.assertTrue(os.path.exists(os.path.join(ROOT, 'report', path)), path)


class Paper(unittest.TestCase):
    """report/paper.pdf: written from the results, three pages of main text, then the appendix."""

    @classmethod
    def setUpClass(cls):
        cls.results = make_report.load_results()
        with open(paper.TYP) as f:
            cls.committed = f.read()

    def test_source_regenerates_from_the_results(self):
        source = paper.build_paper(self.results, make_report.pooled_best(self.results),
                                   make_report.bf16_pairs(self.results), make_report.TUNING_STEPS)
        self.assertEqual(source, self.committed, 'report/paper.typ is stale: run '
                                                 'python report/make_report.py')

    def test_pdf_regenerates_byte_for_byte(self):
        folder = tempfile.mkdtemp()
        try:
            pdf = os.path.join(folder, 'paper.pdf')
            pages = paper.compile_pdf(paper.TYP, pdf)
            self.assertIsNotNone(pages, 'the typst package is missing: pip install -r '
                                        'report/requirements.txt')
            with open(pdf, 'rb') as a, open(paper.PDF, 'rb') as b:
                self.assertTrue(a.read() == b.read(), 'report/paper.pdf is stale: run '
                                                      'python report/make_report.py')
        finally:
            shutil.rmtree(folder)
        self.assertLessEqual(pages, 3, 'the main text runs past page 3')

    def test_the_appendix_follows_the_main_text(self):
        body = self.committed[self.committed.index('= Introduction'):]
        appendix = body.index('#heading(numbering: none)[Appendix]')
        self.assertLess(body.index('<main-end>'), appendix)
        self.assertEqual(re.findall(r'^#heading\(numbering: none\)\[(\w+)\]', body, re.M), ['Appendix'])
        for title in ('Tuning', 'Non-Siamese baselines', 'Digit branches', 'Comparison heads',
                      'Weight of the auxiliary loss', 'Batch norm and dropout',
                      'Number of training pairs', 'Without digit labels', 'Speed'):
            self.assertIn(f'\n= {title}', body[appendix:])

    def test_the_variant_means_are_those_of_the_results_file(self):
        variants = self.results['variants']
        for row in variants['rows']:
            s = row['summary']['test_error']
            cells = f'[#"{row["name"]}"], [#"{row["nb_parameters"]:,}"], [#"{s["mean"]:.2f} ± {s["std"]:.2f}"]'
            self.assertIn(cells, self.committed, row['name'])
        for name in ('plain', 'ws', 'aux', 'ws+aux'):
            mean = make_report.rows_by_name(variants)[name]['summary']['test_error']['mean']
            self.assertIn(f'#"{mean:.2f}" %', self.committed)

    def test_every_figure_and_table_is_numbered_and_captioned(self):
        figures = re.findall(r'#figure\((image|table)\(', self.committed)
        self.assertGreaterEqual(figures.count('image'), 3)
        self.assertGreaterEqual(figures.count('table'), 1)
        self.assertEqual(self.committed.count('#figure('), self.committed.count('caption: ['))


if __name__ == '__main__':
    unittest.main()
