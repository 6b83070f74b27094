"""The benchmark behind `python test.py --bench`: every time measured here, side by side, on the
same data and seeds, as a multiple of a fixed reference run; and the test error of each fast path
against the plain fp32 loop on the same rounds, so a speed-up never hides a loss of accuracy."""
import dataclasses
import os
import time

import torch

import train
from study import provenance, runner, studies, summary


def timed_runs(config, machine, rounds, seed, channels_last=False, bf16=False):
    """rounds runs of config with the given fast paths (bf16 here forces autocast on the row).
    Raises train.TrainingDiverged: a run that diverged has no time to compare."""
    machine = dataclasses.replace(machine, channels_last=channels_last, allow_bf16=bf16)
    runs = [runner.run_one(runner.Job(dict(config, bf16=bf16), seed, k), machine)
            for k in range(rounds)]
    for run in runs:
        if run['status'] != 'ok':
            raise train.TrainingDiverged(f"row {config['name']} round {run['round']}: "
                                         f"{run['message']}")
    return runs


def run(rows, reference, machine, rounds, seed, command, parallel_row):
    """Times the reference, then every row on every fast path; returns the results."""
    cores = os.cpu_count() or 1
    code = provenance.code()
    paths = [('fp32', False, False), ('channels-last', True, False)]
    if machine.allow_bf16:
        paths.append(('channels-last+bf16', True, True))
    print(f'benchmark: {rounds} rounds per model and path, one process; cpu: {provenance.cpu_name()}, '
          f'{cores} cores, torch {torch.__version__}, native bf16 '
          f'{"yes" if train.native_bf16(machine.device) else "no"}', flush=True)
    # The reference runs as a course submission would: one process, all of torch's threads.
    torch.set_num_threads(cores)
    runner.warm_up(dataclasses.replace(machine, threads=cores))
    ref = timed_runs(reference, machine, rounds, seed)
    ref_summary = summary.summarize(ref)
    ref_seconds = summary.run_seconds(ref_summary)
    print(f"reference run ({ref[0]['nb_parameters']:,} parameters, {reference['nb_epochs']} "
          f"epochs, fp32, {cores} threads): {ref_seconds:.2f} s, test error "
          f"{ref_summary['test_error']['mean']:.2f} %", flush=True)
    # Each run of a study runs in a worker with one thread: time the models the same way.
    torch.set_num_threads(machine.threads)
    report = []
    print(f"\n{'model':<8} {'path':<19} {'s / run':>8} {'x ref':>6} {'speed-up':>8} "
          f"{'test err %':>10} {'vs fp32 (pp, 95% CI)':>24}")
    for config in rows:
        runs = {name: timed_runs(config, machine, rounds, seed, cl, bf) for name, cl, bf in paths}
        base = None
        for name, cl, bf in paths:
            s = summary.summarize(runs[name])
            seconds = summary.run_seconds(s)
            base = base or seconds
            diff = summary.paired_difference(runs[name], runs['fp32']) if name != 'fp32' else None
            print(f"{config['name']:<8} {name:<19} {seconds:>8.2f} {seconds / ref_seconds:>6.2f} "
                  f"{base / seconds:>7.2f}x {s['test_error']['mean']:>10.2f} "
                  f"{summary.ci_text(diff) if diff else '':>24}", flush=True)
            report.append(dict(model=config['name'], config=studies.row_config(config), path=name,
                               channels_last=cl, bf16=bf,
                               seconds=seconds, summary=s, times_reference=seconds / ref_seconds,
                               speedup_vs_fp32=base / seconds, paired_vs_fp32=diff,
                               runs=runs[name]))
    # Worker processes are for the CPU; one process drives a GPU.
    parallel = [config for config in rows if config['name'] == parallel_row
                and machine.device == 'cpu']
    return dict(schema=1, study='bench', complete=True, command=command, errors_in='percent',
                settings=dict(runner.machine_settings(machine), seed=seed, rounds=rounds),
                environment=runner.environment(), code=code,
                reference=dict(config=studies.row_config(reference), seconds=ref_seconds, runs=ref),
                models=report,
                parallel=processes_against_threads(parallel[0], machine, seed, cores)
                if parallel else None)


def processes_against_threads(config, machine, seed, cores):
    """Wall time of the same runs in one process with all threads and in one-thread workers."""
    n = 6 * cores  # enough runs that starting the workers is not the whole story
    jobs = [runner.Job(config, seed, k) for k in range(n)]
    out = {}
    for name, workers, threads in (('1 process', 1, cores), (f'{cores} workers', cores, 1)):
        results = []
        start = time.perf_counter()
        runner.run_jobs(jobs, dataclasses.replace(machine, workers=workers, threads=threads),
                        results.append)
        out[name] = dict(workers=workers, threads=threads, wall_seconds=time.perf_counter() - start,
                         test_errors=[r['test_error'] for r in sorted(results, key=lambda r: r['round'])])
    same = len({tuple(v['test_errors']) for v in out.values()}) == 1
    # Worker processes change nothing, but another thread count sums floats in another order.
    why = '' if same or cores == 1 else ' (other thread count: sums in another order)'
    print(f"\n{n} runs of {config['name']}: " + ', '.join(
        f"{name} x {v['threads']} thread(s) {v['wall_seconds']:.1f} s" for name, v in out.items())
        + f"; same errors: {'yes' if same else 'no'}{why}")
    return out
