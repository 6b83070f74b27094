"""python -m study bench: how long each model of test.py trains, one thread, on its speed path
(channels-last) and without it, with the test error of both on the same rounds; then the same
runs in one process and in one worker per core. It prints; it chooses nothing."""
import multiprocessing
import time

import torch

import test
import train
from study import runner, studies, tuning


class Diverged(RuntimeError):
    """A timed run diverged: it has no time to compare."""


def timed(config, rounds, seed, device, data_dir, channels_last):
    runs = list(test.run_jobs([(config, seed, k, dict(device=device, data_dir=data_dir,
                                                      channels_last=channels_last))
                               for k in range(rounds)], 1))
    bad = [r for r in runs if r['status'] != 'ok']
    if bad:
        raise Diverged('row {} diverged in the benchmark: {}'.format(config['name'],
                                                                     bad[0]['message']))
    return runs


def run(rounds, seed, device, data_dir, path):
    rows = test.ROWS + [test.row('fast', 'the fast model', **test.FAST),
                        test.row('course', "the course's recipe, ws+aux", aux_weight=1.0,
                                 **tuning.COURSE)]
    timed(rows[0], 1, seed, device, data_dir, True)  # torch's one-time start-up, not timed
    print('benchmark: {} rounds per model and path, one thread; {}, torch {}'.format(
        rounds, runner.environment()['cpu'], torch.__version__))
    print('{:<16} {:>8} {:>10} {:>11} {:>12} {:>24}'.format(
        'model', 'params', 's / run', 's / epoch', 'test error %', 'NCHW: s / run, error diff'))
    models = []
    for config in rows:
        fast, plain = (timed(config, rounds, seed, device, data_dir, cl) for cl in (True, False))
        seconds = [sum(r['seconds'] for r in runs) / rounds for runs in (fast, plain)]
        diffs = [a['test_error'] - b['test_error'] for a, b in zip(fast, plain)]
        print('{:<16} {:>8,} {:>10.2f} {:>11.3f} {:>12} {:>10.2f}, {}'.format(
            config['name'], fast[0]['nb_parameters'], seconds[0],
            seconds[0] / config['nb_epochs'], train.pm([r['test_error'] for r in fast]),
            seconds[1], train.signed(sum(diffs) / rounds)), flush=True)
        models.append(dict(name=config['name'], config=studies.row_config(config),
                           seconds=seconds[0], seconds_per_epoch=seconds[0] / config['nb_epochs'],
                           seconds_nchw=seconds[1], runs=fast, runs_nchw=plain))
    # Worker processes change nothing but the wall time: each round runs alone in one thread.
    cores = multiprocessing.cpu_count()
    jobs = [(test.ROWS[3], seed, k, dict(device=device, data_dir=data_dir, channels_last=True))
            for k in range(2 * cores)]
    wall = {}
    for workers in (1, cores):
        start = time.perf_counter()
        errors = [r['test_error'] for r in test.run_jobs(jobs, workers)]
        wall[workers] = dict(seconds=time.perf_counter() - start, test_errors=errors)
    print('{} runs of ws+aux: {}; same errors: {}'.format(len(jobs), ', '.join(
        '{} process(es) {:.1f} s'.format(w, v['seconds']) for w, v in wall.items()),
        'yes' if len({tuple(v['test_errors']) for v in wall.values()}) == 1 else 'no'))
    if path:
        runner.write_json(path, dict(study='bench', complete=True, rounds=rounds, seed=seed,
                                     device=device, environment=runner.environment(),
                                     code=runner.code(), models=models, parallel=wall))
        print('results in ' + path)
    return 0
