"""Running a study: test.run_round of every row and round in test.run_jobs' worker processes, with
what a results file records of each round, then test.py's table and the results."""
import ctypes
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

import models
import test
import train
from study.studies import row_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOUR_FILES = ('test.py', 'dlc_practical_prologue.py', 'models.py', 'train.py')


def digest(*tensors):
    """12 hex digits of the tensors' contents: which pairs and initial weights a run used."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return h.hexdigest()[:12]


def study_round(config, seed, k, curves=False, **options):
    """test.run_round, plus the digests of its pairs and initial weights, the errors after every
    epoch (curves) and, for a net trained without digit labels, the digit error after the best
    relabelling of its outputs."""
    init = digest(*test.network(config, seed, k).state_dict().values())
    curve = {'train_error': [], 'test_error': []}

    def record(epoch, model, train_input, train_target, test_input, test_target):
        for key, input, target in (('train_error', train_input, train_target),
                                   ('test_error', test_input, test_target)):
            curve[key].append(round(train.evaluate(model, input, target)['pair_error'], 2))
    result = test.run_round(config, seed, k, keep=True, on_epoch=record if curves else None,
                            **options)
    if result['status'] != 'ok':
        return result
    kept = result.pop('kept')
    result.update(init_digest=init, pairs_digest=digest(*kept['pairs']))
    if curves:
        result['curve'] = curve
    if config['net'] == 'siamese' and not config['aux_weight'] and config['head'] == 'posterior':
        result['matched_digit_error'] = matched_digit_error(kept['test']['digit_pred'].cpu(),
                                                            kept['pairs'][5])
    return result


def matched_digit_error(digit_pred, classes):
    """Digit error (%) after the best one-to-one relabelling of the ten outputs (exact, by
    dynamic programming over the subsets of digits)."""
    counts = [[0] * 10 for _ in range(10)]
    for p, t in zip(digit_pred.reshape(-1).tolist(), classes.reshape(-1).tolist()):
        counts[p][t] += 1
    best = {0: 0}  # mask of the digits given to outputs 0..k-1 -> most agreements
    for output in range(10):
        nxt = {}
        for mask, score in best.items():
            for digit in (d for d in range(10) if not mask >> d & 1):
                nxt[mask | 1 << digit] = max(nxt.get(mask | 1 << digit, -1),
                                             score + counts[output][digit])
        best = nxt
    return 100.0 * (1 - best[(1 << 10) - 1] / classes.numel())


def summarize(runs):
    """n finished rounds, how many diverged, and the mean and std of every figure."""
    ok = [r for r in runs if r['status'] == 'ok']
    out = dict(n=len(ok), diverged=len(runs) - len(ok))
    for key in ('test_error', 'test_digit_error', 'matched_digit_error', 'train_error',
                'seconds'):
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            mean, std = train.mean_std(values)
            out[key] = dict(mean=mean, std=std, min=min(values), max=max(values))
    return out


def run_study(study, rows, rounds, seed, device, workers, data_dir=None):
    """Every row for every round, printed as test.py prints them; returns the results, with
    `error` saying what stopped it early (Ctrl-C, a failed round), else None."""
    options = dict(device=device, data_dir=data_dir, validation=study.validation,
                   channels_last=hasattr(torch, 'channels_last'), curves=study.curves)
    print('study {}: {}\n  {} rows x {} rounds, seed {}, {}, {} worker(s) of one thread'.format(
        study.name, study.about, len(rows), rounds, seed, device, workers), flush=True)
    start = time.perf_counter()
    runs, error = test.run_rows(rows, seed, rounds, workers, options, study.contrasts,
                                study_round)
    wall = time.perf_counter() - start
    print('\n{} runs in {:.1f} s'.format(sum(map(len, runs.values())), wall))
    return dict(
        study=study.name, about=study.about, complete=error is None, error=error,
        command=' '.join(['python -m study'] + sys.argv[1:]),
        evaluated_on='held-out training pairs' if study.validation else 'test pairs',
        settings=dict(seed=seed, rounds=rounds, device=device, workers=workers, threads=1,
                      validation=study.validation, curves=study.curves),
        environment=environment(), code=code(), wall_seconds=wall,
        rows=[dict(name=r['name'], about=r['about'], config=row_config(r),
                   nb_parameters=models.nb_parameters(test.network(r, 0, 0)),
                   summary=summarize(runs[r['name']]), runs=runs[r['name']]) for r in rows],
        contrasts=train.family(runs, study.contrasts))


def environment():
    """The machine a results file comes from (its CPU decides which float sums a run makes)."""
    cpu = ''
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), '')
    return dict(torch=torch.__version__, python=platform.python_version(),
                cpu=cpu or platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def code():
    """The git commit, and whether the four files differ from it."""
    try:
        git = lambda *a: subprocess.run(['git', '-C', ROOT] + list(a), capture_output=True,
                                        text=True, timeout=10, check=True).stdout.strip()
        return dict(commit=git('rev-parse', 'HEAD'),
                    changed=bool(git('status', '--porcelain', '--', *FOUR_FILES)))
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path, data):
    """Whole or not at all: a temporary file in the same folder, renamed over the old one."""
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=1)
            f.write('\n')
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_json(path):
    """A results file; rows of older code record bf16=..., which was float32 wherever they ran."""
    with open(path) as f:
        data = json.load(f)
    for r in data.get('rows', []):
        r['config'].pop('bf16', None)
    return data
