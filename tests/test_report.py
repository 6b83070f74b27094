"""The committed results come from the current code and settings; the README's results block,
report/derived.json and the paper are what report/make_report.py makes of them."""
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import unittest

from tests.common import ROOT

sys.path.insert(0, os.path.join(ROOT, 'report'))
import make_report  # noqa: E402


class Report(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.results = make_report.load_results()
        with open(make_report.README) as f:
            cls.readme = f.read()
        with open(make_report.STUDY_README) as f:
            cls.study_readme = f.read()
        with open(make_report.TYP) as f:
            cls.paper = f.read()

    def test_results_are_committed(self):
        for name in ('variants', 'tuning', 'confirm'):
            self.assertIn(name, self.results, f'report/results/{name}.json is missing')
            self.assertTrue(self.results[name]['complete'], name)

    def test_results_come_from_this_code(self):
        stale = make_report.stale_files(self.results)
        self.assertEqual(stale, {}, 'results files that the current code and settings would not '
                                    'produce: rerun those studies, then python report/make_report.py')

    def test_readme_blocks_are_regenerated_from_the_results(self):
        self.assertIn(make_report.readme_block(self.results), self.readme,
                      'the generated block of README.md is stale: run python report/make_report.py')
        for block in (make_report.tuning_block(self.results), make_report.compat_block(self.results)):
            self.assertIn(block, self.study_readme, 'a generated block of study/README.md is '
                                                    'stale: run python report/make_report.py')

    def test_the_readme_is_for_a_grader(self):
        # The first screen says what it is and how to install, run and test; at most 120 lines.
        self.assertLessEqual(len(self.readme.splitlines()), 120)
        first = '\n'.join(self.readme.splitlines()[:30])
        for command in ('pip install -r requirements.txt', 'python test.py',
                        'python -m unittest discover -s tests'):
            self.assertIn(command, first)
        self.assertIn('## Results', self.readme)
        self.assertIn('study/README.md', self.readme)

    def test_derived_numbers_are_regenerated_from_the_results(self):
        with open(make_report.DERIVED) as f:
            committed = f.read()
        folder = tempfile.mkdtemp()
        try:
            path = os.path.join(folder, 'derived.json')
            make_report.summary.write_json(path, make_report.derived(self.results))
            with open(path) as f:
                self.assertEqual(f.read(), committed, 'report/derived.json is stale: run '
                                                      'python report/make_report.py')
        finally:
            shutil.rmtree(folder)

    def test_the_main_effects_average_the_two_simple_effects(self):
        with open(os.path.join(ROOT, 'report', 'derived.json')) as f:
            effects = json.load(f)['main_effects']
        runs = {r['name']: {x['round']: x['test_error'] for x in r['runs'] if x['status'] == 'ok'}
                for r in self.results['variants']['rows']}
        rounds = sorted(set.intersection(*(set(runs[n]) for n in ('plain', 'ws', 'aux', 'ws+aux'))))
        m = len(make_report.studies.registry()['variants'].contrasts) + 2
        for factor, (a, b, c, d) in (('sharing', ('ws', 'plain', 'ws+aux', 'aux')),
                                     ('aux', ('aux', 'plain', 'ws+aux', 'ws'))):
            diffs = [(runs[a][k] - runs[b][k] + runs[c][k] - runs[d][k]) / 2 for k in rounds]
            mean = statistics.mean(diffs)
            half = (make_report.summary.t_quantile(1 - 0.05 / m, len(diffs) - 1)
                    * statistics.stdev(diffs) / len(diffs) ** 0.5)
            self.assertEqual(effects[factor]['family'], m)
            self.assertAlmostEqual(effects[factor]['mean'], mean, places=9)
            for got, want in zip(effects[factor]['ci'], (mean - half, mean + half)):
                self.assertAlmostEqual(got, want, places=6)

    def test_every_run_is_float32_as_the_paper_says(self):
        # bfloat16 runs only where a row asks for it and its machine computes it natively.
        for name, data in self.results.items():
            native = data.get('environment', {}).get('native_bf16')
            for r in data.get('rows', []):
                self.assertFalse(r['config'].get('bf16') and native, f'{name}: {r["name"]}')

    def test_the_paper_reads_its_numbers(self):
        # The source reads the results files itself and types none of their figures.
        self.assertIn('json("results/" + name + ".json")', self.paper)
        self.assertIn('json("derived.json")', self.paper)
        typed = re.findall(r'(?<![\w.])\d+\.\d\d(?![\dA-Za-z])', self.paper)
        self.assertEqual(typed, [], 'figures typed into report/paper.typ')

    def test_pdf_regenerates_byte_for_byte(self):
        folder = tempfile.mkdtemp()
        try:
            pdf = os.path.join(folder, 'paper.pdf')
            end = make_report.compile_pdf(make_report.TYP, pdf)
            self.assertIsNotNone(end, 'the typst package is missing: pip install -r '
                                        'report/requirements.txt')
            with open(pdf, 'rb') as a, open(make_report.PDF, 'rb') as b:
                self.assertTrue(a.read() == b.read(), 'report/paper.pdf is stale: run '
                                                      'python report/make_report.py')
        finally:
            shutil.rmtree(folder)
        # The main text fills three pages: it ends on page 3, in its right column (A4 is 595
        # points wide), below the middle of the page (842 points high).
        self.assertEqual(end['page'], 3, 'the main text must end on page 3')
        self.assertGreater(end['x'], 595 / 2, 'the main text must fill page 3: it ends in its left column')
        self.assertGreater(end['y'], 842 / 2, 'the main text must fill page 3: it ends above its middle')

    def prose(self):
        """The paper's lines of running text (not code, comments or table rows)."""
        return [line for line in self.paper.split('\n')
                if line[:1].isalpha() or line.startswith(('*', '@'))]

    def test_every_figure_and_table_is_cited(self):
        labels = re.findall(r'[)\]] <([\w-]+)>', self.paper)
        figures = re.findall(r'#figure\((?:image|diagram)', self.paper)
        self.assertGreaterEqual(len(figures), 5, 'at least five figures')
        for label in labels:
            if label != 'main-end':
                self.assertTrue('@' + label in self.paper, f'<{label}> is never cited')

    def test_each_interval_is_given_once(self):
        quoted = re.findall(r'(?:pp|effect)\(((?:c|contrast|gap)\([^)]*\))\)', self.paper)
        self.assertGreater(len(quoted), 10)
        self.assertEqual(sorted(set(quoted)), sorted(quoted), 'an interval quoted twice')

    def test_no_code_identifiers_and_no_swallowed_semicolons(self):
        for line in self.prose():
            self.assertNotIn('raw(', line)
            self.assertNotIn('`', line)
            # typst ends an embedded expression at a semicolon and drops it: "#pct(x); more"
            self.assertIsNone(re.search(r'#[\w.-]+(\([^;]*\))?;', line.replace('\\;', '')), line[:80])

    def test_figures_referenced_exist(self):
        names = re.findall(r'image\("(figures/[^"]+)"', self.paper)
        self.assertGreaterEqual(len(names), 2)
        for path in names:
            self.assertTrue(os.path.exists(os.path.join(ROOT, 'report', path)), path)


if __name__ == '__main__':
    unittest.main()
