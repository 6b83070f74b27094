"""EE-559 Project 1: compare two MNIST digits with Siamese networks, with and without weight
sharing and an auxiliary digit loss. `python test.py` runs the whole study and prints a table.

Each row of a study is one configuration: the defaults in HYP below with a few overrides.
Each round draws fresh pairs and fresh weights from seeds derived from --seed and the round
number; round r of every row uses the same pairs, so rows are compared on paired rounds.
The test pairs give the final figures only; choices were made with `--study tuning --rounds 40`,
which trains on three quarters of the training pairs and scores on the held-out quarter.
"""
import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import time

import torch

import dlc_practical_prologue as prologue
import models
import train

######################################################################
# Hyperparameters: the defaults of every row; the studies below override a few per row.

HYP = dict(
    nb_pairs=1000,          # training pairs per round (the course's size)
    nb_test_pairs=1000,     # test pairs per round, used only for the final figure
    net='siamese',          # 'siamese' (models.SiameseNet) or 'pairnet' (2-channel baseline)
    share_weights=True,     # one digit branch for both images, or two
    backbone='conv',        # digit branch, see models.BACKBONES
    width=1,                # channel multiplier of the digit branch
    head='mlp',             # comparison head, see models.HEADS
    batch_norm=True,
    dropout=0.0,
    kind='fc',              # pairnet only: 'fc' or 'conv'
    depth=2,                # pairnet only: hidden layers
    hidden=128,             # pairnet only: units of the hidden linear layers
    nb_epochs=25,
    mini_batch_size=50,
    lr=1e-2,                # AdamW learning rate (the peak rate of the one-cycle schedule)
    weight_decay=0.0,
    schedule='onecycle',    # 'onecycle' (rise, then fall to zero) or 'constant'
    aux_weight=0.0,         # weight of the digit cross-entropy; 0 = no auxiliary loss
    repair=False,           # re-pair the training digits each epoch (uses the digit labels)
    shift=1,                # random moves of up to this many pixels while training
    deskew=False,           # shear every digit upright first, training and test alike
    tta=False,              # average predictions over one-pixel moves at evaluation
    bf16=False,             # bfloat16 autocast where the CPU has it natively (see --bench)
)
SIAMESE_KEYS = ('share_weights', 'backbone', 'width', 'head', 'aux_weight', 'repair')
PAIRNET_KEYS = ('kind', 'depth', 'hidden')

# What the aux variants add: the digit labels, both as a loss on the digit outputs and to re-pair
# the training digits each epoch, so the learned head sees new pairs instead of memorizing 1000.
AUX = dict(aux_weight=1.0, repair=True)
# The course's settings, the starting point of --study tuning.
COURSE = dict(batch_norm=False, nb_epochs=25, mini_batch_size=100, lr=1e-3, schedule='constant',
              shift=0)
# The best model: the parameter-free posterior head on a wider branch, deskewed digits, a heavier
# digit loss, one-pixel moves also at evaluation. The fast model: the same design, narrower, far
# fewer epochs, a single evaluation.
BEST = dict(width=2, head='posterior', aux_weight=3.0, deskew=True, nb_epochs=30, tta=True,
            bf16=True)
FAST = dict(BEST, width=1, nb_epochs=5, tta=False)


def row(name, about, **overrides):
    unknown = set(overrides) - set(HYP)
    assert not unknown, f'row {name}: unknown settings {unknown}'
    return dict(HYP, name=name, about=about, **overrides)


def variants():
    return [row('plain', 'two branches, pair loss only', share_weights=False),
            row('ws', 'weight sharing, pair loss only'),
            row('aux', 'two branches, pair + digit loss', share_weights=False, **AUX),
            row('ws+aux', 'weight sharing, pair + digit loss', **AUX),
            row('best', 'ws, posterior head, wider, deskewed, test-time moves', **BEST)]


FOUR = (('plain', dict(share_weights=False)), ('ws', {}),
        ('aux', dict(share_weights=False, **AUX)), ('ws+aux', AUX))


def baselines():
    rows = [row(f'fc{d}', f'2-channel MLP, {d} hidden layer(s)', net='pairnet', kind='fc', depth=d)
            for d in (1, 2, 3)]
    rows += [row(f'conv{d}', f'2-channel conv net, {d} conv layer(s)', net='pairnet',
                 kind='conv', depth=d) for d in (1, 2, 3)]
    return rows + [row('siamese-ws', 'Siamese with weight sharing, pair loss only'),
                   row('siamese-ws+aux', 'Siamese with weight sharing and the digit loss', **AUX)]


def backbones():
    return [row(f'{b}/{name}', models.BACKBONES[b], backbone=b, **variant)
            for b in models.BACKBONES for name, variant in FOUR]


def heads():
    return [row(h, models.HEADS[h], head=h, **AUX) for h in models.HEADS]


def aux_weights():
    return [row(f'aux={w:g}', 'ws, digit-loss weight w' + (', re-paired' if w else ''),
                aux_weight=w, repair=w > 0) for w in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)]


def regularization():
    rows = [row('bn', 'ws+aux with batch norm (the default)', **AUX),
            row('no-bn', 'without batch norm', batch_norm=False, **AUX)]
    rows += [row(f'bn+dropout={p:g}', 'dropout before the linear layers', dropout=p, **AUX)
             for p in (0.1, 0.25, 0.5)]
    return rows + [row('no-bn+dropout=0.25', 'dropout alone', batch_norm=False, dropout=0.25, **AUX)]


def data_size():
    return [row(f'{n}/{name}', f'{n} training pairs', nb_pairs=n, **variant)
            for n in (250, 500, 1000, 2000, 4000, 8000) for name, variant in FOUR]


def no_digit_labels():
    return [row('pair-loss-only', 'the best model without any digit label',
                **dict(BEST, aux_weight=0.0)),
            row('with-digit-loss', 'the best model', **BEST)]


def tuning():
    """Every choice behind HYP, AUX, BEST and FAST, scored on held-out training pairs."""
    base = dict(BEST, tta=False, deskew=False, aux_weight=1.0)
    return [
        # The classic recipe, step by step from the course's settings, on ws+aux and ws.
        row('course/ws', 'course settings: no batch norm, Adam 1e-3, batch 100, no moves', **COURSE),
        row('course/ws+aux', 'course settings, digit loss', **dict(COURSE, aux_weight=1.0)),
        row('+bn/ws+aux', '+ batch norm', **dict(COURSE, aux_weight=1.0, batch_norm=True)),
        row('+onecycle/ws+aux', '+ one-cycle, peak 1e-2, batch 50',
            **dict(COURSE, aux_weight=1.0, batch_norm=True, schedule='onecycle', lr=1e-2,
                   mini_batch_size=50)),
        row('+shift/ws+aux', '+ one-pixel moves (= HYP with the digit loss)', aux_weight=1.0),
        row('+repair/ws+aux', '+ re-pairing (= the ws+aux variant)', **AUX),
        row('ws', 'HYP, pair loss only (= the ws variant)'),
        row('ws/lr=3e-3', 'lower peak learning rate', lr=3e-3),
        row('ws+aux/lr=3e-3', 'lower peak learning rate', lr=3e-3, **AUX),
        row('ws+aux/40 epochs', 'more epochs', nb_epochs=40, **AUX),
        # From the classic head to the best model.
        row('posterior', 'ws+aux with the posterior head', head='posterior', aux_weight=1.0),
        row('posterior/width=2', 'twice the channels', **dict(base, nb_epochs=25)),
        row('posterior/width=2/30 epochs', 'and more epochs', **base),
        row('+tta', 'and test-time moves', **dict(BEST, aux_weight=1.0, deskew=False)),
        row('+deskew', 'and deskewed digits', **dict(BEST, aux_weight=1.0)),
        row('best', 'and digit-loss weight 3 (= BEST)', **BEST),
        row('best/no deskew', 'without deskewing', **dict(BEST, deskew=False)),
        row('best/width=1.5', 'narrower', **dict(BEST, width=1.5)),
        row('best/vgg', 'VGG-style branch', **dict(BEST, backbone='vgg', width=1)),
        row('best/shift=2', 'two-pixel moves', **dict(BEST, shift=2)),
        row('best/lr=3e-3', 'lower peak learning rate', **dict(BEST, lr=3e-3)),
        row('best/aux=10', 'heavier digit loss', **dict(BEST, aux_weight=10.0)),
        row('best/dropout=0.1', 'dropout', **dict(BEST, dropout=0.1)),
        row('best/batch 100', 'larger batches', **dict(BEST, mini_batch_size=100)),
        row('fast', 'FAST', **FAST),
        row('fast/no deskew', 'without deskewing, digit-loss weight 1',
            **dict(FAST, deskew=False, aux_weight=1.0)),
        row('fast/width=0.5', 'narrower, more epochs', **dict(FAST, width=0.5, nb_epochs=7)),
        row('fast/lr=2e-2', 'higher peak learning rate', **dict(FAST, lr=2e-2)),
    ]


STUDIES = {
    'variants': ('the four Siamese variants (weight sharing x aux loss) and the best model',
                 variants, 'plain'),
    'baselines': ('non-Siamese 2-channel MLPs and conv nets against the Siamese nets',
                  baselines, 'siamese-ws'),
    'backbones': ('five digit branches, each in the four variants', backbones, 'conv/ws+aux'),
    'heads': ('how the two digit outputs become the pair answer', heads, 'mlp'),
    'aux_weight': ('the auxiliary-loss weight swept from 0 to 10', aux_weights, 'aux=0'),
    'regularization': ('batch norm and dropout on the ws+aux net', regularization, 'bn'),
    'curves': ('train and test error after every epoch, four variants', variants, 'plain'),
    'data_size': ('250 to 8000 training pairs, four variants', data_size, '1000/plain'),
    'no_digit_labels': ('the posterior head trained on the pair label only', no_digit_labels,
                        'with-digit-loss'),
    'tuning': ('validation scores behind every choice (held-out training pairs, no test pairs)',
               tuning, '+repair/ws+aux'),
    'fast': ('the fast model only (--fast)', lambda: [row('fast', 'FAST', **FAST)], 'fast'),
}
# Studies that score on held-out training pairs instead of the test pairs.
VALIDATION_STUDIES = ('tuning',)

######################################################################
# One run: one row, one round.


def seed_for(*keys):
    """A 63-bit seed from (base seed, round, purpose): independent streams, stable everywhere."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], 'little') >> 1


def build_model(config):
    if config['net'] == 'pairnet':
        return models.PairNet(config['kind'], config['depth'], config['hidden'],
                              config['batch_norm'], config['dropout'])
    return models.SiameseNet(config['share_weights'], config['backbone'], config['head'],
                             config['batch_norm'], config['dropout'], config['width'])


def load_pairs(config, round_seed, settings):
    """Train and evaluation pairs of one round; with validation, no test pair is ever drawn."""
    generator = torch.Generator().manual_seed(round_seed)
    if not settings['validation']:
        return prologue.generate_pair_sets(config['nb_pairs'], generator=generator,
                                           data_dir=settings['data_dir'],
                                           nb_test=config['nb_test_pairs'], quiet=True)
    input, target, classes = prologue.generate_split_pairs(
        config['nb_pairs'], 'train', generator, settings['data_dir'], quiet=True)
    # Round r holds out quarter r % 4 of its training pairs, so all of them serve in turn.
    fold = torch.zeros(input.size(0), dtype=torch.bool)
    quarter = input.size(0) // 4
    start = (settings['round'] % 4) * quarter
    fold[start:start + quarter] = True
    return (input[~fold], target[~fold], classes[~fold], input[fold], target[fold], classes[fold])


def run_one(task):
    """Trains one row for one round and returns its figures (errors in %)."""
    config, settings = task
    round_seed = seed_for(settings['seed'], settings['round'], 'data')
    device = torch.device(settings['device'])
    data = load_pairs(config, round_seed, settings)
    train_input, test_input = data[0], data[3]
    if config['deskew']:
        train_input, test_input = train.deskew(train_input), train.deskew(test_input)
    train_input, test_input = train.standardize(train_input, test_input)
    train_input, test_input = train_input.to(device), test_input.to(device)
    train_target, train_classes, test_target, test_classes = (t.to(device) for t in
                                                              (data[1], data[2], data[4], data[5]))
    torch.manual_seed(seed_for(settings['seed'], settings['round'], 'weights'))
    model = build_model(config).to(device)
    if settings['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    result = dict(name=config['name'], round=settings['round'], data_seed=round_seed,
                  status='ok', nb_parameters=models.nb_parameters(model))
    curve = {'train_error': [], 'test_error': []}

    def on_epoch(epoch, model):
        curve['train_error'].append(round(train.evaluate(model, train_input, train_target)['pair_error'], 2))
        curve['test_error'].append(round(train.evaluate(model, test_input, test_target)['pair_error'], 2))
        if settings['verbose']:
            print(f"epoch {config['name']} round={settings['round']} epoch={epoch + 1} "
                  f"train_error={curve['train_error'][-1]:.2f}", flush=True)

    bf16 = settings['bf16'] and config['bf16']
    start = time.perf_counter()
    try:
        losses = train.train_model(
            model, train_input, train_target, train_classes, nb_epochs=config['nb_epochs'],
            mini_batch_size=config['mini_batch_size'], lr=config['lr'],
            weight_decay=config['weight_decay'], aux_weight=config['aux_weight'],
            shift=config['shift'], repair=config['repair'], schedule=config['schedule'],
            generator=torch.Generator().manual_seed(seed_for(settings['seed'], settings['round'], 'train')),
            bf16=bf16, on_epoch=on_epoch if settings['curves'] else None)
    except train.TrainingDiverged as e:
        return dict(result, status='diverged', message=str(e))
    result['seconds'] = time.perf_counter() - start
    result['final_loss'] = losses[-1]
    start = time.perf_counter()
    test = train.evaluate(model, test_input, test_target, test_classes, tta=config['tta'], bf16=bf16)
    result['eval_seconds'] = time.perf_counter() - start
    trained = train.evaluate(model, train_input, train_target, train_classes, tta=config['tta'],
                             bf16=bf16)
    # Digit outputs trained by nothing but a learned head need not be digits: no digit error.
    digits = config['net'] == 'siamese' and (config['aux_weight'] > 0 or config['head'] == 'posterior')
    result.update(test_error=test['pair_error'], train_error=trained['pair_error'],
                  test_digit_error=test['digit_error'] if digits else None,
                  train_digit_error=trained['digit_error'] if digits else None)
    if settings['curves']:
        result['curve'] = curve
    if config['net'] == 'siamese' and config['aux_weight'] == 0 and config['head'] == 'posterior':
        # Without digit labels the digit outputs may still be digits, under some relabeling.
        result['matched_digit_error'] = matched_digit_error(test['digit_pred'], test_classes)
    if settings['keep_mistakes']:
        wrong = (test['pair_pred'] != test_target).nonzero().flatten()
        result['mistakes'] = [dict(index=i, classes=data[5][i].tolist(), target=data[4][i].item(),
                                   predicted_digits=None if test['digit_pred'] is None
                                   else test['digit_pred'][i].tolist(),
                                   image=data[3][i].round().int().tolist()) for i in wrong.tolist()]
    return result


def matched_digit_error(digit_pred, classes):
    """Digit error (%) after the best one-to-one relabeling of the ten outputs (exact, by
    dynamic programming over subsets of digits)."""
    pred, true = digit_pred.reshape(-1).tolist(), classes.reshape(-1).tolist()
    counts = [[0] * 10 for _ in range(10)]
    for p, t in zip(pred, true):
        counts[p][t] += 1
    best = {0: 0}  # mask of digits used by outputs 0..k-1 -> most agreements
    for output in range(10):
        nxt = {}
        for mask, score in best.items():
            for digit in range(10):
                if not mask >> digit & 1:
                    key = mask | 1 << digit
                    nxt[key] = max(nxt.get(key, -1), score + counts[output][digit])
        best = nxt
    return 100.0 * (1 - best[(1 << 10) - 1] / len(pred))


######################################################################
# Statistics and tables.

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: normal).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_difference(runs, reference_runs):
    """Mean of (row - reference) over the rounds both finished, with a 95% t interval."""
    ref = {r['round']: r['test_error'] for r in reference_runs if r['status'] == 'ok'}
    diffs = [r['test_error'] - ref[r['round']] for r in runs
             if r['status'] == 'ok' and r['round'] in ref]
    mean, std = mean_std(diffs)
    if std is None:
        return None
    half = (T95[len(diffs) - 2] if len(diffs) <= 31 else 1.96) * std / math.sqrt(len(diffs))
    return dict(n=len(diffs), mean=mean, ci95=[mean - half, mean + half])


def summarize(runs):
    ok = [r for r in runs if r['status'] == 'ok']
    summary = dict(n=len(ok), diverged=len(runs) - len(ok))
    for key in ('test_error', 'test_digit_error', 'matched_digit_error', 'train_error',
                'train_digit_error', 'seconds', 'eval_seconds'):
        mean, std = mean_std([r.get(key) for r in ok])
        if mean is not None:
            summary[key] = dict(mean=mean, std=std)
    if ok:
        summary['test_error'].update(min=min(r['test_error'] for r in ok),
                                     max=max(r['test_error'] for r in ok))
    return summary


def fmt(value, digits=2, width=6):
    return f'{value:{width}.{digits}f}' if value is not None else '-'.rjust(width)


def table(rows, reference, validation):
    """The summary table; every row against the study's reference row on paired rounds."""
    error = 'valid err %' if validation else 'test err %'
    lines = [f"{'row':<28} {'params':>8}  {error:>15} {'min':>6} {'max':>6}  {'digit %':>7}  "
             f"{'train %':>7}  {'s/run':>6}  {'vs ' + reference + ' (pp, 95% CI)'}"]
    for r in rows:
        s = r['summary']
        if not s['n']:
            lines.append(f"{r['name']:<28} {r['nb_parameters']:>8,}  no finished run")
            continue
        e, d, t = s['test_error'], s.get('test_digit_error'), s['train_error']
        per_run = s['seconds']['mean'] + s['eval_seconds']['mean']
        diff = r.get('paired_vs_reference')
        vs = 'reference' if r['name'] == reference else (
            f"{diff['mean']:+.2f} [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff else '-')
        if d is None and s.get('matched_digit_error'):
            d = s['matched_digit_error']
        err = f"{e['mean']:.2f} ± {fmt(e['std'], 2, 4).strip()}"
        lines.append(f"{r['name']:<28} {r['nb_parameters']:>8,}  {err:>15} {fmt(e['min'])} "
                     f"{fmt(e['max'])}  {fmt(d and d['mean'], 2, 7)}  {fmt(t['mean'], 2, 7)}  "
                     f"{fmt(per_run, 2)}  {vs}" + (f"  ({s['diverged']} diverged)" if s['diverged'] else ''))
    return '\n'.join(lines)


######################################################################
# Running a study: in worker processes or in this one, with results kept as they finish.


def warm_up(settings):
    """One tiny training step, so torch's one-time start-up cost (about 2 s for the first
    backward pass) is not charged to the first run of a process."""
    torch.set_num_threads(settings['threads'])
    model = models.SiameseNet().to(settings['device'])
    if settings['channels_last']:
        model = model.to(memory_format=torch.channels_last)
    x = torch.zeros(4, 2, 14, 14, device=settings['device'])
    y = torch.zeros(4, dtype=torch.long, device=settings['device'])
    train.train_model(model, x, y, y[:, None].repeat(1, 2), nb_epochs=1, aux_weight=1.0,
                      bf16=settings['bf16'])


def init_worker(settings):
    # Ctrl-C is handled by the parent, which terminates the pool and saves what finished.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up(settings)


def run_tasks(tasks, settings, on_result):
    if settings['workers'] <= 1:
        warm_up(settings)
        for task in tasks:
            on_result(run_one(task))
        return
    # spawn, not fork: forking a process that already ran torch's thread pools can deadlock.
    with multiprocessing.get_context('spawn').Pool(settings['workers'], init_worker,
                                                   (settings,)) as pool:
        for result in pool.imap_unordered(run_one, tasks):
            on_result(result)


def estimate_seconds(configs, settings):
    """Times a few training steps of each row here, then scales to its full run."""
    torch.set_num_threads(settings['threads'])
    total = 0.0
    for config in configs:
        torch.manual_seed(0)
        model = build_model(config).to(settings['device'])
        if settings['channels_last']:
            model = model.to(memory_format=torch.channels_last)
        batch = min(config['mini_batch_size'], config['nb_pairs'])
        input = torch.randn(batch, 2, 14, 14, device=settings['device'])
        target = torch.randint(0, 2, (batch,), device=settings['device'])
        classes = torch.randint(0, 10, (batch, 2), device=settings['device'])
        kwargs = dict(mini_batch_size=batch, aux_weight=config['aux_weight'] if config['net'] == 'siamese' else 0,
                      bf16=settings['bf16'] and config['bf16'])
        train.train_model(model, input, target, classes, nb_epochs=1, **kwargs)  # warm-up
        start = time.perf_counter()
        train.train_model(model, input, target, classes, nb_epochs=3, **kwargs)
        step = (time.perf_counter() - start) / 3
        steps = config['nb_epochs'] * math.ceil(config['nb_pairs'] * 0.75 ** settings['validation']
                                                / config['mini_batch_size'])
        evals = (2 * config['nb_epochs'] if settings['curves'] else 2) * (5 if config['tta'] else 1)
        total += step * (steps + evals * config['nb_test_pairs'] / batch / 3)
    return total * settings['rounds'] / max(1, settings['workers'])


######################################################################
# Command line.


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit status 2, nothing trained: bad flags are the user's typo, not a crash.
        print(f'{self.prog}: error: {message} (see --help)', file=sys.stderr)
        sys.exit(2)


def whole(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
        if value < low or (high is not None and value > high):
            allowed = f'from {low} to {high}' if high is not None else f'>= {low}'
            raise argparse.ArgumentTypeError(f'{value} is out of range: use a whole number {allowed}')
        return value
    return parse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f'{text} is not allowed: use a positive finite number')
    return value


def parse_args(argv):
    parser = Parser(
        prog='test.py', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Siamese networks with and without weight sharing and an auxiliary digit '
                    'loss, on pairs of 14x14 MNIST digits (EE-559 Project 1). With no flags: the '
                    'four variants and the best model, 10 rounds each, and a mean ± std table.',
        epilog='Data: MNIST is read from DATA_DIR/mnist/MNIST/raw/ (DATA_DIR: --data_dir, else '
               '$PYTORCH_DATA_DIR, else ./data) and downloaded there if missing.\n'
               'Exit status: 0 done, 1 data problem or a diverged run, 2 bad flags, 130 Ctrl-C.')
    study = parser.add_argument_group('what to run')
    study.add_argument('--study', default=None, metavar='NAME',
                       help="a study (default: variants); 'list' names them, 'all' runs all "
                            "but tuning, each writing NAME.json (into the --json folder)")
    study.add_argument('--variant', default=None, metavar='NAMES',
                       help='comma-separated row names of the study to run (default: all rows)')
    study.add_argument('--quick', action='store_true',
                       help='smoke run in seconds: 1 round, 2 epochs, 200 + 200 pairs')
    study.add_argument('--fast', action='store_true',
                       help='only the fast model (trained in well under a second per round)')
    study.add_argument('--bench', action='store_true',
                       help='time the default models and every fast path against a plain '
                            'fp32 loop and a fixed reference run; print the figures')
    settings = parser.add_argument_group('settings (defaults are the report\'s)')
    settings.add_argument('--rounds', type=whole(1), default=None,
                          help='rounds per row, each with fresh pairs and weights (default 10)')
    settings.add_argument('--epochs', type=whole(1), default=None,
                          help='epochs for every row (default: per row, see HYP in test.py)')
    settings.add_argument('--batch_size', type=whole(2), default=None,
                          help=f"mini-batch size for every row (default {HYP['mini_batch_size']})")
    settings.add_argument('--lr', type=positive_float, default=None,
                          help='learning rate for every row (default: per row)')
    settings.add_argument('--pairs', type=whole(1, 30000), default=None,
                          help=f"training pairs per round (default {HYP['nb_pairs']})")
    settings.add_argument('--test_pairs', type=whole(1, 5000), default=None,
                          help=f"test pairs per round (default {HYP['nb_test_pairs']})")
    settings.add_argument('--seed', type=whole(0), default=0,
                          help='base seed; round r of every row uses seeds derived from '
                               '(seed, r), so the same seed gives the same numbers (default 0)')
    settings.add_argument('--validation', action='store_true',
                          help='score on a held-out quarter of the training pairs instead of '
                               'the test pairs (for choosing settings)')
    io = parser.add_argument_group('input and output')
    io.add_argument('--data_dir', default=None,
                    help='folder holding mnist/MNIST/raw/ (default $PYTORCH_DATA_DIR, else ./data)')
    io.add_argument('--json', default=None, metavar='PATH',
                    help='write the results there (default with --study: '
                         'report/results/NAME.json; with --study all: a folder)')
    io.add_argument('--verbose', action='store_true', help='print the training error after every epoch')
    speed = parser.add_argument_group('speed')
    speed.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                       help='auto: cuda if available, else cpu')
    speed.add_argument('--workers', type=whole(1, 64), default=None,
                       help='parallel worker processes (default: one per core on cpu, 1 on cuda)')
    speed.add_argument('--threads', type=whole(1, 256), default=None,
                       help='torch threads per worker (default: cores / workers)')
    speed.add_argument('--no_channels_last', action='store_true', help='keep the NCHW memory format')
    speed.add_argument('--no_bf16', action='store_true',
                       help='train in float32 even where the CPU has native bfloat16')
    return parser.parse_args(argv)


def fail(message, status=2):
    print(f'test.py: error: {message}', file=sys.stderr)
    sys.exit(status)


def check_json_path(path):
    """Fails now, before anything is trained, if the results file could not be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        fail(f'--json {path} is a folder; give a file path such as {os.path.join(path, "results.json")}')
    if not os.path.isdir(folder):
        fail(f'--json {path}: the folder {folder} does not exist')
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        fail(f'--json {path} is not writable; choose a writable path')


def write_json(path, data):
    """Atomic: a temporary file in the same folder, then a rename, so no half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.results-', suffix='.json', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=1)
            f.write('\n')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resolve_settings(args):
    if args.device == 'cuda' and not torch.cuda.is_available():
        fail("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else (
        'cpu' if args.device == 'auto' else args.device)
    cores = os.cpu_count() or 1
    workers = args.workers or (1 if device == 'cuda' else cores)
    if device == 'cuda' and workers > 1:
        fail('--workers > 1 is for cpu only; one process drives the GPU')
    bf16 = not args.no_bf16 and (train.native_bf16() if device == 'cpu'
                                 else torch.cuda.is_bf16_supported())
    return dict(device=device, workers=workers, threads=args.threads or max(1, cores // workers),
                channels_last=not args.no_channels_last, bf16=bf16, seed=args.seed,
                data_dir=args.data_dir, verbose=args.verbose)


def study_rows(name, args):
    about, make_rows, reference = STUDIES[name]
    rows = make_rows()
    if name == 'curves':
        rows = rows[:4]
    quick = dict(nb_epochs=2, nb_pairs=200, nb_test_pairs=200) if args.quick else {}
    overrides = {'nb_epochs': args.epochs, 'mini_batch_size': args.batch_size, 'lr': args.lr,
                 'nb_pairs': args.pairs, 'nb_test_pairs': args.test_pairs}
    for r in rows:
        size = r['nb_pairs']
        r.update(quick)
        if name == 'data_size' and args.quick:  # keep the sizes apart, a tenth of each
            r['nb_pairs'] = max(25, size // 10)
        r.update({k: v for k, v in overrides.items() if v is not None})
    if args.variant:
        wanted = args.variant.split(',')
        unknown = [w for w in wanted if w not in [r['name'] for r in rows]]
        if unknown:
            fail(f"--variant {','.join(unknown)}: no such row in study {name}; "
                 f"choose from {', '.join(r['name'] for r in rows)}")
        rows = [r for r in rows if r['name'] in wanted]
        reference = reference if reference in wanted else rows[0]['name']
    for r in rows:
        try:
            prologue.check_pair_count(r['nb_pairs'], 'train')
            prologue.check_pair_count(r['nb_test_pairs'], 'test')
        except ValueError as e:
            fail(str(e))
        if r['nb_pairs'] < 8:
            fail(f"--pairs {r['nb_pairs']} is too few to train on (and to hold out a quarter); "
                 f"use at least 8")
    return rows, reference


def public_config(config):
    """The settings that matter for this row (a baseline has no digit branch, and so on)."""
    drop = PAIRNET_KEYS if config['net'] == 'siamese' else SIAMESE_KEYS
    return {k: v for k, v in config.items() if k not in drop and k not in ('name', 'about')}


def run_study(name, args, settings, json_path):
    """Runs every row of one study for all rounds; prints and saves as results arrive."""
    rows, reference = study_rows(name, args)
    rounds = args.rounds or (1 if args.quick else 10)
    validation = args.validation or name in VALIDATION_STUDIES
    settings = dict(settings, rounds=rounds, validation=validation, curves=name == 'curves')
    check_data(settings['data_dir'], test=not validation)
    nb_params = {r['name']: models.nb_parameters(build_model(r)) for r in rows}
    tasks = [(r, dict(settings, round=k, keep_mistakes=name == 'variants' and k == 0
                      and r['name'] == 'best'))
             for k in range(rounds) for r in rows]  # round-major: an interruption keeps whole rounds
    print(f"study {name}: {STUDIES[name][0]}")
    scored_on = ('scored on a held-out quarter of them' if validation
                 else f"{rows[0]['nb_test_pairs']} test pairs")
    print(f"  {len(rows)} rows x {rounds} rounds, {rows[0]['nb_pairs']} training pairs, {scored_on}, "
          f"seed {settings['seed']}, {settings['device']}, {settings['workers']} worker(s) x "
          f"{settings['threads']} thread(s), channels-last {'on' if settings['channels_last'] else 'off'}, "
          f"bf16 {'on' if settings['bf16'] else 'off'}", flush=True)
    if not args.quick:
        print(f'  estimated time: about {estimate_seconds(rows, settings) / 60:.1f} min', flush=True)
    runs = {r['name']: [] for r in rows}
    started, wall = time.strftime('%Y-%m-%dT%H:%M:%S%z'), time.perf_counter()
    diverged = []

    def on_result(result):
        runs[result['name']].append(result)
        done = sum(map(len, runs.values()))
        head = f"run study={name} row={result['name']} round={result['round']}"
        if result['status'] != 'ok':
            diverged.append(result)
            print(f"{head} diverged done={done}/{len(tasks)}", flush=True)
            print(f"test.py: error: row {result['name']} round {result['round']}: "
                  f"{result['message']}; try a smaller --lr", file=sys.stderr, flush=True)
            return
        digit = result['test_digit_error']
        print(f"{head} {'valid' if validation else 'test'}_error={result['test_error']:.2f} "
              f"digit_error={'-' if digit is None else f'{digit:.2f}'} "
              f"train_error={result['train_error']:.2f} seconds={result['seconds'] + result['eval_seconds']:.2f} "
              f"done={done}/{len(tasks)}", flush=True)

    complete = True
    try:
        run_tasks(tasks, settings, on_result)
    except KeyboardInterrupt:
        complete = False
        print('\ninterrupted: the table and results file keep the runs that finished', file=sys.stderr)
    for r in rows:
        runs[r['name']].sort(key=lambda x: x['round'])
    out_rows = []
    for r in rows:
        entry = dict(name=r['name'], about=r['about'], config=public_config(r),
                     nb_parameters=nb_params[r['name']], summary=summarize(runs[r['name']]),
                     runs=runs[r['name']])
        if r['name'] != reference:
            entry['paired_vs_reference'] = paired_difference(runs[r['name']], runs[reference])
        out_rows.append(entry)
    print()
    print(table(out_rows, reference, validation))
    result = dict(
        schema=1, study=name, about=STUDIES[name][0], complete=complete,
        command=' '.join(['python', 'test.py'] + sys.argv[1:]), reference=reference,
        errors_in='percent', evaluated_on='held-out training pairs' if validation else 'test pairs',
        settings={k: v for k, v in settings.items() if k not in ('verbose', 'keep_mistakes')},
        environment=environment(),
        started=started, wall_seconds=time.perf_counter() - wall, rows=out_rows)
    print(f"\n{sum(len(v) for v in runs.values())} runs in {result['wall_seconds']:.1f} s wall time"
          + (f'; results in {json_path}' if json_path else ''))
    if json_path:
        write_json(json_path, result)
    if not complete:
        sys.exit(130)
    return not diverged


def check_data(data_dir, test):
    """Reads (or downloads) and checks MNIST once here, before any run or worker starts."""
    try:
        prologue.downsampled('train', data_dir)
        if test:
            prologue.downsampled('test', data_dir)
    except prologue.DataError as e:
        fail(str(e), status=1)


def environment():
    return dict(torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), system=platform.system(),
                cpu_count=os.cpu_count(), cpu=cpu_name())


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
    except OSError:
        return platform.processor()


def main(argv=None):
    args = parse_args(argv)
    if args.study == 'list':
        for name, (about, _, _) in STUDIES.items():
            print(f'{name:<16} {about}')
        print(f"{'all':<16} every study above but tuning and fast")
        return 0
    if args.study is not None and args.study != 'all' and args.study not in STUDIES:
        fail(f"--study {args.study}: no such study; choose from list, all, {', '.join(STUDIES)}")
    if args.fast and args.study not in (None, 'fast'):
        fail('--fast runs its own study (the fast model); drop --study or --fast')
    if args.study == 'all' and args.json and not os.path.isdir(args.json):
        fail(f'--json {args.json}: with --study all give an existing folder; each study writes '
             f'NAME.json there (default report/results/)')
    if args.json and args.study != 'all':
        check_json_path(args.json)
    settings = resolve_settings(args)
    if args.bench:
        return bench(args, settings)
    names = ([n for n in STUDIES if n not in ('tuning', 'fast')] if args.study == 'all'
             else ['fast' if args.fast else args.study or 'variants'])
    ok = True
    for name in names:
        json_path = args.json
        if args.study == 'all' or (json_path is None and args.study is not None):
            folder = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               'report', 'results')
            json_path = os.path.join(folder, f'{name}.json')
            check_json_path(json_path)
        ok = run_study(name, args, settings, json_path) and ok
        print()
    return 0 if ok else 1


######################################################################
# Benchmark: every time is measured here, side by side, on the same data and seeds.

# The fixed reference: a LeNet-size ws+aux net (about 75k parameters) in the plain fp32 loop,
# 25 epochs, batch 100, Adam, with torch's default threads: what a course submission runs.
REFERENCE = row('reference', 'LeNet-size ws+aux, plain fp32 loop', width=2, aux_weight=1.0, **COURSE)


def timed_run(config, settings, k, channels_last, bf16):
    return run_one((dict(config, bf16=bf16), dict(settings, round=k, channels_last=channels_last, bf16=bf16,
                                 keep_mistakes=False)))


def bench(args, settings):
    rounds = args.rounds or 3
    cores = os.cpu_count() or 1
    settings = dict(settings, rounds=rounds, validation=False, curves=False)
    check_data(settings['data_dir'], test=True)
    rows = variants() + [row('fast', 'FAST', **FAST)]
    for r in rows + [REFERENCE]:
        r.update({k: v for k, v in {'nb_epochs': args.epochs, 'mini_batch_size': args.batch_size,
                                    'lr': args.lr}.items() if v is not None})
    paths = [('fp32', False, False), ('channels-last', True, False)]
    if settings['bf16']:
        paths.append(('channels-last+bf16', True, True))
    print(f'benchmark: {rounds} rounds per model and path, one process; cpu: {cpu_name()}, '
          f'{cores} cores, torch {torch.__version__}, native bf16 {"yes" if train.native_bf16() else "no"}',
          flush=True)
    torch.set_num_threads(cores)
    warm_up(dict(settings, threads=cores))
    ref = [timed_run(REFERENCE, settings, k, False, False) for k in range(rounds)]
    ref_seconds = sum(r['seconds'] + r['eval_seconds'] for r in ref) / rounds
    print(f"reference run ({models.nb_parameters(build_model(REFERENCE)):,} parameters, "
          f"{REFERENCE['nb_epochs']} epochs, fp32, {cores} threads): {ref_seconds:.2f} s, "
          f"test error {sum(r['test_error'] for r in ref) / rounds:.2f} %", flush=True)
    # Each run of a study runs in a worker with one thread: time the models the same way.
    torch.set_num_threads(settings['threads'])
    report = []
    print(f"\n{'model':<8} {'path':<19} {'train s':>8} {'eval s':>7} {'x ref':>6} {'speed-up':>8} "
          f"{'test err %':>10} {'vs fp32 (pp, 95% CI)':>24}")
    for config in rows:
        runs = {name: [timed_run(config, settings, k, cl, bf) for k in range(rounds)]
                for name, cl, bf in paths}
        base = None
        for name, cl, bf in paths:
            s = summarize(runs[name])
            seconds = s['seconds']['mean'] + s['eval_seconds']['mean']
            base = base or seconds
            diff = paired_difference(runs[name], runs['fp32']) if name != 'fp32' else None
            vs = f"{diff['mean']:+.2f} [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]" if diff else ''
            print(f"{config['name']:<8} {name:<19} {s['seconds']['mean']:>8.2f} "
                  f"{s['eval_seconds']['mean']:>7.2f} {seconds / ref_seconds:>6.2f} "
                  f"{base / seconds:>7.2f}x {s['test_error']['mean']:>10.2f} {vs:>24}", flush=True)
            report.append(dict(model=config['name'], path=name, channels_last=cl, bf16=bf,
                               seconds=seconds, summary=s, times_reference=seconds / ref_seconds,
                               speedup_vs_fp32=base / seconds, paired_vs_fp32=diff,
                               runs=runs[name]))
    parallel = bench_parallel(rows[3], settings, cores)
    result = dict(schema=1, study='bench', complete=True,
                  command=' '.join(['python', 'test.py'] + sys.argv[1:]), errors_in='percent',
                  settings={k: v for k, v in settings.items() if k != 'verbose'},
                  environment=dict(environment(), native_bf16=train.native_bf16()),
                  reference=dict(config=public_config(REFERENCE), seconds=ref_seconds, runs=ref),
                  models=report, parallel=parallel)
    if args.json:
        write_json(args.json, result)
        print(f'results in {args.json}')
    return 0


def bench_parallel(config, settings, cores):
    """Wall time of the same runs in one process with all threads and in one-thread workers."""
    n = 6 * cores  # enough runs that starting the workers is not the whole story
    tasks = [(config, dict(settings, round=k, keep_mistakes=False)) for k in range(n)]
    out = {}
    for name, workers, threads in (('1 process', 1, cores), (f'{cores} workers', cores, 1)):
        results = []
        start = time.perf_counter()
        run_tasks(tasks, dict(settings, workers=workers, threads=threads), results.append)
        out[name] = dict(workers=workers, threads=threads, wall_seconds=time.perf_counter() - start,
                         test_errors=[r['test_error'] for r in sorted(results, key=lambda r: r['round'])])
    same = len({tuple(v['test_errors']) for v in out.values()}) == 1
    # Worker processes change nothing, but another thread count sums floats in another order.
    why = '' if same or cores == 1 else ' (other thread count: sums in another order)'
    print(f"\n{n} runs of {config['name']}: " + ', '.join(
        f"{name} x {v['threads']} thread(s) {v['wall_seconds']:.1f} s" for name, v in out.items())
        + f"; same errors: {'yes' if same else 'no'}{why}")
    return out


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # outside a study's rounds (loading, estimating, benchmarking)
        print('\ninterrupted', file=sys.stderr)
        sys.exit(130)
