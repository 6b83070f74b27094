"""The studies measure what the README says they measure, and the best and fast models are what
the stated rule picks from the committed tuning results."""
import copy
import os
import unittest

from tests.common import PROJECT, cli, entry, summary
from study import studies, tuning


def rows(study):
    return {r['name']: r for r in entry.STUDIES[study].rows}


class Variants(unittest.TestCase):
    def test_the_aux_variants_add_the_digit_loss_and_nothing_else(self):
        variants = rows('variants')
        for with_aux, without in (('aux', 'plain'), ('ws+aux', 'ws')):
            a, b = studies.row_config(variants[with_aux]), studies.row_config(variants[without])
            self.assertEqual({k for k in a if a[k] != b[k]}, {'aux_weight'}, with_aux)
            self.assertFalse(a['re_pair'])
        for sharing, two in (('ws', 'plain'), ('ws+aux', 'aux')):
            a, b = variants[sharing], variants[two]
            self.assertEqual({k for k in a if a[k] != b[k]} - {'name', 'about'}, {'share_weights'})

    def test_re_pairing_is_a_row_of_its_own_with_its_paired_difference(self):
        variants = rows('variants')
        a, b = variants['ws+aux+re-pair'], variants['ws+aux']
        self.assertEqual({k for k in a if a[k] != b[k]} - {'name', 'about'}, {'re_pair'})
        self.assertIn(('ws+aux+re-pair', 'ws+aux'), entry.STUDIES['variants'].contrasts)
        self.assertTrue(any(r['re_pair'] for r in entry.STUDIES['data_size'].rows))

    def test_no_study_re_pairs_behind_the_aux_loss(self):
        # Re-pairing appears only in rows named for it (and in tuning candidates that say so).
        for name, study in entry.STUDIES.items():
            for r in study.rows:
                if r['re_pair']:
                    self.assertIn('re-pair', r['name'], f'{name}: {r["name"]}')


class Tuning(unittest.TestCase):
    def test_the_tuning_study_draws_no_test_pair(self):
        self.assertTrue(entry.STUDIES['tuning'].validation)

    def test_every_step_names_a_candidate_it_changes(self):
        names = {name for name, _, _, _ in tuning.candidates()}
        self.assertEqual(len(names), len(tuning.candidates()))
        for name, _, _, vs in tuning.candidates():
            if vs:
                self.assertIn(vs, names, name)

    def test_the_candidates_do_not_follow_best_or_fast(self):
        # The candidates are fixed before the rule picks BEST and FAST: they must not move
        # when those change, or the committed tuning results would describe other rows.
        before = rows('tuning')
        changed = copy.deepcopy(entry.BEST)
        changed['width'] = 3
        project = entry.studies.further(entry.row, entry.types.SimpleNamespace(
            AUX=entry.AUX, BEST=changed, FAST=dict(changed, nb_epochs=2), VARIANTS=entry.VARIANTS))
        after = {r['name']: r for r in next(s for s in project if s.name == 'tuning').rows}
        self.assertEqual(before, after)


def results(run, name, seconds, **others):
    """A tuning row of a fake results file: per-round errors and a cost."""
    return dict(name=name, config={}, runs=[dict(round=k, status='ok', test_error=e)
                                            for k, e in enumerate(run)],
                summary=dict(n=len(run), test_error=dict(zip(('mean', 'std'), summary.mean_std(run))),
                             cpu_seconds=dict(mean=seconds)), **others)


class Rule(unittest.TestCase):
    """The rule on small results files whose answer is known."""

    def choose(self, *rows_):
        return tuning.choose(dict(rows=list(rows_)))

    def test_the_cheapest_unbeaten_candidate(self):
        noise = [0.1, -0.2, 0.15, -0.05, 0.0, 0.1, -0.1, 0.05]
        a = results([2 + n for n in noise], 'a', 4.0)          # the lowest mean
        b = results([2.05 + n for n in noise[::-1]], 'b', 2.0)  # within noise of a, cheaper
        c = results([3 + n for n in noise], 'c', 1.0)          # cheapest, clearly worse
        self.assertEqual(self.choose(a, b, c), 'b')
        self.assertEqual(self.choose(a, c), 'a')

    def test_among_equal_costs_the_lower_mean(self):
        noise = [0.3, -0.2, 0.15, -0.35, 0.0, 0.1, -0.1, 0.25]
        a = results([2 + n for n in noise], 'a', 2.0)
        b = results([2.05 + n for n in noise[::-1]], 'b', 2.1)  # within 10 %: the same cost
        self.assertEqual(self.choose(a, b), 'a')
        self.assertEqual(self.choose(b, a), 'a')

    def test_the_budget(self):
        noise = [0.1, -0.2, 0.15, -0.05, 0.0, 0.1, -0.1, 0.05]
        a = results([2 + n for n in noise], 'a', 4.0)
        c = results([3 + n for n in noise], 'c', 1.0)
        self.assertEqual(tuning.choose(dict(rows=[a, c]), budget=2.0), 'c')


class Chosen(unittest.TestCase):
    """BEST and FAST in test.py are what the rule picks on the committed tuning results."""

    @classmethod
    def setUpClass(cls):
        cls.data = summary.load_json(os.path.join(cli.RESULTS, 'tuning.json'))

    def test_best_and_fast_are_the_rules_choice(self):
        chosen = tuning.choices(self.data)
        settings = cli.chosen_settings(PROJECT)
        by_name = summary.rows_by_name(self.data)
        self.assertEqual(by_name[chosen['best']]['config'], settings['best'], chosen['best'])
        self.assertEqual(by_name[chosen['fast']]['config'], settings['fast'], chosen['fast'])

    def test_no_candidate_of_similar_cost_validates_significantly_better_than_best(self):
        # Recomputed here from the runs, without the rule's code: every candidate that costs at
        # most 1.5 times the best model's, paired against it round by round.
        best = summary.rows_by_name(self.data)[tuning.choices(self.data)['best']]
        cost = lambda r: r['summary']['cpu_seconds']['mean']
        errors = lambda r: {run['round']: run['test_error'] for run in r['runs']
                            if run['status'] == 'ok'}
        for r in self.data['rows']:
            if r is best or cost(r) > 1.5 * cost(best):
                continue
            a, b = errors(r), errors(best)
            diffs = [a[k] - b[k] for k in a if k in b]
            self.assertEqual(len(diffs), 40)
            mean = sum(diffs) / len(diffs)
            sd = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
            # 2.022691: the two-sided 95 % quantile of Student's t with 39 degrees of freedom.
            self.assertGreaterEqual(mean + 2.022691 * sd / len(diffs) ** 0.5, 0, r['name'])


if __name__ == '__main__':
    unittest.main()
