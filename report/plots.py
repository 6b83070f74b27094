"""The paper's figures, drawn with matplotlib from the results files (make_report.py calls them).
Each is drawn at the width it is printed (one column: 3.4 in), so its text prints at 7-8 pt. No
titles: the captions say what each figure shows."""
from train import mean_std  # make_report.py puts the project on the path

COLORS = {'plain': '#888888', 'ws': '#1f77b4', 'aux': '#ff7f0e', 'ws+aux': '#2ca02c',
          'plain-small': '#8c564b', 'ws+aux+re-pair': '#9467bd', 'best': '#d62728'}
LABELS = {'plain': 'plain', 'ws': 'WS', 'aux': 'aux', 'ws+aux': 'WS+aux',
          'plain-small': 'half\nwidth', 'ws+aux+re-pair': 're-\npaired',
          'best': 'best'}
COLUMN = 3.4  # inches: one column of the paper


def ok_runs(row):
    return [r for r in row['runs'] if r['status'] == 'ok']


def log_ticks(axis, values):
    """Ticks at the values, labelled plainly (2, 5, 10, not 2 x 10^0)."""
    from matplotlib.ticker import NullFormatter
    axis.set_ticks(values)
    axis.set_ticklabels(['{:g}'.format(v) for v in values])
    axis.set_minor_formatter(NullFormatter())


def rounds(plt, results):
    """Every round's test error of the default study's rows; a grey line joins the four
    variants of one round (the same pairs), so the pairing behind each difference is seen."""
    errors = {r['name']: {run['round']: run['test_error'] for run in ok_runs(r)}
              for r in results['variants']['rows']}
    names = list(errors)
    fig, ax = plt.subplots(figsize=(COLUMN, 2.0))
    four = ['plain', 'ws', 'aux', 'ws+aux']
    for k in sorted(errors['plain']):
        ax.plot(range(4), [errors[n][k] for n in four], color='#bbbbbb', lw=0.5, zorder=1)
    for i, name in enumerate(names):
        values = [errors[name][k] for k in sorted(errors[name])]
        offsets = [(k % 5 - 2) * 0.06 for k in range(len(values))]  # equal values side by side
        ax.scatter([i + o for o in offsets], values, s=8, color=COLORS[name], zorder=2)
        ax.plot([i - 0.28, i + 0.28], [mean_std(values)[0]] * 2, color='k', lw=1.0, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([LABELS[n] for n in names], fontsize=7.5)
    ax.set_ylabel('test error (%)')
    ax.set_ylim(0, None)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout(pad=0.2)
    return fig


def curves(plt, results):
    """Training and test error after every epoch, mean ± std over rounds."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN, 1.9), sharex=True)
    for row in results['curves']['rows']:
        for ax, key in zip(axes, ('train_error', 'test_error')):
            series = [r['curve'][key] for r in ok_runs(row)]
            epochs = range(1, len(series[0]) + 1)
            mean, std = zip(*(mean_std(values) for values in zip(*series)))
            color = COLORS[row['name']]
            ax.plot(epochs, mean, label=LABELS[row['name']], color=color, lw=1.1)
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2, color=color, lw=0)
    for ax, title in zip(axes, ('training pairs', 'test pairs')):
        ax.set_xlabel('epoch')
        ax.set_yscale('log')
        ax.set_title(title, fontsize=8, pad=3)
        ax.grid(alpha=0.3)
    log_ticks(axes[0].yaxis, [0.1, 1, 10])
    axes[0].set_ylim(0.05, 60)
    log_ticks(axes[1].yaxis, [1, 2, 5, 10, 20])
    axes[1].set_ylim(1, 60)
    axes[0].set_ylabel('error (%), log scale')
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=4, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(pad=0.2, rect=(0, 0.1, 1, 1))
    return fig


def data_size(plt, results):
    """Test error against the number of training pairs, mean ± std over rounds."""
    rows = results['data_size']['rows']
    fig, ax = plt.subplots(figsize=(COLUMN, 2.1))
    for kind in dict.fromkeys(r['name'].split('/', 1)[1] for r in rows):
        points = sorted((r['config']['nb_pairs'], r['summary']['test_error']) for r in rows
                        if r['name'].split('/', 1)[1] == kind)
        ax.errorbar([n for n, _ in points], [s['mean'] for _, s in points],
                    yerr=[s['std'] for _, s in points], marker='o', ms=3, capsize=2, lw=1,
                    label={'ws+aux+re-pair': 'WS+aux, re-paired'}.get(kind, LABELS[kind]),
                    color=COLORS[kind])
    ax.set_xscale('log')
    ax.set_yscale('log')
    log_ticks(ax.xaxis, sorted({r['config']['nb_pairs'] for r in rows}))
    log_ticks(ax.yaxis, [0.5, 1, 2, 5, 10, 20])
    ax.set_xlabel('training pairs (log scale)')
    ax.set_ylabel('test error (%), log scale')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, ncol=2, frameon=False, handletextpad=0.4, columnspacing=1.0)
    fig.tight_layout(pad=0.2)
    return fig


FIGURES = {'rounds': rounds, 'curves': curves, 'data_size': data_size}
