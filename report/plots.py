"""The report's figures, drawn with matplotlib from the results files (used by make_report.py)."""
from study.summary import mean_std  # make_report.py puts the project on the path

# Colors in the order a study lists its variants (plain, ws, aux, ws+aux, best in the variants).
PALETTE = ('#888888', '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728')


def split_rows(rows):
    """Rows named GROUP/VARIANT (backbones, data_size) as the variants in order of appearance."""
    return list(dict.fromkeys(r['name'].split('/')[1] for r in rows))


def ok_runs(row):
    return [r for r in row['runs'] if r['status'] == 'ok']


def error_bars(ax, points, **style):
    """points: (x, {'mean', 'std'}) pairs, drawn as mean ± std."""
    ax.errorbar([x for x, _ in points], [s['mean'] for _, s in points],
                yerr=[s['std'] or 0 for _, s in points], marker='o', capsize=3, **style)


def plain_log(ax, x_log=True, y_log=True):
    """Log scales labeled 2, 5, 10 rather than 2 x 10^0, without minor-tick labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for axis, log in ((ax.xaxis, x_log), (ax.yaxis, y_log)):
        if log:
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())


def log_axes(ax, fig, xlabel, y_log=True):
    ax.set_xscale('log')
    if y_log:
        ax.set_yscale('log')
    plain_log(ax, y_log=y_log)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('test error (%)')
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def variants_box(plt, results):
    rows = results['variants']['rows']
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([[r['test_error'] for r in ok_runs(row)] for row in rows])
    ax.set_xticks(range(1, len(rows) + 1))
    ax.set_xticklabels([f"{row['name']}\n{row['nb_parameters'] / 1000:.0f}k" for row in rows])
    ax.set_ylabel('test error (%)')
    ax.set_yscale('log')
    ax.set_title(f"Test error over {results['variants']['settings']['rounds']} rounds")
    ax.grid(axis='y', alpha=0.3)
    return fig


def curves(plt, results):
    fig, axes = plt.subplots(2, 1, figsize=(4.6, 4.6), sharex=True, sharey=True)
    for color, row in zip(PALETTE, results['curves']['rows']):
        for ax, key in zip(axes, ('train_error', 'test_error')):
            series = [r['curve'][key] for r in ok_runs(row)]
            epochs = range(1, len(series[0]) + 1)
            mean, std = zip(*(mean_std(values) for values in zip(*series)))
            std = [s or 0 for s in std]
            ax.plot(epochs, mean, label=row['name'], color=color)
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], alpha=0.2, color=color)
            ax.set_ylabel(key.replace('_', ' ') + ' (%)')
            ax.grid(alpha=0.3)
    axes[0].set_title('pair error after each epoch, mean ± std')
    axes[1].set_xlabel('epoch')
    axes[0].set_ylim(0, 50)
    axes[1].legend()
    fig.tight_layout()
    return fig


def aux_weight(plt, results):
    rows = results['aux_weight']['rows']
    weights = [r['config']['aux_weight'] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    x = [w if w > 0 else 0.03 for w in weights]
    for key, label in (('test_error', 'pair error'), ('test_digit_error', 'digit error')):
        error_bars(ax, [(xi, r['summary'][key]) for xi, r in zip(x, rows) if key in r['summary']],
                   label=label)
    log_axes(ax, fig, 'weight of the digit loss (0 drawn at the left)', y_log=False)
    ax.set_xticks(x)  # after the log scale, which resets the ticks
    ax.set_xticklabels([f'{w:g}' for w in weights])
    ax.minorticks_off()
    return fig


def backbones(plt, results):
    rows = results['backbones']['rows']
    names = sorted({r['name'].split('/')[0] for r in rows}, key=[r['name'].split('/')[0] for r in rows].index)
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    width = 0.2
    for k, variant in enumerate(split_rows(rows)):
        stats = [next(r for r in rows if r['name'] == f'{b}/{variant}')['summary']['test_error'] for b in names]
        ax.bar([i + (k - 1.5) * width for i in range(len(names))], [s['mean'] for s in stats], width,
               yerr=[s['std'] or 0 for s in stats], capsize=2, label=variant, color=PALETTE[k])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel('test error (%)')
    ax.legend(ncol=4)
    ax.grid(axis='y', alpha=0.3)
    return fig


def tradeoff(plt, results):
    """Every architecture scored on test pairs once (studies that only vary training are left out)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    studies = [n for n in ('variants', 'baselines', 'backbones', 'heads', 'regularization',
                           'no_digit_labels', 'fast') if n in results]
    for k, name in enumerate(studies):
        for row in results[name]['rows']:
            s = row['summary']
            if not s['n']:
                continue
            seconds = s['seconds']['mean'] + s['eval_seconds']['mean']
            for ax, x in zip(axes, (row['nb_parameters'], seconds)):
                ax.scatter(x, s['test_error']['mean'], s=16, alpha=0.8, color=f'C{k}', label=name)
    for ax, label in zip(axes, ('parameters', 'seconds per run (one thread)')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        plain_log(ax)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('test error (%)')
    axes[0].set_yticks([1, 2, 3, 5, 10, 20])
    axes[0].set_yticklabels(['1', '2', '3', '5', '10', '20'])
    axes[0].set_xticks([20000, 30000, 50000, 100000])
    axes[0].set_xticklabels(['20k', '30k', '50k', '100k'])
    handles, labels = axes[1].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[1].legend(unique.values(), unique.keys(), fontsize=7)
    return fig


def data_size(plt, results):
    rows = results['data_size']['rows']
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for color, variant in zip(PALETTE, split_rows(rows)):
        error_bars(ax, sorted(((r['config']['nb_pairs'], r['summary']['test_error']) for r in rows
                               if r['name'].endswith('/' + variant) and r['summary']['n']),
                              key=lambda p: p[0]), label=variant, color=color)
    log_axes(ax, fig, 'training pairs')
    sizes = sorted({r['config']['nb_pairs'] for r in rows})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    return fig


def mistakes(plt, results):
    best = next(r for r in results['variants']['rows'] if r['name'] == 'best')
    wrong = next((r.get('mistakes') for r in best['runs'] if r.get('mistakes') is not None), [])[:24]
    cols = 6
    rows = max(1, (len(wrong) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, m in zip(axes.flat, wrong):
        pair = [list(a) + [0] + list(b) for a, b in zip(*m['image'])]  # the two digits side by side
        ax.imshow(pair, cmap='gray_r')
        ax.set_title(f"{m['classes'][0]}{m['classes'][1]} -> {m['predicted_digits'][0]}"
                     f"{m['predicted_digits'][1]}", fontsize=8)
    fig.suptitle(f'All {len(wrong)} misclassified test pairs of the best model, round 0 '
                 '(true -> predicted digits)' if len(wrong) < 24 else
                 'First 24 misclassified test pairs of the best model, round 0', fontsize=9)
    return fig


ALL = [('variants_box', variants_box), ('curves', curves), ('aux_weight', aux_weight),
       ('backbones', backbones), ('tradeoff', tradeoff), ('data_size', data_size),
       ('mistakes', mistakes)]
NEEDS = {'variants_box': ['variants'], 'curves': ['curves'], 'aux_weight': ['aux_weight'],
         'backbones': ['backbones'], 'tradeoff': ['variants'], 'data_size': ['data_size'],
         'mistakes': ['variants']}
