"""The studies measure what the README says they measure, and the best and fast models are what
the stated rule picks from the committed tuning results."""
import copy
import os
import random
import types
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from tests.common import PROJECT, STUDIES, cli, entry, summary
from study import studies, tuning


def rows(study):
    return {r['name']: r for r in STUDIES[study].rows}


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
        self.assertIn(('ws+aux+re-pair', 'ws+aux'), STUDIES['variants'].contrasts)
        self.assertTrue(any(r['re_pair'] for r in STUDIES['data_size'].rows))

    def test_no_study_re_pairs_behind_the_aux_loss(self):
        # Re-pairing appears only in rows named for it (and in tuning candidates that say so),
        # and in the best model's, which the rule picked with it (test.py's BEST says so).
        self.assertTrue(entry.BEST['re_pair'])
        for name, study in STUDIES.items():
            for r in study.rows:
                if r['re_pair'] and not all(r[k] == v for k, v in entry.BEST.items()):
                    self.assertIn('re-pair', r['name'], f'{name}: {r["name"]}')


class Tuning(unittest.TestCase):
    def test_the_tuning_study_draws_no_test_pair(self):
        self.assertTrue(STUDIES['tuning'].validation)

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
        project = studies.further(entry.row, types.SimpleNamespace(
            AUX=entry.AUX, BEST=changed, FAST=dict(changed, nb_epochs=2), VARIANTS=entry.VARIANTS))
        after = {r['name']: r for r in next(s for s in project if s.name == 'tuning').rows}
        self.assertEqual(before, after)


def results(run, name, cost, **others):
    """A tuning row of a fake results file: per-round errors and a cost."""
    return dict(name=name, config={}, runs=[dict(round=k, status='ok', test_error=e)
                                            for k, e in enumerate(run)],
                summary=dict(n=len(run), test_error=dict(zip(('mean', 'std'), summary.mean_std(run)))),
                cost=cost, **others)


def given_cost(row):
    return row['cost']


class EveryRowRuns(unittest.TestCase):
    def test_no_row_asks_for_what_training_refuses(self):
        # Re-pairing reads the digit labels: train_model refuses it without the digit loss.
        for study in STUDIES.values():
            for r in study.rows:
                with self.subTest(study=study.name, row=r['name']):
                    self.assertFalse(r['re_pair'] and r['aux_weight'] <= 0)


class Rule(unittest.TestCase):
    """The rule on small results files whose answer is known."""

    def choose(self, *rows_):
        return tuning.choose(dict(rows=list(rows_)), cost=given_cost)

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

    def test_one_round_is_too_few_for_the_rule(self):
        one = results([2.0], 'a', 1.0)
        self.assertEqual(tuning.report(dict(rows=[one]), {}),
                         ['the rule compares candidates on paired rounds: it needs two rounds or '
                          'more of every candidate (--rounds)'])

    def test_the_budget(self):
        noise = [0.1, -0.2, 0.15, -0.05, 0.0, 0.1, -0.1, 0.05]
        a = results([2 + n for n in noise], 'a', 4.0)
        c = results([3 + n for n in noise], 'c', 1.0)
        self.assertEqual(tuning.choose(dict(rows=[a, c]), budget=2.0, cost=given_cost), 'c')


def own_macs(config):
    """Multiply-accumulates of one run, counted here without the rule's code: every call of
    conv2d and linear on one pair, by the arithmetic of each call's output and weight."""
    count = [0]
    conv2d, linear = F.conv2d, F.linear

    def counted(op):
        def call(input, weight, *args, **kwargs):
            output = op(input, weight, *args, **kwargs)
            # one pair in: each output element of a conv takes in/groups x k x k products, of a
            # linear `in` (the two digit images may go through a layer as a batch of two)
            count[0] += output.numel() * weight[0].numel()
            return output
        return call
    model = entry.network(dict(entry.HYP, **config), 0, 0).eval()
    with mock.patch.object(F, 'conv2d', counted(conv2d)), \
            mock.patch.object(F, 'linear', counted(linear)), torch.no_grad():
        model(torch.zeros(1, 2, 14, 14))
    nb = config.get('nb_pairs', entry.HYP['nb_pairs'])
    epochs = config.get('nb_epochs', entry.HYP['nb_epochs'])
    views = 5 if config.get('tta', entry.HYP['tta']) else 1
    return count[0] * (3 * (nb - nb // 4) * epochs + nb // 4 * views)


def own_choice(rows, cost, budget=None):
    """The README's rule, written again: not beaten (no other row's paired 95 % interval lies
    below zero), then the cheapest, costs within 10 % equal, then the lowest mean error."""
    errors = {r['name']: {run['round']: run['test_error'] for run in r['runs']
                          if run['status'] == 'ok'} for r in rows}
    names = [n for n in errors if budget is None or cost[n] <= budget]

    def better(a, b):  # a validates significantly better than b
        diffs = [errors[a][k] - errors[b][k] for k in errors[b]]
        assert len(diffs) == 40, (a, b)
        mean = sum(diffs) / 40
        sd = (sum((d - mean) ** 2 for d in diffs) / 39) ** 0.5
        return mean + 2.022691 * sd / 40 ** 0.5 < 0  # t quantile, 39 degrees of freedom
    unbeaten = [b for b in names if not any(better(a, b) for a in names if a != b)]
    cheapest = min(cost[n] for n in unbeaten)
    equal = [n for n in unbeaten if cost[n] <= 1.10 * cheapest]
    return min(equal, key=lambda n: sum(errors[n].values()) / len(errors[n]))


class Chosen(unittest.TestCase):
    """BEST and FAST in test.py are what the rule picks on the committed tuning results; the
    rule recomputed by code of its own; measured seconds cannot move the choice."""

    @classmethod
    def setUpClass(cls):
        cls.data = summary.load_json(os.path.join(cli.RESULTS, 'tuning.json'))

    def test_best_and_fast_are_the_rules_choice(self):
        chosen = tuning.choices(self.data)
        settings = cli.chosen_settings(PROJECT)
        by_name = summary.rows_by_name(self.data)
        self.assertEqual(by_name[chosen['best']]['config'], settings['best'], chosen['best'])
        self.assertEqual(by_name[chosen['fast']]['config'], settings['fast'], chosen['fast'])

    def test_the_rule_recomputed_by_code_of_its_own(self):
        rows = self.data['rows']
        cost = {r['name']: own_macs(r['config']) for r in rows}
        for r in rows:  # the rule's count is this count, in millions
            self.assertAlmostEqual(tuning.cost(r), cost[r['name']] / 1e6, places=3, msg=r['name'])
        chosen = tuning.choices(self.data)
        self.assertEqual(own_choice(rows, cost), chosen['best'])
        self.assertEqual(own_choice(rows, cost, cost[tuning.BUDGET_ROW]), chosen['fast'])

    def test_measured_seconds_do_not_move_the_choice(self):
        chosen = {k: v for k, v in tuning.choices(self.data).items() if k != 'budget'}
        draw = random.Random(3)
        for _ in range(3):
            scaled = copy.deepcopy(self.data)
            for r in scaled['rows']:
                factor = draw.uniform(0.7, 1.3)
                for run in r['runs']:
                    for key in ('seconds', 'eval_seconds', 'cpu_seconds'):
                        if run.get(key) is not None:
                            run[key] *= factor
                for key in ('seconds', 'eval_seconds', 'cpu_seconds'):
                    if key in r['summary']:
                        r['summary'][key] = {k: v * factor if isinstance(v, float) else v
                                             for k, v in r['summary'][key].items()}
            again = tuning.choices(scaled)
            self.assertEqual({k: again[k] for k in chosen}, chosen)


if __name__ == '__main__':
    unittest.main()
