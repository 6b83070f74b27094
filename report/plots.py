"""The paper's figures, drawn with matplotlib from the results files (make_report.py calls them).
No titles: the paper's captions say what each figure shows."""
from study.summary import mean_std  # make_report.py puts the project on the path

# One color per row kind, the same in every figure.
COLORS = {'plain': '#888888', 'ws': '#1f77b4', 'aux': '#ff7f0e', 'ws+aux': '#2ca02c',
          'plain-small': '#8c564b', 'ws+aux+re-pair': '#9467bd', 'best': '#d62728'}
COLUMN = 3.4  # inches: one column of the paper
# The paper's names for the rows drawn.
LABELS = {'plain': 'plain', 'ws': 'WS', 'aux': 'aux', 'ws+aux': 'WS+aux',
          'plain-small': 'plain, half width', 'ws+aux+re-pair': 'WS+aux, re-paired',
          'best': 'best model'}


def ok_runs(row):
    return [r for r in row['runs'] if r['status'] == 'ok']


def log_ticks(axis, values):
    """Ticks at the given values, labeled plainly (2, 5, 10 rather than 2 x 10^0)."""
    from matplotlib.ticker import NullFormatter
    axis.set_ticks(values)
    axis.set_ticklabels([f'{v:g}' for v in values])
    axis.set_minor_formatter(NullFormatter())


def curves(plt, results):
    """Training and test error after every epoch, mean ± std over rounds."""
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN, 1.85))
    for row in results['curves']['rows']:
        for ax, key in zip(axes, ('train_error', 'test_error')):
            series = [r['curve'][key] for r in ok_runs(row)]
            epochs = range(1, len(series[0]) + 1)
            mean, std = zip(*(mean_std(values) for values in zip(*series)))
            std = [s or 0 for s in std]
            color = COLORS[row['name']]
            ax.plot(epochs, mean, label=LABELS[row['name']], color=color, lw=1.2)
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2, color=color, lw=0)
    for ax in axes:
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('training error (%), log scale')
    axes[0].set_yscale('log')
    log_ticks(axes[0].yaxis, [0.1, 0.3, 1, 3, 10, 30])
    axes[0].set_ylim(0.1, 50)
    axes[1].set_ylabel('test error (%)')
    axes[1].set_ylim(0, None)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='upper center', ncol=len(labels), fontsize=7, frameon=False)
    return fig


def data_size(plt, results):
    """Test error against the number of training pairs, mean ± std over rounds."""
    rows = results['data_size']['rows']
    fig, ax = plt.subplots(figsize=(COLUMN, 2.05))
    kinds = list(dict.fromkeys(r['name'].split('/', 1)[1] for r in rows))
    for kind in kinds:
        points = sorted((r['config']['nb_pairs'], r['summary']['test_error']) for r in rows
                        if r['name'].split('/', 1)[1] == kind and r['summary']['n'])
        ax.errorbar([n for n, _ in points], [s['mean'] for _, s in points],
                    yerr=[s['std'] or 0 for _, s in points], marker='o', ms=3, capsize=2,
                    lw=1, label=LABELS[kind], color=COLORS[kind])
    ax.set_xscale('log')
    ax.set_yscale('log')
    log_ticks(ax.xaxis, sorted({r['config']['nb_pairs'] for r in rows}))
    log_ticks(ax.yaxis, [1, 2, 5, 10, 20])
    ax.set_xlabel('training pairs (log scale)')
    ax.set_ylabel('test error (%), log scale')
    ax.grid(alpha=0.3)
    # Above the axes, off the data.
    ax.legend(fontsize=7, ncol=3, loc='lower center', bbox_to_anchor=(0.5, 1.0), frameon=False,
              columnspacing=1.0, handletextpad=0.4)
    fig.tight_layout()
    return fig


def rounds(plt, results):
    """Every round's test error of the default study's variants and control rows (the best model
    belongs to the paper's later section); a grey line joins the four variants of one round (the
    same pairs), so the pairing behind each difference is seen."""
    study = results['variants']
    errors = {r['name']: {run['round']: run['test_error'] for run in ok_runs(r)}
              for r in study['rows'] if r['name'] != 'best'}
    names = list(errors)
    fig, ax = plt.subplots(figsize=(COLUMN, 2.0))
    four = [n for n in ('plain', 'ws', 'aux', 'ws+aux') if n in errors]
    for round_index in sorted(errors[four[0]]):
        ax.plot([names.index(n) for n in four], [errors[n].get(round_index) for n in four],
                color='#bbbbbb', lw=0.5, zorder=1)
    for k, name in enumerate(names):
        values = [errors[name][i] for i in sorted(errors[name])]
        offsets = [(i % 5 - 2) * 0.06 for i in range(len(values))]  # spread equal values apart
        ax.scatter([k + o for o in offsets], values, s=9, color=COLORS.get(name, 'k'), zorder=2)
        mean = sum(values) / len(values)
        ax.plot([k - 0.28, k + 0.28], [mean, mean], color='k', lw=1.0, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([LABELS[n] for n in names], rotation=30, ha='right', fontsize=7)
    ax.set_ylabel('test error (%)')
    ax.set_ylim(0, None)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    return fig


def mistakes(plt, results):
    """The test pairs the best model misses in round 0 of the default study."""
    best = next(r for r in results['variants']['rows'] if r['name'] == 'best')
    wrong = next((r['mistakes'] for r in best['runs'] if r.get('mistakes') is not None), [])[:18]
    cols = 9
    rows = max(1, (len(wrong) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * COLUMN, rows * 0.95), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, m in zip(axes.flat, wrong):
        pair = [list(a) + [0] + list(b) for a, b in zip(*m['image'])]  # the two digits side by side
        ax.imshow(pair, cmap='gray_r')
        ax.set_title(f"{m['classes'][0]} {m['classes'][1]} → {m['predicted_digits'][0]} "
                     f"{m['predicted_digits'][1]}", fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


def tradeoff(plt, results):
    """Test error against the cost of one test run (multiply-accumulates, a count that no timing
    noise moves): each model once, the key ones labelled."""
    from study import tuning
    cost = lambda r: tuning.run_cost(results['variants'], r) / 1e3  # every row a test run
    groups = {  # each model once: the default study, then what the other studies add to it
        'variants, controls, best model': [r for r in results['variants']['rows']],
        'two-channel baselines': [r for r in results['baselines']['rows']
                                  if r['config']['net'] == 'pairnet'],
        'other digit branches': [r for r in results['backbones']['rows']
                                 if not r['name'].startswith('conv/')],
        'other heads': [r for r in results['heads']['rows'] if r['name'] != 'mlp'],
        'fast model': results['fast']['rows'] if 'fast' in results else []}
    fig, ax = plt.subplots(figsize=(COLUMN, 2.4))
    for k, (label, rows) in enumerate(groups.items()):
        points = [(cost(r), r['summary']['test_error']['mean']) for r in rows if r['summary']['n']]
        if points:
            ax.scatter(*zip(*points), s=14, alpha=0.85, color=f'C{k}', label=label,
                       marker='osD^v'[k])
    # Each label placed off its point (points of offset) with a line to it.
    offsets = {'plain': (-30, 5), 'ws': (14, -2), 'aux': (-36, 6), 'ws+aux': (14, -6),
               'plain-small': (-52, -18), 'ws+aux+re-pair': (14, -4), 'best': (-34, -10)}
    marked = [(r, LABELS[r['name']], offsets[r['name']]) for r in results['variants']['rows']
              if r['name'] in offsets] + [(r, 'fast model', (-40, -10)) for r in groups['fast model']]
    for r, text, offset in marked:
        ax.annotate(text, (cost(r), r['summary']['test_error']['mean']), xytext=offset,
                    textcoords='offset points', fontsize=5.5,
                    arrowprops=dict(arrowstyle='-', lw=0.4, color='0.4', shrinkA=0, shrinkB=2))
    ax.set_xscale('log')
    ax.set_yscale('log')
    log_ticks(ax.xaxis, [3, 10, 30, 100, 300])
    log_ticks(ax.yaxis, [1, 2, 5, 10, 20])
    ax.set_xlabel('cost of one run: billions of multiply-accumulates (log scale)')
    ax.set_ylabel('test error (%), log scale')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, ncol=3, loc='lower center', bbox_to_anchor=(0.5, 1.0), frameon=False,
              columnspacing=0.8, handletextpad=0.2)
    fig.tight_layout()
    return fig


# name: (the results files it needs, the function that draws it)
FIGURES = {'curves': (['curves'], curves), 'data_size': (['data_size'], data_size),
           'mistakes': (['variants'], mistakes), 'rounds': (['variants'], rounds),
           'tradeoff': (['variants', 'baselines', 'backbones', 'heads'], tradeoff)}
