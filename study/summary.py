"""Summaries of runs: statistics, the study table, and results files.

Pure Python, no torch: test.py prints its tables with it and report/make_report.py imports it to
write the report, so both give the same figures in the same format.
"""
import json
import math
import os
import tempfile

# The per-run figures that a summary gives the mean and std of.
FIGURES = ('test_error', 'test_digit_error', 'matched_digit_error', 'train_error',
           'train_digit_error', 'seconds', 'eval_seconds', 'cpu_seconds')


######################################################################
# Statistics.

def mean_std(values):
    """Mean and sample standard deviation (n - 1) of the values that are not None."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def incomplete_beta(a, b, x):
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified
    Lentz), on the side of x where the fraction converges fast."""
    if x <= 0 or x >= 1:
        return max(0.0, min(1.0, float(x)))
    if x > (a + 1) / (a + b + 2):
        return 1 - incomplete_beta(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return front * fraction


def t_quantile(level, df):
    """q such that a Student t variable with df degrees of freedom lies in [-q, q] with
    probability `level` (0.95 for a 95% interval); found by bisection on the t distribution."""
    outside = lambda q: incomplete_beta(df / 2, 0.5, df / (df + q * q))  # P(|T| > q)
    low, high = 0.0, 1.0
    while outside(high) > 1 - level:
        low, high = high, 2 * high
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if outside(mid) > 1 - level else (low, mid)
    return (low + high) / 2


def paired_diffs(runs, reference_runs, key='test_error'):
    """(row - reference) of one figure, round by round, over the rounds both finished."""
    ref = {r['round']: r[key] for r in reference_runs if r['status'] == 'ok'}
    return [r[key] - ref[r['round']] for r in runs if r['status'] == 'ok' and r['round'] in ref]


def interval(values, level=0.95):
    """The mean and its t interval at `level`, or None for fewer than two values."""
    mean, std = mean_std(values)
    if std is None:
        return None
    half = t_quantile(level, len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half


def paired_difference(runs, reference_runs):
    """Mean of (row - reference) over the rounds both finished, with a 95% t interval."""
    diffs = paired_diffs(runs, reference_runs)
    ci = interval(diffs)
    return None if ci is None else dict(n=len(diffs), mean=sum(diffs) / len(diffs), ci95=list(ci))


def contrast_diffs(runs, names):
    """Round by round over the rounds all its rows finished: a - b for names (a, b), and
    (a - b) - (c - d) for (a, b, c, d), the interaction."""
    errors = [{r['round']: r['test_error'] for r in runs[n] if r['status'] == 'ok'} for n in names]
    rounds = sorted(set.intersection(*map(set, errors)))
    signs = (1, -1, -1, 1)[:len(names)]
    return [sum(sign * e[k] for sign, e in zip(signs, errors)) for k in rounds]


def contrast_text(names):
    return ' - '.join(names) if len(names) == 2 else '({} - {}) - ({} - {})'.format(*names)


def contrasts(runs, family):
    """The study's family of contrasts over runs ({row: runs}), those whose rows all ran: each
    with its mean, its plain 95 % interval and its interval Bonferroni-adjusted for the family
    (level 1 - 0.05 / m for m contrasts), which is the one to quote."""
    family = [tuple(names) for names in family if all(n in runs for n in names)]
    out = []
    for names in family:
        diffs = contrast_diffs(runs, names)
        entry = dict(rows=list(names), text=contrast_text(names), row=names[0],
                     vs=names[1] if len(names) == 2 else None, paired=None)
        if len(diffs) >= 2:
            level = 1 - 0.05 / len(family)
            entry['paired'] = dict(n=len(diffs), mean=sum(diffs) / len(diffs),
                                   ci95=list(interval(diffs)), family=len(family),
                                   level=level, ci=list(interval(diffs, level)))
        out.append(entry)
    return out


def summarize(runs):
    """n finished rounds, how many diverged, and the mean and std of every figure."""
    ok = [r for r in runs if r['status'] == 'ok']
    summary = dict(n=len(ok), diverged=len(runs) - len(ok))
    for key in FIGURES:
        mean, std = mean_std([r.get(key) for r in ok])
        if mean is not None:
            summary[key] = dict(mean=mean, std=std)
    if ok:
        summary['test_error'].update(min=min(r['test_error'] for r in ok),
                                     max=max(r['test_error'] for r in ok))
    return summary


def rows_by_name(data):
    """A study's rows by their names."""
    return {r['name']: r for r in data['rows']}


def run_seconds(summary):
    """Mean seconds per run: training plus the test evaluation (measured apart in older files)."""
    return summary['seconds']['mean'] + ((summary.get('eval_seconds') or {}).get('mean') or 0.0)


def digit_stat(summary):
    """The digit error; for a net trained without digit labels, after relabeling its outputs."""
    return summary.get('test_digit_error') or summary.get('matched_digit_error')


######################################################################
# Text: one function per kind of number, so the console, the report and the README agree.

def pm(stat):
    """'mean ± std', or the mean alone when there is no std, or '-'."""
    if stat is None:
        return '-'
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}" if stat.get('std') is not None else f"{stat['mean']:.2f}"


def num(value, digits=2):
    return '-' if value is None else f'{value:.{digits}f}'


def signed(x):
    """x with two decimals and its sign; a value that rounds to zero is +0.00, never -0.00."""
    text = f'{x:+.2f}'
    return '+0.00' if text == '-0.00' else text


def ci_text(diff):
    """'+mean [low, high]' of a paired difference, or '-'."""
    if not diff:
        return '-'
    return f"{signed(diff['mean'])} [{signed(diff['ci95'][0])}, {signed(diff['ci95'][1])}]"


def table_cells(data):
    """The study table as a header and rows of cells: every row, its parameters, errors, time
    and the paired difference to the study's reference row."""
    err = 'test error %' if data['evaluated_on'] == 'test pairs' else 'valid. error %'
    header = ['row', 'params', err, 'min', 'max', 'digit error %', 'train error %', 's / run',
              f"vs {data['reference']} (pp, 95% CI)"]
    rows = []
    for r in data['rows']:
        s = r['summary']
        name = r['name'] + (f" ({s['diverged']} diverged)" if s['diverged'] else '')
        if not s['n']:
            rows.append([name, f"{r['nb_parameters']:,}", 'no finished run'] + [''] * 6)
            continue
        vs = 'reference' if r['name'] == data['reference'] else ci_text(r.get('paired_vs_reference'))
        rows.append([name, f"{r['nb_parameters']:,}", pm(s['test_error']), num(s['test_error']['min']),
                     num(s['test_error']['max']), pm(digit_stat(s)), pm(s['train_error']),
                     num(run_seconds(s)), vs])
    return header, rows


def markdown_table(data, versus=True):
    """The study table in markdown; versus=False leaves out the last column (the plain intervals
    against the reference row), where the family's adjusted intervals are given instead."""
    header, rows = table_cells(data)
    if not versus:
        header, rows = header[:-1], [cells[:-1] for cells in rows]
    lines = ['| ' + ' | '.join(header) + ' |', '| --- |' + ' ---: |' * (len(header) - 1)]
    return '\n'.join(lines + ['| ' + ' | '.join(cells) + ' |' for cells in rows])


def columns(header, rows, right=None):
    """Fixed-width columns for the console; right: the columns aligned right (default all but
    the first)."""
    right = range(1, len(header)) if right is None else right
    widths = [max(len(line[k]) for line in [header] + rows) for k in range(len(header))]
    return '\n'.join('  '.join(c.rjust(w) if k in right else c.ljust(w)
                               for k, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in [header] + rows)


def contrast_lines(data):
    """One line per contrast of a study: 'a - b: +mean [low, high] pp over n rounds', with the
    interval adjusted for the family where the file has it (none below two paired rounds)."""
    lines = []
    for c in data.get('contrasts', []):
        p = c['paired']
        if not p:
            continue
        text = c.get('text') or f"{c['row']} - {c['vs']}"
        if 'ci' in p:
            adjusted = dict(p, ci95=p['ci'])
            lines.append(f"{text}: {ci_text(adjusted)} pp over {p['n']} rounds (Bonferroni, "
                         f"{p['family']} contrasts: {100 * p['level']:.2f} % each)")
        else:
            lines.append(f"{text}: {ci_text(p)} pp over {p['n']} rounds")
    return lines


def text_table(data):
    """The study table in fixed-width columns, for the console."""
    return columns(*table_cells(data))


######################################################################
# Results files.

def check_writable(path):
    """Raises ValueError now, before anything is trained, if path could not be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f'{path} is a folder; give a file path such as '
                         f'{os.path.join(path, "results.json")}')
    if not os.path.isdir(folder):
        raise ValueError(f'{path}: the folder {folder} does not exist')
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f'{path} is not writable; choose a writable path')


def write_text(path, text):
    """Atomic: a temporary file in the same folder, then a rename, so no half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix=os.path.basename(path), dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the file is for everyone
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=1) + '\n')


def load_json(path):
    with open(path) as f:
        return json.load(f)
