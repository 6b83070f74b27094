"""The studies as declared, the tuning rule and its choices, the head step's verdict, and the
committed results: each the declared study, run once from one commit on one machine."""
import json
import os
import random
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

import test as entry
import train
from conftest import ROOT
from study import runner, studies, tuning

STUDIES = studies.registry()
RESULTS = os.path.join(ROOT, 'report', 'results')


def load(name):
    return runner.load_json(os.path.join(RESULTS, name + '.json'))


def test_the_aux_variants_add_the_digit_loss_and_nothing_else():
    rows = {r['name']: r for r in entry.ROWS}
    for a, b in (('aux', 'plain'), ('ws+aux', 'ws')):
        changed = {k for k in rows[a] if rows[a][k] != rows[b][k]} - {'name', 'about'}
        assert changed == {'aux_weight'} and rows[a]['aux_weight'] > 0 == rows[b]['aux_weight']


def test_no_row_asks_for_what_training_refuses():
    for study in STUDIES.values():  # re-pairing reads the digit labels: it needs the digit loss
        assert not any(r['re_pair'] and r['aux_weight'] <= 0 for r in study.rows), study.name


def test_every_contrast_names_rows_of_its_study():
    for study in STUDIES.values():
        names = {r['name'] for r in study.rows}
        for name, weights, relative in study.contrasts:
            assert set(weights) <= names and abs(sum(weights.values())) < 1e-12, (study.name, name)


def test_only_the_tuning_studies_score_on_held_out_training_pairs_and_all_skips_them():
    held_out = {s.name for s in STUDIES.values() if s.validation}
    assert held_out == {'tuning', 'tuning_head'}
    assert not any(STUDIES[n].in_all for n in held_out)


def test_the_tuning_candidates_keep_the_head_they_ran_with_when_test_pys_changes():
    with mock.patch.dict(entry.HYP, head='argmax', width=3):
        moved = studies.registry()['tuning'].rows
    assert [r['head'] for r in moved] == [r['head'] for r in STUDIES['tuning'].rows]


def fake(errors, name, cost):
    return dict(name=name, config={}, cost=cost,
                runs=[dict(round=k, status='ok', test_error=e) for k, e in enumerate(errors)],
                summary=dict(n=len(errors), test_error=dict(mean=sum(errors) / len(errors))))


NOISE = [0.1, -0.2, 0.15, -0.05, 0.0, 0.1, -0.1, 0.05]


def choose(*rows, budget=None):
    return tuning.choose(dict(rows=list(rows)), budget, cost=lambda r: r['cost'])


def test_the_rule_takes_the_cheapest_unbeaten_candidate():
    a = fake([2 + n for n in NOISE], 'a', 4.0)           # the lowest mean
    b = fake([2.05 + n for n in NOISE[::-1]], 'b', 2.0)  # within noise of a, cheaper
    c = fake([3 + n for n in NOISE], 'c', 1.0)           # cheapest, clearly worse
    assert choose(a, b, c) == 'b' and choose(a, c) == 'a' and choose(a, c, budget=2.0) == 'c'


def test_among_equal_costs_the_rule_takes_the_lower_mean():
    noise = [0.3, -0.2, 0.15, -0.35, 0.0, 0.1, -0.1, 0.25]
    a = fake([2 + n for n in noise], 'a', 2.0)
    b = fake([2.05 + n for n in noise[::-1]], 'b', 2.1)  # within 10 %: the same cost
    assert choose(a, b) == choose(b, a) == 'a'


def own_choice(data, cost, budget=None):
    """The README's rule written again, with the 95 % t quantile of 39 degrees of freedom."""
    errors = {r['name']: [run['test_error'] for run in r['runs']] for r in data['rows']}
    names = [n for n in errors if budget is None or cost[n] <= budget]

    def better(a, b):
        d = [x - y for x, y in zip(errors[a], errors[b])]
        mean = sum(d) / len(d)
        sd = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5
        return mean + 2.022691 * sd / len(d) ** 0.5 < 0
    unbeaten = [b for b in names if not any(better(a, b) for a in names if a != b)]
    cheapest = min(cost[n] for n in unbeaten)
    equal = [n for n in unbeaten if cost[n] <= 1.10 * cheapest]
    return min(equal, key=lambda n: sum(errors[n]) / len(errors[n]))


def test_best_and_fast_are_the_rules_choice_recomputed_and_seconds_do_not_move_it():
    data = load('tuning')
    assert (data['settings']['seed'], data['settings']['rounds']) == (
        studies.TUNING_SEED, STUDIES['tuning'].rounds)
    chosen = tuning.choices(data)
    rows = tuning.by_name(data)
    for kind, settings in (('best', entry.BEST), ('fast', entry.FAST)):
        assert rows[chosen[kind]]['config'] == studies.row_config(entry.row('', '', **settings))
    cost = {r['name']: tuning.cost(r) for r in data['rows']}
    assert own_choice(data, cost) == chosen['best']
    assert own_choice(data, cost, cost[tuning.BUDGET_ROW]) == chosen['fast']
    for r in data['rows']:
        for run in r['runs']:
            run['seconds'] *= random.uniform(0.1, 10)
    assert tuning.choices(data) == chosen


def test_the_macs_count_is_the_layers_arithmetic():
    config = dict(entry.HYP, head='posterior', width=2, tta=True)
    count, real = [0], (F.conv2d, F.linear)

    def counted(op):
        def call(input, weight, *args, **kwargs):
            output = op(input, weight, *args, **kwargs)
            count[0] += output.numel() * weight[0].numel()
            return output
        return call
    model = entry.network(config, 0, 0).eval()
    with mock.patch.object(F, 'conv2d', counted(real[0])), \
            mock.patch.object(F, 'linear', counted(real[1])), torch.no_grad():
        model(torch.zeros(1, 2, 14, 14))
    assert tuning.macs(config) == count[0] * (3 * 750 * 25 + 250 * 5)


def test_the_head_follows_the_head_steps_verdict():
    data = load('tuning_head')
    assert (data['settings']['seed'], data['settings']['rounds']) == (studies.TUNING_SEED, 40)
    assert entry.HYP['head'] == tuning.head_verdict(data)
    c = lambda low, high: dict(ci=[low, high])
    for family, verdict in (([c(-2, -1), c(-1, 1), c(-1, 1), c(-1, 1)], 'mlp-softmax'),
                            ([c(-2, -1), c(0.1, 1), c(-1, 1), c(-1, 1)], 'mlp'),
                            ([c(-1, 1)] * 4, 'mlp'), ([c(-2, -1)] * 3, 'mlp')):
        assert tuning.head_verdict(dict(contrasts=family)) == verdict


ON_TEST_PAIRS = [s for s in STUDIES.values() if s.in_all]


@pytest.mark.parametrize('study', ON_TEST_PAIRS, ids=lambda s: s.name)
def test_each_results_file_is_the_declared_study_and_its_runs(study):
    data = load(study.name)
    assert data['complete'] and data['evaluated_on'] == 'test pairs'
    assert (data['settings']['seed'], data['settings']['rounds']) == (study.seed, study.rounds)
    assert [(r['name'], r['config']) for r in data['rows']] == \
        [(r['name'], studies.row_config(r)) for r in study.rows]
    runs = {r['name']: r['runs'] for r in data['rows']}
    for r in data['rows']:
        assert sorted(run['round'] for run in r['runs']) == list(range(study.rounds))
        assert r['summary'] == runner.summarize(r['runs'])
    assert data['contrasts'] == json.loads(json.dumps(train.family(runs, study.contrasts)))


def test_every_study_ran_from_one_commit_on_one_machine_and_torch():
    files = [load(s.name) for s in ON_TEST_PAIRS] + [load('bench')]
    for key in ('cpu', 'torch', 'cpu_count'):
        assert len({f['environment'][key] for f in files}) == 1, key
    assert len({f['code']['commit'] for f in files}) == 1
    assert not any(f['code']['changed'] for f in files)


def test_the_readmes_generated_blocks_are_those_of_the_results():
    import sys
    sys.path.insert(0, os.path.join(ROOT, 'report'))
    import make_report
    results = make_report.load_results()
    derived = make_report.derived(results)
    for path, block in ((make_report.README, make_report.readme_block(results)),
                        (make_report.STUDY_README, make_report.tuning_block(results, derived))):
        assert block in open(path).read(), path
