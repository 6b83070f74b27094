"""EE-559 Project 1: do weight sharing and an auxiliary digit loss help a Siamese network tell
whether the first of two 14x14 MNIST digits is lesser or equal to the second? It trains each row
of ROWS for 10 rounds on fresh pairs and weights (`run_round`), then prints the mean ± std table
and the paired differences. The package study/ builds on it."""
import argparse
import hashlib
import multiprocessing
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch without numpy
import torch  # noqa: E402

import dlc_practical_prologue as prologue  # noqa: E402
import models  # noqa: E402
import train  # noqa: E402

# ---- Hyperparameters: every row's defaults, which it overrides a few of (study/README.md). ----

HYP = dict(
    nb_pairs=1000,          # training pairs per round: the course's size
    nb_test_pairs=1000,     # test pairs per round, used only for the final figures
    net='siamese',          # 'siamese' (models.SiameseNet) or 'pairnet' (the 2-channel baseline)
    share_weights=True,     # one digit branch for both images (ws), or two (plain, aux)
    backbone='conv',        # the classic branch, near the course's 70k parameters with two branches
    width=1,                # channel multiplier of the digit branch
    head='mlp',             # the course's learned comparison; see models.HEADS
    batch_norm=True,        # tuning: + batch norm validates better than the course's recipe
    dropout=0.0,            # no dropout (the regularization study measures it)
    kind='fc', depth=2, hidden=128,  # pairnet only: 'fc' or 'conv', hidden layers, their units
    nb_epochs=25,           # fixed by hand, as the course's practicals (tuning: 40 within noise)
    mini_batch_size=50,     # fixed by hand (tuning: the course's 100 within noise)
    lr=1e-2,                # tuning: AdamW's peak rate of the one-cycle schedule
    weight_decay=0.0,       # plain AdamW steps
    schedule='onecycle',    # tuning: a rise, then a fall to zero, beats the course's constant 1e-3
    aux_weight=0.0,         # weight of the digit cross-entropy; 0 = no auxiliary loss
    re_pair=False,          # draw new pairs of the training digits each epoch (uses digit labels)
    shift=1,                # tuning: random shifts of up to one pixel while training help
    deskew=False,           # shear every digit upright first, training and test alike
    tta=False,              # average predictions over one-pixel shifts at evaluation
    bf16=False,             # bfloat16 autocast where the hardware has it natively (a speed path)
)

# What the aux variants add: the digit loss and nothing else (the course's question).
AUX = dict(aux_weight=1.0)
# The best and fast models, the rule's picks on held-out training pairs (`--choose`): the posterior
# head, twice the channels, digit-loss weight 3, 30 epochs, re-pairing, deskewing, tta; fast: less.
BEST = dict(width=2, head='posterior', aux_weight=3.0, deskew=True, nb_epochs=30, tta=True,
            re_pair=True, bf16=True)
FAST = dict(BEST, width=1, nb_epochs=8, tta=False, re_pair=False)

# The four variants: weight sharing x auxiliary loss (name: about, overrides).
VARIANTS = {'plain': ('two branches, pair loss only', dict(share_weights=False)),
            'ws': ('weight sharing, pair loss only', {}),
            'aux': ('two branches, pair + digit loss', dict(share_weights=False, **AUX)),
            'ws+aux': ('weight sharing, pair + digit loss', AUX)}


def row(name, about, **overrides):
    """One row of a study: HYP with the overrides, a name and a line saying what it is."""
    assert set(overrides) <= set(HYP), 'row {}: unknown settings {}'.format(name, overrides)
    return dict(HYP, name=name, about=about, **overrides)


ROWS = [row(name, about, **overrides) for name, (about, overrides) in VARIANTS.items()] + [
    # Weight sharing halves the parameters: two branches at about ws's size tell sharing from size.
    row('plain-small', 'two branches at about the size of ws', share_weights=False, width=0.52),
    row('ws+aux+re-pair', 'ws+aux, new pairs of the digits each epoch', re_pair=True, **AUX),
    row('best', 'the best model (BEST)', **BEST)]
# The study's family of differences, Bonferroni-adjusted: (a, b): a - b; (a, b, c, d): interaction.
CONTRASTS = [('ws', 'plain'), ('ws+aux', 'aux'), ('aux', 'plain'), ('ws+aux', 'ws'),
             ('ws+aux', 'aux', 'ws', 'plain'), ('ws', 'plain-small'),
             ('ws+aux+re-pair', 'ws+aux'), ('best', 'ws+aux')]


# ---- One round of one row. ----
def seed_for(*keys):
    """A 63-bit seed from (base seed, round, purpose): independent streams, stable everywhere."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], 'little') >> 1


def network(config, seed, round_index):
    """The row's network, with initial weights drawn from the round's seed."""
    torch.manual_seed(seed_for(seed, round_index, 'weights'))
    if config['net'] == 'pairnet':
        return models.PairNet(config['kind'], config['depth'], config['hidden'],
                              config['batch_norm'], config['dropout'])
    return models.SiameseNet(config['share_weights'], config['backbone'], config['head'],
                             config['batch_norm'], config['dropout'], config['width'])


def run_round(config, seed, round_index, device='cpu', data_dir=None, validation=False,
              channels_last=False, allow_bf16=False, on_epoch=None, keep=False):
    """One round of one row: its figures (errors in %) or status 'diverged'. validation: score a
    held-out quarter (r % 4) of the training pairs; on_epoch, keep: for the study package."""
    generator = torch.Generator().manual_seed(seed_for(seed, round_index, 'data'))
    if validation:
        pairs = prologue.generate_validation_sets(config['nb_pairs'], round_index % 4, generator,
                                                  data_dir)
    else:
        pairs = prologue.generate_pair_sets(config['nb_pairs'], generator=generator,
                                            data_dir=data_dir, nb_test=config['nb_test_pairs'])
    train_input, test_input = train.prepare_inputs(pairs[0], pairs[3], config['deskew'])
    train_input, train_target, train_classes, test_input, test_target, test_classes = (
        t.to(device) for t in (train_input, *pairs[1:3], test_input, *pairs[4:]))
    model = network(config, seed, round_index).to(device)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    bf16 = allow_bf16 and config['bf16']
    watch = on_epoch and (lambda epoch, model: on_epoch(
        epoch, model, train_input, train_target, test_input, test_target))
    start = time.perf_counter()
    try:
        losses = train.train_model(
            model, train_input, train_target, train_classes, bf16=bf16, on_epoch=watch,
            generator=torch.Generator().manual_seed(seed_for(seed, round_index, 'train')),
            **{k: config[k] for k in train.TRAINING})
    except train.TrainingDiverged as e:  # a result of the row, not an error
        return dict(name=config['name'], round=round_index, status='diverged', message=str(e))
    test = train.evaluate(model, test_input, test_target, test_classes, tta=config['tta'],
                          bf16=bf16)
    seconds = time.perf_counter() - start  # the one time of a run: training and test evaluation
    trained = train.evaluate(model, train_input, train_target, train_classes, tta=config['tta'],
                             bf16=bf16)
    # Digit outputs trained by nothing but a learned head need not be digits: no digit error.
    digits = config['net'] == 'siamese' and (config['aux_weight'] or config['head'] == 'posterior')
    result = dict(name=config['name'], round=round_index, status='ok', seconds=seconds,
                  nb_parameters=models.nb_parameters(model), final_loss=losses[-1],
                  test_error=test['pair_error'], train_error=trained['pair_error'],
                  test_digit_error=test['digit_error'] if digits else None,
                  train_digit_error=trained['digit_error'] if digits else None)
    if keep:  # for the study package's inspection of the mistakes
        result['kept'] = dict(pairs=pairs, model=model, test=test)
    return result


# ---- Many rounds in a few processes of one thread each: the same numbers with any number. ----
def worker_start():
    """A worker: one thread, and Ctrl-C left to the main process, which ends the workers."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_jobs(jobs, workers):
    """Each job's result in order, from `workers` spawned processes (a fork can deadlock torch)."""
    if workers == 1:
        torch.set_num_threads(1)
        yield from (run_round(*job[:3], **job[3]) for job in jobs)
        return
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context('spawn'), worker_start)
    futures = [pool.submit(run_round, *job[:3], **job[3]) for job in jobs]
    try:
        yield from (future.result() for future in futures)
    except BaseException:  # Ctrl-C or a failed round: end the running rounds now; the pool then
        for process in (getattr(pool, '_processes', None) or {}).values():  # fails the waiting
            process.terminate()
        raise
    finally:
        pool.shutdown()


# ---- The command line: test.py's own flags; a research flag hands it all to study/. ----
STUDY_FLAGS = ('--study', '--fast', '--variant', '--reproduce', '--bench', '--choose', '--save',
               '--json', '--epochs', '--batch_size', '--lr', '--pairs', '--test_pairs',
               '--validation', '--threads', '--verbose', '--no_channels_last')


def parse_args(argv):
    """test.py's own flags; a bad one ends the run with one line and status 2."""
    parser = argparse.ArgumentParser(prog='test.py', description=__doc__.split('?')[0] + '?',
                                     epilog='Research flags, which need the package study/ '
                                     '(study/README.md): ' + ', '.join(STUDY_FLAGS) + '.')
    add = parser.add_argument
    add('--rounds', type=int, help='rounds per row, fresh pairs and weights each (default 10)')
    add('--seed', type=int, default=0, help='base seed of every round (default 0)')
    add('--quick', action='store_true', help='smoke run: 1 round, 2 epochs, a fifth of the pairs')
    add('--data_dir', help='folder of mnist/MNIST/raw/ (default $PYTORCH_DATA_DIR, else ./data)')
    add('--device', default='auto', choices=('auto', 'cpu', 'cuda'), help='auto: cuda if any')
    add('--workers', type=int, help='processes running rounds (default: one per core)')
    add('--no_bf16', action='store_true', help='float32 even where bfloat16 is native')
    parser.error = lambda message: sys.exit(fail('{} (see --help)'.format(message), 2))
    args = parser.parse_args(argv)
    for name, low in (('rounds', 1), ('seed', 0), ('workers', 1)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            parser.error('argument --{}: {} is out of range: use a whole number >= {}'.format(
                name, getattr(args, name), low))
    args.rounds = args.rounds or (1 if args.quick else 10)
    return args


def research(argv):
    """A research flag: the package study/ runs the whole command line, where it is here."""
    flag = next(a.split('=')[0] for a in argv if a.split('=')[0] in STUDY_FLAGS)
    try:
        from study import cli
    except ImportError as e:
        return fail('{} needs the package study/, which is not here (python test.py runs '
                    'without it)'.format(flag) if e.name == 'study' else e, 2)
    return cli.main(argv)


def main(argv=None):
    """Runs the study; exit status 0, 1 data problem or failed round, 2 bad flags, 130 Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a.split('=')[0] in STUDY_FLAGS for a in argv):
        return research(argv)
    args = parse_args(argv)
    try:
        device = train.check_torch_and_device(args.device)
        prologue.downsampled('train', args.data_dir), prologue.downsampled('test', args.data_dir)
    except ValueError as e:
        return fail(e, 2)
    except prologue.DataError as e:  # MNIST is read and checked once, before any round starts
        return fail(e, 1)
    quick = dict(nb_epochs=2, nb_pairs=200, nb_test_pairs=200) if args.quick else {}
    rows = [dict(config, **quick) for config in ROWS]
    options = train.speed_paths(device, args.no_bf16, data_dir=args.data_dir)
    jobs = [(config, args.seed, k, options) for k in range(args.rounds) for config in rows]
    workers = min(len(jobs), args.workers or multiprocessing.cpu_count())
    workers = 1 if device == 'cuda' or sys.version_info < (3, 7) else workers  # 3.6: no spawn
    print('{} rows x {} rounds, seed {}, {} training and {} test pairs; {}, {} process(es) of one '
          'thread; speed paths: {}; torch {}'.format(
              len(rows), args.rounds, args.seed, rows[0]['nb_pairs'], rows[0]['nb_test_pairs'],
              device, workers, train.speed_path_names(options), torch.__version__), flush=True)
    runs, start, status = {config['name']: [] for config in rows}, time.perf_counter(), 0
    try:
        for result in run_jobs(jobs, workers):
            runs[result['name']].append(result)
            print(train.round_line(result), flush=True)
            status = status or int(result['status'] != 'ok')
    except KeyboardInterrupt:
        status = fail('interrupted: the table keeps the rounds that finished', 130)
    except Exception as e:  # a round that failed, or a worker process that died
        status = fail('a round failed ({}: {}); rerun with --workers 1 to see it alone'.format(
            type(e).__name__, (str(e).strip() or 'no message').split('\n')[0]), 1)
    print('\n'.join(train.table(rows, runs, CONTRASTS)))
    print('\n{} rounds in {:.1f} s'.format(sum(map(len, runs.values())),
                                          time.perf_counter() - start))
    return status


def fail(message, status):
    print('test.py: error: {}'.format(message), file=sys.stderr)
    return status


if __name__ == '__main__':
    sys.exit(main())
