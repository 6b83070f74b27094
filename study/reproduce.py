"""python -m study NAME --reproduce: reruns a committed study as its results file records it
(seed, rounds, every row's settings) and says, row by row, whether the rerun agrees.

On the same CPU and torch every round must come out identical. Elsewhere float sums round
differently and each training takes another path, so a row is consistent when its paired
differences (rerun - committed, same pairs and initial weights) have a mean within noise; such a
verdict needs 10 rounds or more, else it is 'too few rounds to judge', which is no agreement.
"""
import test
import train
from study import runner

JOINT_LEVEL = 0.99  # Bonferroni over the rows: a correct installation fails about once in 100
MIN_ROUNDS = 10     # fewer paired rounds judge nothing elsewhere (t quantiles too wide)
TIMES = ('seconds',)


def compare(data, rerun):
    """Per row: rounds, identical rounds, mean paired difference and interval, verdict."""
    here, there = rerun['environment'], data['environment']
    elsewhere = [k for k in ('cpu', 'torch', 'gpu') if here.get(k) != there.get(k)]
    level = 1 - (1 - JOINT_LEVEL) / len(rerun['rows'])
    committed = {r['name']: {run['round']: run for run in r['runs']} for r in data['rows']}
    out = []
    for r in rerun['rows']:
        old = committed[r['name']]
        new = [run for run in r['runs'] if run['round'] in old]
        # Identical: every figure the rerun records, times aside (older files may record more).
        same = sum(all(old[run['round']].get(k) == v for k, v in run.items() if k not in TIMES)
                   for run in new)
        diffs = [run['test_error'] - old[run['round']]['test_error'] for run in new
                 if run['status'] == 'ok' and old[run['round']]['status'] == 'ok']
        ci = train.interval(diffs, level)
        if not elsewhere:
            verdict = 'identical' if new and same == len(new) else 'NOT identical'
        elif len(diffs) < len(new):
            verdict = 'NOT consistent (a round diverged)'
        elif len(diffs) < MIN_ROUNDS:
            verdict = 'too few rounds to judge'
        else:
            verdict = 'consistent' if ci[1] <= 0 <= ci[2] else 'NOT consistent'
        out.append(dict(name=r['name'], rounds=len(new), identical=same, verdict=verdict,
                        mean=ci and ci[0], ci=ci and list(ci[1:])))
    return elsewhere, out


def run(data, study, rounds, device, workers, data_dir, path=None):
    """Reruns the committed study; prints the comparison (and writes it to path); 0 when every
    row agrees, else 1."""
    settings = data['settings']
    rows = [test.row(r['name'], r['about'], **r['config']) for r in data['rows']]
    study.rows, study.validation, study.curves = rows, settings['validation'], settings['curves']
    rounds = min(rounds or settings['rounds'], settings['rounds'])
    rerun = runner.run_study(study, rows, rounds, settings['seed'], device, workers, data_dir)
    elsewhere, rows = compare(data, rerun)
    print('\ncommitted: commit {}, {}, torch {}; here: {}, torch {}'.format(
        (data.get('code') or {}).get('commit', '?')[:10], data['environment']['cpu'],
        data['environment']['torch'], rerun['environment']['cpu'], rerun['environment']['torch']))
    print('elsewhere ({}): each row must agree within noise ({:g} % joint level, {} rounds or '
          'more)'.format(', '.join(elsewhere), 100 * JOINT_LEVEL, MIN_ROUNDS) if elsewhere else
          'same CPU and torch: every round must be identical')
    for r in rows:
        figure = '' if r['mean'] is None else '{} [{}, {}] pp'.format(
            train.signed(r['mean']), train.signed(r['ci'][0]), train.signed(r['ci'][1]))
        print('  {:<24} {:>3} rounds, {:>3} identical  {:<26} {}'.format(
            r['name'], r['rounds'], r['identical'], figure, r['verdict']))
    agree = rerun['complete'] and all(r['verdict'] in ('identical', 'consistent') for r in rows)
    print('verdict: ' + ('reproduced' if agree else 'NOT reproduced'))
    if path:
        runner.write_json(path, dict(study=study.name, reproduced=agree, elsewhere=elsewhere,
                                     committed=dict(code=data['code'], **data['environment']),
                                     environment=rerun['environment'], code=rerun['code'],
                                     rounds=rounds, rows=rows))
    return 0 if agree else 1
