"""Running a study: many rounds of test.run_round (through study/rounds.py), in worker processes
or in this one, each result printed as it finishes, then the study's table and its results.

Round r of every row draws the same pairs (test.run_round derives every seed from the base seed
and the round), so rows are compared on paired rounds; the same seed gives the same numbers.
"""
import multiprocessing
import os
import platform
import queue
import signal
import sys
import time
from dataclasses import dataclass

import torch

import dlc_practical_prologue as prologue
import models
import test
import train
from study import provenance, rounds, summary
from study.studies import row_config


@dataclass(frozen=True)
class Machine:
    """How runs execute. Only the thread count and the speed paths can change the numbers."""
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


class WorkerError(RuntimeError):
    """A round failed with an error, or a worker process could not start or died."""


def run_one(job, machine):
    """One row for one round on this machine: test.run_round with the job's flags."""
    return rounds.run_round(job.config, job.seed, job.round, device=machine.device,
                           channels_last=machine.channels_last, allow_bf16=machine.allow_bf16,
                           data_dir=machine.data_dir, validation=job.validation,
                           curves=job.curves, keep_mistakes=job.keep_mistakes,
                           verbose=machine.verbose)


######################################################################
# Many rounds: in worker processes or in this one, each result handed on as it finishes.

def warm_up(machine):
    """One tiny training step, so torch's one-time start-up cost (the first backward pass is
    slow) is not charged to the first run of a process."""
    torch.set_num_threads(machine.threads)
    model = models.SiameseNet().to(machine.device)
    if machine.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.zeros(4, 2, 14, 14, device=machine.device)
    y = torch.zeros(4, dtype=torch.long, device=machine.device)
    # A generator of its own: torch before 1.5 refuses generator=None in its random draws.
    train.train_model(model, x, y, y[:, None].repeat(1, 2), nb_epochs=1, aux_weight=1.0,
                      bf16=machine.allow_bf16, generator=torch.Generator().manual_seed(0))


def one_line(error):
    """An exception as one line: its type and its message's first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'no message'}"


def worker(machine, jobs, results):
    """A worker process: warms up, then runs jobs until it gets None. Every error, in the
    warm-up or in a round, goes back to the parent as one line, and the worker stops."""
    # Ctrl-C is handled by the parent, which stops the workers and saves what finished.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        warm_up(machine)
        for job in iter(lambda: next_job(jobs), None):
            results.put(('ok', run_one(job, machine)))
    except Exception as e:
        results.put(('error', one_line(e)))


def next_job(jobs):
    """The next job for a worker; None when there is none left or the parent process is gone
    (killed without the chance to stop its workers), so that no worker outlives its study."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            return jobs.get(timeout=1)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


def run_jobs(jobs, machine, on_result):
    """Runs every job and calls on_result(result) as each finishes. Raises WorkerError if a
    round fails or a worker cannot start or dies; the other workers are stopped at once."""
    if machine.workers <= 1:
        try:
            warm_up(machine)
            results = (run_one(job, machine) for job in jobs)
            for result in results:
                on_result(result)
        except Exception as e:
            raise WorkerError(one_line(e)) from e
        return
    # spawn, not fork: forking a process that already ran torch's thread pools can deadlock.
    # A queue of jobs and one of results, rather than multiprocessing.Pool: a Pool starts a
    # new worker whenever one fails to start, forever, and waits forever for a job whose
    # worker died.
    context = multiprocessing.get_context('spawn')
    todo, results = context.Queue(), context.Queue()
    todo.cancel_join_thread()  # jobs left over when we stop early are dropped, not waited for
    for job in jobs:
        todo.put(job)
    processes = [context.Process(target=worker, args=(machine, todo, results), daemon=True)
                 for _ in range(machine.workers)]
    for process in processes:
        todo.put(None)
        process.start()
    try:
        for _ in jobs:
            kind, payload = next_result(results, processes)
            if kind == 'error':
                raise WorkerError(payload)
            on_result(payload)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


def next_result(results, processes):
    """The next result from the workers; raises WorkerError if none can come any more."""
    while True:
        try:
            return results.get(timeout=1)
        except queue.Empty:
            pass
        died = [p.exitcode for p in processes if p.exitcode]
        if died or all(p.exitcode is not None for p in processes):
            try:  # a result sent just before its worker ended
                return results.get(timeout=1)
            except queue.Empty:
                pass
            raise WorkerError(f'a worker process ended without finishing its rounds (exit code '
                              f'{died[0] if died else 0}); rerun with --workers 1 to see why')


######################################################################
# A study: every row for every round.

def check_data(data_dir, test):
    """Reads (or downloads) and checks MNIST once here, before any run or worker starts;
    raises prologue.DataError."""
    prologue.downsampled('train', data_dir)
    if test:
        prologue.downsampled('test', data_dir)


def run_study(study, rows, rounds, seed, machine, command):
    """Runs rows (the study's, maybe narrowed or overridden) for all rounds, printing a line per
    finished run and the table. Returns the results: `complete` is false after Ctrl-C or a
    failed round, whose one-line message is then under `error`."""
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
              f"seconds={result['seconds']:.2f} "
              f"done={done}/{len(jobs)}", flush=True)

    complete, error = True, None
    try:
        run_jobs(jobs, machine, on_result)
    except KeyboardInterrupt:
        complete = False
        print('\ninterrupted: the table and results file keep the runs that finished',
              file=sys.stderr)
    except WorkerError as e:  # the caller reports it, after saving the runs that finished
        complete, error = False, str(e)
    out_rows = []
    for r in rows:
        done = sorted(runs[r['name']], key=lambda x: x['round'])
        entry = dict(name=r['name'], about=r['about'], config=row_config(r),
                     nb_parameters=models.nb_parameters(test.network(r, 0, 0)),
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
        wall_seconds=time.perf_counter() - wall, rows=out_rows,
        contrasts=summary.contrasts(runs, study.contrasts))
    if error:
        result['error'] = error
    print()
    print(summary.text_table(result))
    for line in summary.contrast_lines(result):
        print(line)
    print(f"\n{sum(len(v) for v in runs.values())} runs in {result['wall_seconds']:.1f} s wall time")
    return result


def machine_settings(machine):
    """What a results file records of how its runs executed."""
    return dict(device=machine.device, workers=machine.workers, threads=machine.threads,
                channels_last=machine.channels_last, allow_bf16=machine.allow_bf16,
                fused_adamw=train.fused_adamw(machine.device), data_dir=machine.data_dir)


def environment():
    """The machine and software a results file comes from."""
    return dict(torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), system=platform.system(),
                cpu_count=os.cpu_count(), cpu=provenance.cpu_name(),
                cpu_flags=provenance.cpu_flags(), bf16_kind=train.bf16_kind(),
                native_bf16=train.native_bf16(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
