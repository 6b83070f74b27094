"""`python test.py --reproduce [STUDY]`: reruns a committed study with the settings its results
file records (seed, rounds, rows) and says, row by row, whether the rerun agrees with it.

With the same code, CPU (model and instruction sets), GPU, bf16 kind, torch version, thread
count and fast paths, every round must come out identical. Elsewhere floating-point sums round
differently and each training takes another path, so rounds differ; a row is then consistent
when the mean of its paired differences (rerun - committed, same pairs and initial weights) is
within noise. A rerun that diverged, stopped early or has too few rounds to judge never agrees.
"""
import dataclasses

from study import runner, studies, summary

# A row is consistent when its interval at this joint level, split over the rows compared
# (Bonferroni), contains zero: a correct installation fails this check about once in a hundred.
JOINT_LEVEL = 0.99
# A row with fewer than two paired rounds elsewhere, or whose differences all came out equal
# (not zero): no interval worth the name, so no verdict either way.
TOO_FEW = 'too few rounds to judge'
# Figures that may differ between identical runs: wall-clock times.
TIMES = ('seconds', 'eval_seconds', 'cpu_seconds')
# What a results file must record to be rerun as it ran.
NEEDED = ('threads', 'channels_last', 'allow_bf16', 'seed', 'rounds', 'validation', 'curves')


@dataclasses.dataclass
class Plan:
    data: dict                  # the committed results
    study: studies.Study
    rows: list
    rounds: int
    machine: runner.Machine


def plan(data, make_row, registry, machine, rounds=None):
    """The committed study's rows (as recorded) and flags, for its recorded or fewer rounds, on
    this machine with the thread count and fast paths it recorded (a fast path this machine
    lacks stays off). Raises ValueError for a file that cannot be rerun."""
    settings = data.get('settings', {})
    if ('code' not in data or 'rows' not in data or 'environment' not in data
            or not all(k in settings for k in NEEDED)):
        raise ValueError('it records no code fingerprint, rows or run settings (a benchmark, '
                         'or older code): rerun its study instead')
    rows = [make_row(r['name'], r['about'], **r['config']) for r in data['rows']]
    known = registry.get(data['study'])
    study = studies.Study(data['study'], data['about'], rows, data['reference'],
                          validation=settings['validation'], curves=settings['curves'],
                          mistakes_of=known.mistakes_of if known else None)
    machine = dataclasses.replace(machine, threads=settings['threads'],
                                  channels_last=machine.channels_last and settings['channels_last'],
                                  allow_bf16=machine.allow_bf16 and settings['allow_bf16'])
    return Plan(data, study, rows, min(rounds or settings['rounds'], settings['rounds']), machine)


def same_kind(data, rerun):
    """Why the rerun ran elsewhere than the committed run (empty when it did not)."""
    a, b = data, rerun
    on_gpu = 'cuda' in (a['settings']['device'], b['settings']['device'])
    checks = [('code', a['code']['fingerprint'], b['code']['fingerprint'])]
    checks += [(key, a['environment'].get(key), b['environment'].get(key))
               for key in ('cpu', 'cpu_flags', 'bf16_kind', 'torch') + ('gpu',) * on_gpu]
    checks += [(key, a['settings'].get(key), b['settings'].get(key))
               for key in ('device', 'threads', 'channels_last', 'allow_bf16', 'fused_adamw')]
    return [f'{what}: committed {x}, here {y}' for what, x, y in checks if x != y]


def identical(run, other):
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMES}
    return strip(run) == strip(other)


def verdict(elsewhere, new, same, diverged, joint):
    """A row's verdict; those that start with NOT fail the reproduction, and so does too few
    rounds to judge (no verdict is no agreement)."""
    if not new:
        return 'NOT reproduced (no finished round)'
    if not elsewhere:
        return 'identical' if same == len(new) else 'NOT identical'
    if diverged:
        return f'NOT consistent ({diverged} round(s) diverged)'
    # Differences that all came out equal but not zero (two rounds of 1000 test pairs, each
    # +0.1, say) have no spread to judge by: an interval of width zero says nothing of noise.
    if joint is None or (joint[1] - joint[0] < 1e-9 and abs(joint[0]) >= 1e-9):
        return TOO_FEW
    return 'consistent' if joint[0] <= 0 <= joint[1] else 'NOT consistent'


def compare(data, rerun):
    """Per row: committed and rerun means, the paired difference, identical rounds, verdict."""
    elsewhere = same_kind(data, rerun)
    committed = summary.rows_by_name(data)
    rows = []
    level = 1 - (1 - JOINT_LEVEL) / len(rerun['rows'])
    for r in rerun['rows']:
        old = {run['round']: run for run in committed[r['name']]['runs']}
        new = [run for run in r['runs'] if run['round'] in old]
        same = sum(identical(run, old[run['round']]) for run in new)
        inputs = sum(run.get('pairs_digest') == old[run['round']].get('pairs_digest')
                     and run.get('init_digest') == old[run['round']].get('init_digest')
                     for run in new)
        diverged = sum(run['status'] != 'ok' and old[run['round']]['status'] == 'ok'
                       for run in new)
        diffs = summary.paired_diffs(new, list(old.values()))
        joint = summary.interval(diffs, level)
        rows.append(dict(name=r['name'], rounds=len(new),
                         committed=summary.mean_std([old[run['round']].get('test_error')
                                                     for run in new])[0],
                         rerun=summary.mean_std([run.get('test_error') for run in new])[0],
                         paired=summary.paired_difference(new, list(old.values())),
                         joint_interval=list(joint) if joint else None, identical_rounds=same,
                         same_inputs=inputs, diverged=diverged,
                         verdict=verdict(elsewhere, new, same, diverged, joint)))
    agree = all(not r['verdict'].startswith('NOT') and r['verdict'] != TOO_FEW for r in rows)
    return dict(elsewhere=elsewhere, joint_level=JOINT_LEVEL, rows=rows,
                reproduced=agree and rerun['complete'])


def report(data, rerun):
    """The comparison as lines of text, the overall verdict last."""
    comparison = rerun['reproduction']
    git = data['code'].get('git') or {}
    env = data['environment']
    lines = [f"committed: code {data['code']['fingerprint']}"
             + (f", commit {git['commit'][:10]}" if git.get('commit') else '')
             + f", {env['cpu']} (bf16 {env.get('bf16_kind', '?')}), torch {env['torch']}, "
             f"{data['settings']['threads']} thread(s) per run"]
    if comparison['elsewhere']:
        lines.append('this rerun differs in: ' + '; '.join(comparison['elsewhere'])
                     + ': rounds may differ, each row must agree within noise')
    else:
        lines.append('same code, machine kind, torch, threads and fast paths: every round '
                     'must be identical')
    header = ['row', 'rounds', 'committed %', 'rerun %', 'rerun - committed (pp, 95% CI)',
              'identical rounds', 'same pairs+weights', 'verdict']
    cells = [[r['name'], str(r['rounds']), summary.num(r['committed']), summary.num(r['rerun']),
              summary.ci_text(r['paired']), f"{r['identical_rounds']}/{r['rounds']}",
              f"{r['same_inputs']}/{r['rounds']}", r['verdict']] for r in comparison['rows']]
    lines += ['', summary.columns(header, cells, right=()), '']
    if comparison['elsewhere']:
        lines.append(f"consistent: the row's {100 * comparison['joint_level']:g} % joint interval "
                     f"(Bonferroni over {len(cells)} rows) of the paired difference contains 0")
    bad = [r['name'] for r in comparison['rows'] if r['verdict'].startswith('NOT')]
    few = [r['name'] for r in comparison['rows'] if r['verdict'] == TOO_FEW]
    if not rerun['complete']:
        lines.append('verdict: NOT reproduced: the rerun was interrupted')
    elif few and not bad:
        lines.append(f"verdict: too few rounds to judge ({', '.join(few)}): on another machine "
                     f"or torch a row needs two rounds or more, whose differences are not all "
                     f"equal (--rounds 10, say)")
    elif bad:
        how = 'disagree or could not be judged' if comparison['elsewhere'] else 'are not identical'
        lines.append(f"verdict: NOT reproduced: {', '.join(bad)} {how}")
    elif comparison['elsewhere']:
        lines.append(f'verdict: reproduced: all {len(cells)} rows consistent with the committed '
                     f'results')
    else:
        lines.append('verdict: reproduced: every row identical, round by round')
    return lines


def run(path, plan, command):
    """Reruns the plan of results file `path`; returns (the rerun with its comparison, lines)."""
    data = plan.data
    print(f'reproduce {path}: {plan.rounds} of its {data["settings"]["rounds"]} rounds, '
          f'seed {data["settings"]["seed"]}\n', flush=True)
    rerun = runner.run_study(plan.study, plan.rows, plan.rounds, data['settings']['seed'],
                             plan.machine, command)
    rerun['reproduction'] = dict(compare(data, rerun), committed=dict(
        path=path, code=data['code'], environment=data['environment']))
    return rerun, report(data, rerun)
