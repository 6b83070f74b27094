"""The paper's figures, drawn with matplotlib from the results files (make_report.py calls them).
No titles: the paper's captions say what each figure shows."""
from study.summary import mean_std, run_seconds  # make_report.py puts the project on the path

# One color per row kind, the same in every figure.
COLORS = {'plain': '#888888', 'ws': '#1f77b4', 'aux': '#ff7f0e', 'ws+aux': '#2ca02c',
          'ws+aux+re-pair': '#9467bd', 'best': '#d62728'}
COLUMN = 3.4  # inches: one column of the paper


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
    fig, axes = plt.subplots(1, 2, figsize=(2 * COLUMN, 2.1), sharey=True)
    for row in results['curves']['rows']:
        for ax, key in zip(axes, ('train_error', 'test_error')):
            series = [r['curve'][key] for r in ok_runs(row)]
            epochs = range(1, len(series[0]) + 1)
            mean, std = zip(*(mean_std(values) for values in zip(*series)))
            std = [s or 0 for s in std]
            color = COLORS[row['name']]
            ax.plot(epochs, mean, label=row['name'], color=color, lw=1.2)
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2, color=color, lw=0)
            ax.set_xlabel('epoch')
            ax.grid(alpha=0.3)
    axes[0].set_ylabel('training pairs: error (%)')
    axes[1].set_ylabel('test pairs: error (%)')
    axes[0].set_yscale('log')
    log_ticks(axes[0].yaxis, [0.1, 0.3, 1, 3, 10, 30])
    axes[0].set_ylim(0.1, 50)
    axes[1].legend(ncol=2, fontsize=7)
    fig.tight_layout()
    return fig


def data_size(plt, results):
    """Test error against the number of training pairs, mean ± std over rounds."""
    rows = results['data_size']['rows']
    fig, ax = plt.subplots(figsize=(COLUMN, 2.3))
    kinds = list(dict.fromkeys(r['name'].split('/', 1)[1] for r in rows))
    for kind in kinds:
        points = sorted((r['config']['nb_pairs'], r['summary']['test_error']) for r in rows
                        if r['name'].split('/', 1)[1] == kind and r['summary']['n'])
        ax.errorbar([n for n, _ in points], [s['mean'] for _, s in points],
                    yerr=[s['std'] or 0 for _, s in points], marker='o', ms=3, capsize=2,
                    lw=1, label=kind, color=COLORS[kind])
    ax.set_xscale('log')
    ax.set_yscale('log')
    log_ticks(ax.xaxis, sorted({r['config']['nb_pairs'] for r in rows}))
    log_ticks(ax.yaxis, [0.5, 1, 2, 5, 10, 20])
    ax.set_xlabel('training pairs')
    ax.set_ylabel('test error (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
    """Test error against seconds per run, every model scored on test pairs."""
    fig, ax = plt.subplots(figsize=(2 * COLUMN, 2.4))
    names = [n for n in ('variants', 'baselines', 'backbones', 'heads', 'fast') if n in results]
    for k, name in enumerate(names):
        points = [(run_seconds(r['summary']), r['summary']['test_error']['mean']) for r in results[name]['rows']
                  if r['summary']['n']]
        ax.scatter(*zip(*points), s=12, alpha=0.8, color=f'C{k}', label=name)
    ax.set_xscale('log')
    ax.set_yscale('log')
    log_ticks(ax.yaxis, [1, 2, 5, 10, 20])
    ax.set_xlabel('seconds per run (training and test evaluation, one thread)')
    ax.set_ylabel('test error (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=len(names))
    fig.tight_layout()
    return fig


# name: (the results files it needs, the function that draws it)
FIGURES = {'curves': (['curves'], curves), 'data_size': (['data_size'], data_size),
           'mistakes': (['variants'], mistakes), 'tradeoff': (['variants'], tradeoff)}
