"""Shared by the tests: the project on the path, where MNIST is, and helpers that run the
commands as a user would. Tests that read MNIST fail (never skip) without it; it is said once."""
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

sys.dont_write_bytecode = True  # no __pycache__ folders left behind, here or in the commands run
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dlc_practical_prologue as prologue  # noqa: E402
import test as entry  # noqa: E402  (the project's test.py)

DATA_DIR = os.environ.get('PYTORCH_DATA_DIR') or os.path.join(ROOT, 'data')
RAW = os.path.join(DATA_DIR, 'mnist', 'MNIST', 'raw')
HAVE_MNIST = all(os.path.exists(os.path.join(RAW, n)) or os.path.exists(os.path.join(RAW, n + '.gz'))
                 for n in prologue.FILES)


def pytest_report_header(config):
    return 'MNIST from {}; the suite takes about 2 minutes on 2 cores'.format(RAW)


def pytest_configure(config):
    if not HAVE_MNIST:  # said once, instead of a traceback per test
        raise pytest.UsageError('MNIST is not in {}: set PYTORCH_DATA_DIR to the folder holding '
                    'mnist/MNIST/raw/ (python test.py downloads it into ./data)'.format(RAW))


def config(name='t', **overrides):
    """A full row: test.py's defaults with the overrides."""
    return entry.row(name, 'a test row', **overrides)


def command(args, cwd=ROOT, env=None, timeout=600):
    """Runs `python ARGS` in cwd with MNIST where the tests read it."""
    env = dict(os.environ, PYTORCH_DATA_DIR=DATA_DIR, PYTHONDONTWRITEBYTECODE='1', **(env or {}))
    return subprocess.run([sys.executable] + list(args), cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def interrupt(args, cwd=ROOT, after='row='):
    """Runs `python ARGS`, sends Ctrl-C once it prints a line starting with `after`; returns
    (exit status, stdout, stderr). A run that never prints it is killed (a hang guard)."""
    proc = subprocess.Popen([sys.executable] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTORCH_DATA_DIR=DATA_DIR,
                                     PYTHONDONTWRITEBYTECODE='1'))
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith(after):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def torch_1_4_randperm(monkeypatch):
    """torch.randperm refusing generator=None, as torch 1.4 does."""
    real = torch.randperm

    def randperm(*args, **kwargs):
        if 'generator' in kwargs and kwargs['generator'] is None:
            raise TypeError('randperm() received an invalid combination of arguments')
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, 'randperm', randperm)
