"""Turns the results files into the paper, its figures and the READMEs' generated blocks; trains
nothing. report/paper.typ reads its numbers from report/results/*.json itself; this script writes
what typst cannot compute (report/derived.json), the figures (plots.py), the generated blocks of
README.md and study/README.md, and report/paper.pdf, then warns where the paper's shape is off
(abstract length, "noise" in the main text). Without matplotlib or typst it says what it skipped.
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the project's own modules

import test  # noqa: E402
import train  # noqa: E402
from study import runner, studies, tuning  # noqa: E402

RESULTS, FIGURES = os.path.join(HERE, 'results'), os.path.join(HERE, 'figures')
TYP, PDF, DERIVED = (os.path.join(HERE, n) for n in ('paper.typ', 'paper.pdf', 'derived.json'))
README, STUDY_README = os.path.join(ROOT, 'README.md'), os.path.join(ROOT, 'study', 'README.md')


def load_results():
    """Every results file; each study's family computed from its runs as declared (the tuning
    study's file, of older code, records its family in another form)."""
    results, registry = {}, studies.registry()
    for name in sorted(n for n in os.listdir(RESULTS) if n.endswith('.json')):
        data = results[name[:-5]] = runner.load_json(os.path.join(RESULTS, name))
        if data.get('study') in registry:
            data['contrasts'] = train.family({r['name']: r['runs'] for r in data['rows']},
                                             registry[data['study']].contrasts)
    return results


def check_code(results):
    """Says which commit and machine each results file comes from, and warns where the four
    files differ from that commit now."""
    found = {}
    for name, data in results.items():
        code, env = data.get('code') or {}, data.get('environment', {})
        commit = code.get('commit') or (code.get('git') or {}).get('commit', '?')
        key = (commit[:10], env.get('cpu', '?'), env.get('torch', '?'))
        found.setdefault(key, []).append(name)
    for (commit, cpu, torch), names in found.items():
        print('commit {}, {}, torch {}: {}'.format(commit, cpu, torch, ', '.join(names)))
        changed = subprocess.run(['git', '-C', ROOT, 'diff', '--quiet', commit, '--'] +
                                 list(runner.FOUR_FILES)).returncode if commit != '?' else 1
        if changed:
            print('  (the four files changed since: python -m study NAME --reproduce checks the rounds)')


def derived(results):
    """What the paper needs and typst cannot compute: the tuning rule's picks and ranks, the
    candidates within noise of the best pick, the head step's verdict, every network's layers
    and parameters, each test run's cost."""
    data = results['tuning']
    chosen, runs = tuning.choices(data), {r['name']: r['runs'] for r in data['rows']}
    beaten = tuning.beaten_by(data['rows'])
    rows = tuning.by_name(data)
    mean = lambda name: rows[name]['summary']['test_error']['mean']
    near = []
    for name in sorted(runs, key=mean)[:4]:
        if name != chosen['best']:
            ci = train.interval(train.contrast(runs, test.diff(name, chosen['best'])))
            near.append(dict(name=name, error=mean(name), mean=ci[0], ci=list(ci[1:])))
    return dict(
        tuning=dict(best=chosen['best'], fast=chosen['fast'], budget=chosen['budget'],
                    budget_row=tuning.BUDGET_ROW, near=near,
                    beaten={name: len(by) for name, by in beaten.items()},
                    gmacs={r['name']: tuning.cost(r) / 1e3 for r in data['rows']},
                    steps=data['contrasts']),
        compat=compat(),
        head=tuning.head_verdict(results['tuning_head']), networks=networks(results))


def compat():
    """The reruns of the default study under other torches (.ci/compat), each in a line."""
    folder, out = os.path.join(RESULTS, 'compat'), []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name)) as f:
            data = json.load(f)
        verdicts = [r['verdict'] for r in data['rows']]
        out.append(dict(python=data['environment']['python'], torch=data['environment']['torch'],
                        rounds=data['rounds'], rows=len(verdicts),
                        consistent=verdicts.count('consistent') + verdicts.count('identical'),
                        verdict='reproduced' if data['reproduced'] else
                        'too few rounds to judge' if 'too few rounds to judge' in verdicts
                        else 'not reproduced'))
    return out


def layers(module):
    """A network's layers in words: 'conv 3×3, 16 · max-pool 2×2 · linear 10' (batch norm, ReLU
    and dropout left out: the table's caption says where they are)."""
    import torch.nn as nn

    def words(m):
        if type(m).__name__ == 'ResidualBlock':
            return ['[' + ' · '.join(w for c in m.children() for w in words(c)) + '] + x']
        if isinstance(m, nn.Conv2d):
            return ['conv {0}×{0}, {1}'.format(m.kernel_size[0], m.out_channels)
                    + (', pad {}'.format(m.padding[0]) if m.padding[0] else '')
                    + (', stride 2' if m.stride[0] == 2 else '')]
        if isinstance(m, nn.Linear):
            return ['linear {}'.format(m.out_features)]
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            return ['max-pool' + (' to 3×3' if isinstance(m, nn.AdaptiveMaxPool2d) else ' 2×2')]
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return ['global average pool']
        return [w for c in m.children() for w in words(c)]
    return ' · '.join(words(module))


def networks(results):
    """Every digit branch, head and two-channel baseline the tables name: layers, parameters."""
    import models
    found = {}
    for key, study, names, part in (
            ('branch/', 'backbones', None, lambda m: m.branch_a),
            ('branch/', 'variants', ('plain-small', 'best'), lambda m: m.branch_a),
            ('head/', 'heads', None, lambda m: m.head), ('pairnet/', 'baselines', None, None)):
        for r in results[study]['rows']:
            if (names and r['name'] not in names) or (study == 'backbones' and not
                                                       r['name'].endswith('/ws+aux')):
                continue
            if study == 'baselines' and r['config']['net'] != 'pairnet':
                continue
            module = test.network(dict(test.HYP, **r['config']), 0, 0)
            module = part(module) if part else module
            found[key + r['name'].split('/')[0]] = dict(layers=layers(module),
                                                       parameters=models.nb_parameters(module))
    return found


def readme_block(results):
    """Markdown: the headline (the declared confirmation) and the default study's table."""
    variants, best = results['variants'], results['confirm']['rows'][0]['summary']
    env, error = variants['environment'], best['test_error']
    rows = ['| {} | {:,} | {} | {} | {} |'.format(
        r['name'], r['nb_parameters'], train.pm([x['test_error'] for x in r['runs']]),
        train.pm([x['test_digit_error'] for x in r['runs']]),
        train.pm([x['train_error'] for x in r['runs']])) for r in variants['rows']]
    return '\n'.join([
        '<!-- results: generated by report/make_report.py from report/results/ -->',
        '**The best model: {:.2f} ± {:.2f} % test error over {} rounds** (`python -m study '
        'confirm`, declared before it ran). The default study, `python test.py`: seed {}, {} '
        'rounds, torch {}, {} ({} cores), {:.1f} min:'.format(error['mean'], error['std'], best['n'],
                                         variants['settings']['seed'],
                                         variants['settings']['rounds'], env['torch'], env['cpu'],
                                         env['cpu_count'], variants['wall_seconds'] / 60), '',
        '| row | parameters | test error % | digit error % | train error % |',
        '| --- | ---: | ---: | ---: | ---: |'] + rows + [
        '', 'Paired differences on the same rounds, intervals Bonferroni-adjusted for the {} '
        'contrasts (pp; relative: change of the error in %):'.format(len(variants['contrasts'])),
        ''] + ['- {}: {}'.format(c['name'], train.contrast_text(c)) for c in variants['contrasts']]
        + ['<!-- end results -->'])


def tuning_block(results, d):
    """Markdown: the tuning candidates and the head step, with what the rule picks."""
    out = ['<!-- tuning: generated by report/make_report.py from report/results/ -->']
    for name in ('tuning', 'tuning_head'):
        data = results[name]
        steps = {c['name'].split(' - ')[0]: c for c in data['contrasts']}
        out += ['', '`python -m study {}`: {} rounds on held-out training pairs, seed {}; steps '
                'Bonferroni-adjusted for the {} of them.'.format(name, data['settings']['rounds'],
                                                                data['settings']['seed'], len(steps)),
                '', '| candidate | validation error % | step (pp) | G MACs / run |',
                '| --- | ---: | --- | ---: |']
        out += ['| `{}` | {} | {} | {:.1f} |'.format(
            r['name'], train.pm([x['test_error'] for x in r['runs']]),
            '{}: {}'.format(steps[r['name']]['name'].split(' - ')[1], train.contrast_text(
                steps[r['name']])) if r['name'] in steps else '-', tuning.cost(r) / 1e3)
            for r in data['rows']]
    out += ['', 'The rule picks `{}` (BEST) and, within {:,.0f} M MACs per run, `{}` (FAST); the '
            'head step adopts `{}`.'.format(d['tuning']['best'], d['tuning']['budget'],
                                            d['tuning']['fast'], d['head']), '<!-- end tuning -->']
    return '\n'.join(out)


def update(path, block):
    """Replaces the generated block of a README between its markers."""
    text = open(path).read()
    start = text.index(block.split('\n', 1)[0])
    end = text.index(block.rsplit('\n', 1)[1]) + len(block.rsplit('\n', 1)[1])
    new = text[:start] + block + text[end:]
    if new != text:
        with open(path + '.tmp', 'w') as f:
            f.write(new)
        os.replace(path + '.tmp', path)


def make_figures(results):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return print('matplotlib is not installed (pip install -r requirements-dev.txt): the '
                     'committed figures are kept')
    plt.rcParams.update({'font.size': 8.5, 'svg.hashsalt': 'paper'})
    sys.path.insert(0, HERE)
    import plots
    for name, draw in plots.FIGURES.items():
        fig = draw(plt, results)
        fig.savefig(os.path.join(FIGURES, name + '.png'), dpi=200, bbox_inches='tight',
                    metadata={'Software': None})
        plt.close(fig)


def compile_pdf():
    """Compiles with typst's own fonts (the same PDF on any machine); returns the page and the
    word counts the paper's shape is checked by, or None without typst."""
    try:
        import typst
    except ImportError:
        return None
    typst.compile(TYP, output=PDF + '.tmp', root=HERE, ignore_system_fonts=True)
    os.replace(PDF + '.tmp', PDF)
    return json.loads(typst.query(TYP, '<main-end>', field='value', one=True, root=HERE,
                                  ignore_system_fonts=True))


def check_paper():
    """Warnings for the paper's shape: an abstract of at most 170 words, 'noise' at most 6 times
    in the main text."""
    text = open(TYP).read()
    abstract = re.search(r'// abstract\n(.*?)// end abstract', text, re.S)
    main = text[text.index('// main text'):text.index('// end main text')]
    words = re.sub(r'#\w+\([^)]*\)|\[|\]', ' X ', abstract.group(1)).split() if abstract else []
    if len(words) > 170:
        print('warning: the abstract has {} words (at most 170)'.format(len(words)))
    if main.lower().count('noise') > 6:
        print('warning: "noise" {} times in the main text'.format(main.lower().count('noise')))


def main():
    results = load_results()
    missing = [s for s in ('variants', 'confirm', 'tuning', 'tuning_head', 'curves', 'data_size')
               if s not in results]
    if missing:
        print('report/results/ lacks {}: run python -m study all --save first'.format(
            ', '.join(missing)), file=sys.stderr)
        return 1
    check_code(results)
    d = derived(results)
    runner.write_json(DERIVED, d)
    update(README, readme_block(results))
    update(STUDY_README, tuning_block(results, d))
    make_figures(results)
    try:
        where = compile_pdf()
    except Exception as error:  # typst's message names the line of paper.typ
        print('report/paper.typ does not compile (paper.pdf kept): {}'.format(error),
              file=sys.stderr)
        return 1
    check_paper()
    print('typst is not installed: kept report/paper.pdf' if where is None else
          'wrote report/paper.pdf (main text ends on page {})'.format(where['page']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
