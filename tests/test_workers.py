"""Worker processes: a failure in one ends the run in one line, none outlives its study, and
Ctrl-C keeps the finished rounds."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

from tests.common import ROOT, interrupt


class Workers(unittest.TestCase):
    """A failure inside a worker process ends the run with its one-line error and exit status 1:
    never a hang, never a worker started again and again. The failure is planted by a wrapper
    script that patches the project in every process it starts (a spawned worker imports the
    parent's main script first), so the project's own code runs unchanged."""

    PLANTS = {
        'start-up': 'runner.warm_up = fail',
        'round': 'test.run_round = fail',
        'death': 'test.run_round = lambda *args, **kwargs: os._exit(3)',
    }

    def run_planted(self, plant, *args):
        folder = tempfile.mkdtemp()
        try:
            script = os.path.join(folder, 'planted.py')
            with open(script, 'w') as f:
                f.write(f"""import os, sys
sys.path.insert(0, {ROOT!r})
import test
import train
from study import runner

def fail(*args, **kwargs):
    raise RuntimeError('planted failure')

{self.PLANTS[plant]}
import test
if __name__ == '__main__':
    sys.exit(test.main(sys.argv[1:]))
""")
            # A hang fails the test through the timeout instead of blocking the suite.
            done = subprocess.run([sys.executable, script, '--quick', '--variant', 'ws', '--rounds',
                                   '3', *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=300)
        finally:
            shutil.rmtree(folder)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertNotIn('Traceback', done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        return done.stderr

    def test_a_worker_that_fails_to_start_ends_the_run(self):
        for workers in ('2', '1'):
            with self.subTest(workers=workers):
                err = self.run_planted('start-up', '--workers', workers)
                self.assertIn('test.py: error: RuntimeError: planted failure', err)

    def test_a_round_that_fails_in_a_worker_ends_the_run(self):
        err = self.run_planted('round', '--workers', '2')
        self.assertIn('test.py: error: RuntimeError: planted failure', err)

    def test_a_worker_that_dies_ends_the_run(self):
        err = self.run_planted('death', '--workers', '2')
        self.assertIn('a worker process ended without finishing its rounds (exit code 3)', err)


class Orphans(unittest.TestCase):
    def test_workers_stop_when_their_study_is_killed(self):
        # A study killed outright (SIGKILL: no chance to stop its workers): each worker finishes
        # its round and exits instead of waiting forever for the next.
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'test.py'), '--variant', 'ws', '--rounds', '5000',
             '--pairs', '40', '--test_pairs', '25', '--epochs', '1', '--workers', '2'],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if line.startswith('run study=variants row=ws round='):
                    break
            workers = children(proc.pid)
            self.assertEqual(len(workers), 2)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # or a ResourceWarning between the suite's dots
        for _ in range(600):  # a hang guard, not a timing: 60 s for a one-epoch round to end
            if not any(alive(pid) for pid in workers):
                break
            threading.Event().wait(0.1)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.assertFalse(any(alive(pid) for pid in workers))


def children(pid):
    """The worker processes of pid (Linux /proc): its children that multiprocessing spawned,
    not its resource tracker."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                with open(f'/proc/{entry}/cmdline') as f:
                    command = f.read()
            except OSError:
                continue
            if int(fields[1]) == pid and 'spawn_main' in command:
                found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


class Interrupt(unittest.TestCase):
    """Ctrl-C during a study keeps the table of the finished rounds and writes nothing: no
    --json file, and a committed results file stays byte for byte as it was."""

    def test_ctrl_c_writes_no_json(self):
        # A study far too long to end by itself; Ctrl-C once a round has finished, so the signal
        # lands while rounds still run, in the workers' parent and in a single process alike.
        for workers in ('1', '2'):
            with self.subTest(workers=workers):
                folder = tempfile.mkdtemp()
                try:
                    path = os.path.join(folder, 'partial.json')
                    out, err = self.interrupt(ROOT, '--variant', 'ws', '--rounds', '5000',
                                              '--pairs', '40', '--test_pairs', '25', '--epochs',
                                              '1', '--workers', workers, '--json', path)
                    self.assertIn(f'the study did not complete: {path} was not written', err)
                    self.assertEqual(os.listdir(folder), [])
                finally:
                    shutil.rmtree(folder)

    def test_ctrl_c_leaves_the_committed_file_as_it_was(self):
        # In a scratch copy of the project, so that no test ever writes into this one.
        folder = tempfile.mkdtemp()
        try:
            copy = os.path.join(folder, 'project')
            shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
                '.git', '__pycache__', '*.pdf', 'figures', 'paper*', '.venv', 'venv', 'data'))
            committed = os.path.join(copy, 'report', 'results', 'heads.json')
            with open(committed, 'rb') as f:
                before = f.read()
            out, err = self.interrupt(copy, '--study', 'heads', '--save', '--workers', '2')
            self.assertIn(f'the study did not complete: {committed} is as it was', err)
            with open(committed, 'rb') as f:
                self.assertEqual(f.read(), before)
            self.assertEqual(sorted(os.listdir(os.path.dirname(committed))),
                             sorted(os.listdir(os.path.join(ROOT, 'report', 'results'))))
        finally:
            shutil.rmtree(folder)

    def interrupt(self, root, *args):
        status, out, err = interrupt([sys.executable, os.path.join(root, 'test.py'), *args,
                                      '--threads', '1'], root, 'run study=')
        self.assertEqual(status, 130, err)
        self.assertNotIn('Traceback', err)
        self.assertIn('interrupted', err)
        self.assertIn('test error %', out)
        return out, err


if __name__ == '__main__':
    unittest.main()
