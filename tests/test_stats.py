"""The statistics of many rounds (train.py), the one implementation that test.py, the studies
and the report use: mean and sample std, Student t intervals, contrasts paired on the same
rounds with Bonferroni-adjusted levels, on the pp and the relative scale."""
import math

import pytest

import test as entry
import train


def runs_of(errors):
    """{row: results} from {row: [test error of round 0, 1, ...]} (None: that round diverged)."""
    return {name: [dict(round=k, status='ok' if e is not None else 'diverged', test_error=e)
                   for k, e in enumerate(values)] for name, values in errors.items()}


def test_mean_and_sample_std():
    assert train.mean_std([1.0, 2.0, 3.0, 6.0]) == (3.0, pytest.approx(math.sqrt(14 / 3)))
    assert train.mean_std([4.0]) == (4.0, None)


@pytest.mark.parametrize('level,df,table', [(0.95, 9, 2.262), (0.95, 39, 2.023),
                                            (0.99, 9, 3.250), (0.998, 9, 4.297),
                                            (0.95, 1, 12.706)])
def test_t_quantiles_match_the_table(level, df, table):
    assert train.t_quantile(level, df) == pytest.approx(table, abs=2e-3)


def test_a_contrast_is_paired_on_the_rounds_all_its_rows_finished():
    runs = runs_of({'a': [5.0, 6.0, None, 9.0], 'b': [4.0, 4.0, 4.0, None]})
    assert train.contrast(runs, entry.diff('a', 'b')) == [1.0, 2.0]


def test_the_interval_by_hand():
    values = [1.0, 2.0, 3.0, 6.0]
    mean, low, high = train.interval(values, 0.95)
    half = train.t_quantile(0.95, 3) * math.sqrt(14 / 3) / 2
    assert (mean, low, high) == (3.0, pytest.approx(3 - half), pytest.approx(3 + half))
    assert train.interval([1.0]) is None


def test_main_effects_and_interaction_from_the_four_variants():
    errors = {'plain': [12.0, 10.0], 'ws': [9.0, 8.0], 'aux': [5.0, 4.0], 'ws+aux': [4.0, 4.0]}
    runs = runs_of(errors)
    # Sharing: the mean of its effect without and with the aux loss, round by round.
    assert train.contrast(runs, entry.SHARING) == [(-3 - 1) / 2, (-2 + 0) / 2]
    assert train.contrast(runs, entry.AUX_LOSS) == [(-7 - 5) / 2, (-6 - 4) / 2]
    assert train.contrast(runs, entry.INTERACTION) == [(4 - 5) - (9 - 12), (4 - 4) - (8 - 10)]
    log = train.contrast(runs, entry.diff('ws', 'plain'), relative=True)
    assert log == pytest.approx([math.log(9 / 12), math.log(8 / 10)])


def test_a_family_is_bonferroni_adjusted_and_relative_ones_read_as_a_change_in_percent():
    runs = runs_of({'a': [10.0, 11.0, 9.0, 10.5], 'b': [8.0, 8.5, 7.0, 8.0]})
    family = [('a - b', entry.diff('a', 'b'), False), ('a / b', entry.diff('a', 'b'), True)]
    pp, ratio = train.family(runs, family)
    assert pp['level'] == ratio['level'] == 1 - 0.05 / 2
    values = [2.0, 2.5, 2.0, 2.5]
    assert (pp['mean'], pp['ci'][0]) == (pytest.approx(2.25), pytest.approx(
        2.25 - train.t_quantile(0.975, 3) * train.mean_std(values)[1] / 2))
    logs = [math.log(a / b) for a, b in ((10, 8), (11, 8.5), (9, 7), (10.5, 8))]
    assert ratio['mean'] == pytest.approx(100 * (math.exp(sum(logs) / 4) - 1))
    assert ratio['ci'][0] < ratio['mean'] < ratio['ci'][1]
    assert train.contrast_text(ratio).endswith('%') and train.contrast_text(pp).endswith('pp')


def test_too_few_rounds_and_zero_errors_are_said():
    one = train.family(runs_of({'a': [1.0], 'b': [2.0]}), [('d', entry.diff('a', 'b'), False)])
    assert train.contrast_text(one[0]) == 'needs two rounds'
    zero = train.family(runs_of({'a': [0.0, 1.0], 'b': [2.0, 2.0]}),
                        [('r', entry.diff('a', 'b'), True)])
    assert train.contrast_text(zero[0]) == 'no log of a zero error'


def test_a_difference_that_rounds_to_zero_has_no_minus_sign():
    assert train.signed(-0.001) == '+0.00' and train.signed(-0.4, 0) == '+0'
    assert train.signed(-0.01) == '-0.01'


def test_the_table_gives_each_row_and_the_family():
    runs = runs_of({'plain': [12.0, 10.0], 'ws': [9.0, 8.0], 'aux': [5.0, 4.0],
                    'ws+aux': [4.0, 4.0]})
    for results in runs.values():
        for r in results:
            r.update(nb_parameters=10, test_digit_error=None, train_error=0.0, seconds=1.0)
    rows = [entry.row(name, '') for name in runs]
    lines = train.table(rows, runs, entry.CONTRASTS[:7])
    assert any(line.startswith('plain ') and '11.00 ± 1.41' in line for line in lines)
    assert any(line.strip().startswith('interaction') and '+2.00' in line for line in lines)
