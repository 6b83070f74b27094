"""Shared by the tests: paths, the project's modules, and a way to run test.py as a user would."""
import os
import signal
import subprocess
import sys
import threading
from unittest import mock

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dlc_practical_prologue as prologue  # noqa: E402,F401  (the modules the tests import from here)
import models  # noqa: E402,F401
import train  # noqa: E402,F401
from study import cli, provenance, reproduce, rounds, runner, studies, summary  # noqa: E402,F401
import test as entry  # noqa: E402  (the project's test.py: ROOT comes first on the path)

assert os.path.dirname(os.path.abspath(entry.__file__)) == ROOT, \
    f'imported {entry.__file__} instead of the project\'s test.py'

# Every study, and what the research command line knows of test.py.
STUDIES = studies.registry()
PROJECT = cli.project_of(STUDIES, entry.row, entry.HYP)

# Tests that need MNIST read it where the project does: $PYTORCH_DATA_DIR, else ./data.
DATA_DIR = prologue.data_root()
_RAW = prologue.raw_dir(DATA_DIR)
_MISSING = [name for name in prologue.FILES if not os.path.exists(os.path.join(_RAW, name))]
if _MISSING:  # those tests then fail (never skip): say why once, before their tracebacks
    print(f'tests: MNIST is not in {_RAW} (missing {", ".join(_MISSING)}), so '
          'the tests that read it will fail: set PYTORCH_DATA_DIR to a folder holding '
          'mnist/MNIST/raw/, or run `python test.py` once to fetch it into ./data', file=sys.stderr)


# The machine of the tests that call runner directly: this CPU, MNIST where the tests read it.
MACHINE = runner.Machine(data_dir=DATA_DIR, allow_bf16=train.native_bf16())


def round_pairs(cfg, seed, round_index, validation=False, data_dir=None):
    """The six raw tensors of a round, as test.run_round draws them."""
    generator = torch.Generator().manual_seed(entry.seed_for(seed, round_index, 'data'))
    if validation:
        return prologue.generate_validation_sets(cfg['nb_pairs'], round_index % 4, generator,
                                                 data_dir or DATA_DIR)
    return prologue.generate_pair_sets(cfg['nb_pairs'], generator=generator,
                                       data_dir=data_dir or DATA_DIR, nb_test=cfg['nb_test_pairs'])


def other_test_pairs(change):
    """A stand-in for the course helper that hands the round the same training pairs and the
    test pairs that change(pairs, real helper) makes."""
    real = prologue.generate_pair_sets

    def helper(nb, generator=None, seed=None, data_dir=None, nb_test=None, quiet=False):
        pairs = real(nb, generator=generator, seed=seed, data_dir=data_dir, nb_test=nb_test)
        return change(pairs, lambda s: real(nb, seed=s, data_dir=data_dir, nb_test=nb_test))
    return helper


def torch_1_4_randperm():
    """A patch of torch.randperm that refuses generator=None, as torch 1.4 does (its message)."""
    real = torch.randperm

    def randperm(*args, **kwargs):
        if 'generator' in kwargs and kwargs['generator'] is None:
            raise TypeError('randperm() received an invalid combination of arguments - got '
                            '(int, generator=NoneType)')
        return real(*args, **kwargs)
    return mock.patch('torch.randperm', randperm)


def config(name='t', **overrides):
    """A full row config: test.py's defaults with overrides."""
    return entry.row(name, 'a test row', **overrides)


def run_cli(*args, env=None, timeout=600):
    """Runs `python test.py ARGS` in the project folder; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, 'test.py'), *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def interrupt(command, cwd, after, env=None):
    """Runs command, sends Ctrl-C (SIGINT) once it prints a line starting with `after`; returns
    (exit status, stdout, stderr). Hang guards, not timings: a run that never prints such a
    line, or never ends, is killed and fails the test that asked."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        watchdog = threading.Timer(600, proc.kill)
        watchdog.start()
        for line in proc.stdout:
            if line.startswith(after):
                break
        watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
