"""`python test.py --reproduce [STUDY]`: reruns a committed study with the settings its results
file records (seed, rounds, rows) and says, row by row, whether the rerun agrees with it.

With the same code, CPU, bf16 kind, torch version, thread count and fast paths, every round must
come out identical. Elsewhere floating-point sums round differently and each training takes
another path, so rounds differ; a row is then consistent when the mean of its paired
differences (rerun - committed, same pairs and initial weights) is within noise.
"""
import dataclasses

import runner
import studies
import summary

# A row is consistent when its interval at this joint level, split over the rows compared
# (Bonferroni), contains zero: a correct installation fails this check about once in a hundred.
JOINT_LEVEL = 0.99
# Figures that may differ between identical runs: wall-clock times.
TIMES = ('seconds', 'eval_seconds')


def machine_for(data, machine):
    """This machine, with the thread count and fast paths the committed run used (a fast path
    this machine lacks stays off)."""
    recorded = data['settings']
    return dataclasses.replace(machine, threads=recorded['threads'],
                               channels_last=machine.channels_last and recorded['channels_last'],
                               allow_bf16=machine.allow_bf16 and recorded['allow_bf16'])


def same_kind(data, rerun):
    """Why the rerun ran elsewhere than the committed run (empty when it did not)."""
    a, b = data, rerun
    checks = [('code', a['code']['fingerprint'], b['code']['fingerprint']),
              ('cpu', a['environment']['cpu'], b['environment']['cpu']),
              ('bf16 kind', a['environment'].get('bf16_kind'), b['environment']['bf16_kind']),
              ('torch', a['environment']['torch'], b['environment']['torch'])]
    checks += [(key, a['settings'][key], b['settings'][key])
               for key in ('device', 'threads', 'channels_last', 'allow_bf16')]
    return [f'{what} {x} here {y}' for what, x, y in checks if x != y]


def identical(run, other):
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMES}
    return strip(run) == strip(other)


def compare(data, rerun):
    """Per row: committed and rerun means, the paired difference, identical rounds, verdict."""
    elsewhere = same_kind(data, rerun)
    committed = {r['name']: r for r in data['rows']}
    rows = []
    level = 1 - (1 - JOINT_LEVEL) / len(rerun['rows'])
    for r in rerun['rows']:
        old = {run['round']: run for run in committed[r['name']]['runs']}
        new = [run for run in r['runs'] if run['round'] in old]
        same = sum(identical(run, old[run['round']]) for run in new)
        inputs = sum(run.get('pairs_digest') == old[run['round']].get('pairs_digest')
                     and run.get('init_digest') == old[run['round']].get('init_digest')
                     for run in new)
        diffs = summary.paired_diffs(new, list(old.values()))
        joint = summary.interval(diffs, level)
        if not elsewhere:
            verdict = 'identical' if same == len(new) else 'NOT identical'
        elif joint is None:
            verdict = 'consistent (too few rounds to tell)'
        else:
            verdict = 'consistent' if joint[0] <= 0 <= joint[1] else 'NOT consistent'
        rows.append(dict(name=r['name'], rounds=len(new),
                         committed=summary.mean_std([old[run['round']].get('test_error')
                                                     for run in new])[0],
                         rerun=summary.mean_std([run.get('test_error') for run in new])[0],
                         paired=summary.paired_difference(new, list(old.values())),
                         joint_interval=list(joint) if joint else None, identical_rounds=same,
                         same_inputs=inputs, verdict=verdict))
    ok = all(not r['verdict'].startswith('NOT') for r in rows)
    return dict(elsewhere=elsewhere, joint_level=JOINT_LEVEL, rows=rows, reproduced=ok)


def report(data, comparison):
    """The comparison as lines of text, the overall verdict last."""
    code = data['code']
    git = code.get('git') or {}
    lines = [f"committed: code {code['fingerprint']}"
             + (f", commit {git['commit'][:10]}" if git.get('commit') else '')
             + f", {data['environment']['cpu']} (bf16 {data['environment'].get('bf16_kind', '?')}), "
             f"torch {data['environment']['torch']}, {data['settings']['threads']} thread(s) per run"]
    if comparison['elsewhere']:
        lines.append('this rerun differs in: ' + '; '.join(comparison['elsewhere'])
                     + ': rounds may differ, each row must agree within noise')
    else:
        lines.append('same code, CPU, bf16 kind, torch, threads and fast paths: every round '
                     'must be identical')
    header = ['row', 'rounds', 'committed %', 'rerun %', 'rerun - committed (pp, 95% CI)',
              'identical rounds', 'same pairs+weights', 'verdict']
    cells = [[r['name'], str(r['rounds']), summary.num(r['committed']), summary.num(r['rerun']),
              summary.ci_text(r['paired']) if r['paired'] else '-',
              f"{r['identical_rounds']}/{r['rounds']}", f"{r['same_inputs']}/{r['rounds']}",
              r['verdict']] for r in comparison['rows']]
    widths = [max(len(line[k]) for line in [header] + cells) for k in range(len(header))]
    lines += ['', *('  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                    for line in [header] + cells), '']
    if comparison['elsewhere']:
        lines.append(f"consistent: the row's {100 * comparison['joint_level']:g} % joint interval "
                     f"(Bonferroni over {len(cells)} rows) of the paired difference contains 0")
    bad = [r['name'] for r in comparison['rows'] if r['verdict'].startswith('NOT')]
    if bad:
        how = 'disagree beyond noise' if comparison['elsewhere'] else 'are not identical'
        lines.append(f"verdict: NOT reproduced: {', '.join(bad)} {how}")
    elif comparison['elsewhere']:
        lines.append(f'verdict: reproduced: all {len(cells)} rows consistent with the committed '
                     f'results')
    else:
        lines.append('verdict: reproduced: every row identical, round by round')
    return lines


def rerun_plan(data, make_row, registry, rounds):
    """The committed study's rows (as recorded) and flags, for its recorded or fewer rounds."""
    rows = [make_row(r['name'], r['about'], **r['config']) for r in data['rows']]
    known = registry.get(data['study'])
    study = studies.Study(data['study'], data['about'], rows, data['reference'],
                          validation=data['settings']['validation'],
                          curves=data['settings']['curves'],
                          mistakes_of=known.mistakes_of if known else None)
    return study, rows, min(rounds or data['settings']['rounds'], data['settings']['rounds'])


def run(path, make_row, registry, machine, rounds, command):
    """Reruns the study of results file `path`; returns (the rerun with its comparison, lines)."""
    data = summary.load_json(path)
    needed = ('threads', 'channels_last', 'allow_bf16', 'seed', 'rounds', 'validation', 'curves')
    if 'code' not in data or 'rows' not in data or not all(k in data['settings'] for k in needed):
        raise ValueError('it records no code fingerprint, rows or run settings (a benchmark, '
                         'or older code): rerun its study instead')
    study, rows, rounds = rerun_plan(data, make_row, registry, rounds)
    machine = machine_for(data, machine)
    print(f'reproduce {path}: {rounds} of its {data["settings"]["rounds"]} rounds, '
          f'seed {data["settings"]["seed"]}\n', flush=True)
    rerun = runner.run_study(study, rows, rounds, data['settings']['seed'], machine, command)
    rerun['reproduction'] = compare(data, rerun)
    rerun['reproduction']['committed'] = dict(path=path, code=data['code'],
                                              environment=data['environment'])
    return rerun, report(data, rerun['reproduction'])
