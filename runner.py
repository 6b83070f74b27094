"""Running a study: one round of one row (seeds, pairs, model, training, evaluation), the worker
processes that run many rounds at once, and a whole study printed and saved as results arrive.

Every round draws its pairs, initial weights and training randomness from seeds derived from
(seed, round): round r of every row sees the same pairs, and the same seed gives the same numbers.
"""
import ctypes
import functools
import hashlib
import multiprocessing
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass

import torch

import dlc_practical_prologue as prologue
import models
import provenance
import summary
import train

# The settings that belong to the pair net or to the Siamese net only: a row's results file
# records those of its own net.
SIAMESE_KEYS = ('share_weights', 'backbone', 'width', 'head', 'aux_weight', 're_pair')
PAIRNET_KEYS = ('kind', 'depth', 'hidden')


@dataclass(frozen=True)
class Machine:
    """How runs execute. Only the thread count and the fast paths can change the numbers."""
    device: str = 'cpu'
    workers: int = 1
    threads: int = 1
    channels_last: bool = True
    allow_bf16: bool = False    # bfloat16 autocast allowed here (native on this CPU, not --no_bf16)
    data_dir: str = None
    verbose: bool = False


@dataclass(frozen=True)
class Job:
    """One row for one round."""
    config: dict
    seed: int
    round: int
    validation: bool = False
    curves: bool = False
    keep_mistakes: bool = False


######################################################################
# One round.

def seed_for(*keys):
    """A 63-bit seed from (base seed, round, purpose): independent streams, stable everywhere."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], 'little') >> 1


def digest(*tensors):
    """12 hex digits of the tensors' exact contents: which pairs and initial weights a run
    used, checkable across runs and machines."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return h.hexdigest()[:12]


def build_model(config):
    if config['net'] == 'pairnet':
        return models.PairNet(config['kind'], config['depth'], config['hidden'],
                              config['batch_norm'], config['dropout'])
    return models.SiameseNet(config['share_weights'], config['backbone'], config['head'],
                             config['batch_norm'], config['dropout'], config['width'])


def to_machine(model, machine):
    model = model.to(machine.device)
    return model.to(memory_format=torch.channels_last) if machine.channels_last else model


def load_pairs(config, data_seed, validation, round, data_dir):
    """The six course tensors of one round. With validation, the 'test' tensors are a held-out
    quarter of the training pairs and no test pair is ever drawn."""
    generator = torch.Generator().manual_seed(data_seed)
    if not validation:
        return prologue.generate_pair_sets(config['nb_pairs'], generator=generator,
                                           data_dir=data_dir, nb_test=config['nb_test_pairs'],
                                           quiet=True)
    input, target, classes = prologue.generate_split_pairs(
        config['nb_pairs'], 'train', generator, data_dir, quiet=True)
    # Round r holds out quarter r % 4 of its training pairs, so all of them serve in turn.
    held_out = torch.zeros(input.size(0), dtype=torch.bool)
    quarter = input.size(0) // 4
    start = (round % 4) * quarter
    held_out[start:start + quarter] = True
    return (input[~held_out], target[~held_out], classes[~held_out],
            input[held_out], target[held_out], classes[held_out])


def prepare_inputs(train_input, test_input, deskew):
    """Deskews each image on its own if asked, then standardizes both with the training
    statistics only: a test input never depends on the other test inputs."""
    if deskew:
        train_input, test_input = train.deskew(train_input), train.deskew(test_input)
    return train.standardize(train_input, test_input)


def run_one(job, machine):
    """Trains one row for one round and returns its figures (errors in %)."""
    config = job.config
    data_seed = seed_for(job.seed, job.round, 'data')
    pairs = load_pairs(config, data_seed, job.validation, job.round, machine.data_dir)
    train_input, train_target, train_classes, test_input, test_target, test_classes = pairs
    raw_test_input = test_input
    train_input, test_input = prepare_inputs(train_input, test_input, config['deskew'])
    device = torch.device(machine.device)
    train_input, train_target, train_classes, test_input, test_target, test_classes = (
        t.to(device) for t in (train_input, train_target, train_classes,
                               test_input, test_target, test_classes))
    torch.manual_seed(seed_for(job.seed, job.round, 'weights'))
    model = to_machine(build_model(config), machine)
    result = dict(name=config['name'], round=job.round, data_seed=data_seed,
                  pairs_digest=digest(*pairs), init_digest=digest(*model.state_dict().values()),
                  status='ok', nb_parameters=models.nb_parameters(model))
    curve = {'train_error': [], 'test_error': []}

    def record_epoch(epoch, model):
        for key, input, target in (('train_error', train_input, train_target),
                                   ('test_error', test_input, test_target)):
            curve[key].append(round(train.evaluate(model, input, target)['pair_error'], 2))
        if machine.verbose:
            print(f"epoch {config['name']} round={job.round} epoch={epoch + 1} "
                  f"train_error={curve['train_error'][-1]:.2f}", flush=True)

    bf16 = machine.allow_bf16 and config['bf16']
    start = time.perf_counter()
    try:
        losses = train.train_model(
            model, train_input, train_target, train_classes, nb_epochs=config['nb_epochs'],
            mini_batch_size=config['mini_batch_size'], lr=config['lr'],
            weight_decay=config['weight_decay'], aux_weight=config['aux_weight'],
            shift=config['shift'], re_pair=config['re_pair'], schedule=config['schedule'],
            generator=torch.Generator().manual_seed(seed_for(job.seed, job.round, 'train')),
            bf16=bf16, on_epoch=record_epoch if job.curves else None)
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
    has_digits = config['net'] == 'siamese' and (config['aux_weight'] > 0
                                                 or config['head'] == 'posterior')
    result.update(test_error=test['pair_error'], train_error=trained['pair_error'],
                  test_digit_error=test['digit_error'] if has_digits else None,
                  train_digit_error=trained['digit_error'] if has_digits else None)
    if job.curves:
        result['curve'] = curve
    if config['net'] == 'siamese' and config['aux_weight'] == 0 and config['head'] == 'posterior':
        # Without digit labels the digit outputs may still be digits, under some relabeling.
        result['matched_digit_error'] = matched_digit_error(test['digit_pred'], test_classes)
    if job.keep_mistakes:
        wrong = (test['pair_pred'] != test_target).nonzero().flatten()
        result['mistakes'] = [dict(index=i, classes=test_classes[i].tolist(),
                                   target=test_target[i].item(),
                                   predicted_digits=None if test['digit_pred'] is None
                                   else test['digit_pred'][i].tolist(),
                                   image=raw_test_input[i].round().int().tolist())
                              for i in wrong.tolist()]
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
# Many rounds: in worker processes or in this one, each result handed on as it finishes.

def warm_up(machine):
    """One tiny training step, so torch's one-time start-up cost (the first backward pass is
    slow) is not charged to the first run of a process."""
    torch.set_num_threads(machine.threads)
    model = to_machine(models.SiameseNet(), machine)
    x = torch.zeros(4, 2, 14, 14, device=machine.device)
    y = torch.zeros(4, dtype=torch.long, device=machine.device)
    train.train_model(model, x, y, y[:, None].repeat(1, 2), nb_epochs=1, aux_weight=1.0,
                      bf16=machine.allow_bf16)


def init_worker(machine):
    # Ctrl-C is handled by the parent, which terminates the pool and saves what finished.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up(machine)


def run_jobs(jobs, machine, on_result):
    if machine.workers <= 1:
        warm_up(machine)
        for job in jobs:
            on_result(run_one(job, machine))
        return
    # spawn, not fork: forking a process that already ran torch's thread pools can deadlock.
    with multiprocessing.get_context('spawn').Pool(machine.workers, init_worker,
                                                   (machine,)) as pool:
        for result in pool.imap_unordered(functools.partial(run_one, machine=machine), jobs):
            on_result(result)


######################################################################
# A study: every row for every round.

def check_data(data_dir, test):
    """Reads (or downloads) and checks MNIST once here, before any run or worker starts;
    raises prologue.DataError."""
    prologue.downsampled('train', data_dir)
    if test:
        prologue.downsampled('test', data_dir)


def row_config(config):
    """The settings that matter for this row (a baseline has no digit branch, and so on)."""
    drop = PAIRNET_KEYS if config['net'] == 'siamese' else SIAMESE_KEYS
    return {k: v for k, v in config.items() if k not in drop and k not in ('name', 'about')}


def run_study(study, rows, rounds, seed, machine, command):
    """Runs rows (the study's, maybe narrowed or overridden) for all rounds, printing a line per
    finished run and the table. Returns the results (`complete` is false after Ctrl-C)."""
    reference = study.reference if any(r['name'] == study.reference for r in rows) else rows[0]['name']
    jobs = [Job(r, seed, k, study.validation, study.curves, keep_mistakes=k == 0
                and r['name'] == study.mistakes_of)
            for k in range(rounds) for r in rows]  # round-major: an interruption keeps whole rounds
    print(f"study {study.name}: {study.about}")
    scored_on = ('scored on a held-out quarter of them' if study.validation
                 else f"{rows[0]['nb_test_pairs']} test pairs")
    print(f"  {len(rows)} rows x {rounds} rounds, {rows[0]['nb_pairs']} training pairs, {scored_on}, "
          f"seed {seed}, {machine.device}, {machine.workers} worker(s) x {machine.threads} "
          f"thread(s), channels-last {'on' if machine.channels_last else 'off'}, "
          f"bf16 {'on' if machine.allow_bf16 else 'off'}", flush=True)
    runs = {r['name']: [] for r in rows}
    started, wall, code = time.strftime('%Y-%m-%dT%H:%M:%S%z'), time.perf_counter(), provenance.code()

    def on_result(result):
        runs[result['name']].append(result)
        done = sum(map(len, runs.values()))
        head = f"run study={study.name} row={result['name']} round={result['round']}"
        if result['status'] != 'ok':
            print(f"{head} diverged done={done}/{len(jobs)}", flush=True)
            print(f"test.py: error: row {result['name']} round {result['round']}: "
                  f"{result['message']}; try a smaller --lr", file=sys.stderr, flush=True)
            return
        digit = result['test_digit_error']
        print(f"{head} {'valid' if study.validation else 'test'}_error={result['test_error']:.2f} "
              f"digit_error={'-' if digit is None else f'{digit:.2f}'} "
              f"train_error={result['train_error']:.2f} "
              f"seconds={result['seconds'] + result['eval_seconds']:.2f} "
              f"done={done}/{len(jobs)}", flush=True)

    complete = True
    try:
        run_jobs(jobs, machine, on_result)
    except KeyboardInterrupt:
        complete = False
        print('\ninterrupted: the table and results file keep the runs that finished',
              file=sys.stderr)
    out_rows = []
    for r in rows:
        done = sorted(runs[r['name']], key=lambda x: x['round'])
        entry = dict(name=r['name'], about=r['about'], config=row_config(r),
                     nb_parameters=models.nb_parameters(build_model(r)),
                     summary=summary.summarize(done), runs=done)
        if r['name'] != reference:
            entry['paired_vs_reference'] = summary.paired_difference(done, runs[reference])
        out_rows.append(entry)
    result = dict(
        schema=1, study=study.name, about=study.about, complete=complete, command=command,
        reference=reference, errors_in='percent',
        evaluated_on='held-out training pairs' if study.validation else 'test pairs',
        settings=dict(machine_settings(machine), seed=seed, rounds=rounds,
                      validation=study.validation, curves=study.curves),
        environment=environment(), code=code, started=started,
        wall_seconds=time.perf_counter() - wall, rows=out_rows)
    print()
    print(summary.text_table(result))
    print(f"\n{sum(len(v) for v in runs.values())} runs in {result['wall_seconds']:.1f} s wall time")
    return result


def machine_settings(machine):
    """What a results file records of how its runs executed."""
    return dict(device=machine.device, workers=machine.workers, threads=machine.threads,
                channels_last=machine.channels_last, allow_bf16=machine.allow_bf16,
                data_dir=machine.data_dir)


def environment():
    """The machine and software a results file comes from."""
    return dict(torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), system=platform.system(),
                cpu_count=os.cpu_count(), cpu=provenance.cpu_name(),
                cpu_flags=provenance.cpu_flags(), bf16_kind=provenance.bf16_kind(),
                native_bf16=train.native_bf16(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
