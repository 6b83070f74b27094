"""The command line of test.py: flags checked before anything trains, the study or benchmark or
reproduction they ask for, results files, and exit statuses (0 done, 1 data problem, a diverged
or failed run or a reproduction that disagrees, 2 bad flags or an unsupported torch, 130 Ctrl-C).

test.py hands its command line here when it holds a research flag; the studies, `row` and the
defaults are test.py's, so every default here is test.py's. Results are written only when asked
(--save, --json), and only for a study that completed.
"""
import argparse
import dataclasses
import math
import os
import re
import shlex
import sys
import types

import torch

import dlc_practical_prologue as prologue
import test
import train
from study import bench, reproduce, runner, studies, summary, tuning

# The oldest torch that runs every path of this code (study/README.md, other torch versions).
MIN_TORCH = (1, 4)
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'report',
                       'results')


class UsageError(Exception):
    """A bad flag or combination of flags: exit status 2, nothing trained."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit status 2, nothing trained: bad flags are the user's typo, not a crash.
        print(f'{self.prog}: error: {message} (see --help)', file=sys.stderr)
        sys.exit(2)


def int_in_range(low, high=None):
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


def parse_args(argv, project):
    STUDIES, ALL, HYP = project.studies, project.all, project.hyp
    parser = Parser(
        prog='test.py', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Siamese networks with and without weight sharing and an auxiliary digit '
                    'loss, on pairs of 14x14 MNIST digits (EE-559 Project 1). With no flags: the '
                    'four variants, re-pairing and the best model, 10 rounds each, and a mean ± std table.',
        epilog='Data: MNIST is read from DATA_DIR/mnist/MNIST/raw/ (DATA_DIR: --data_dir, else '
               '$PYTORCH_DATA_DIR, else ./data) and downloaded there if missing.\n'
               'Exit status: 0 done, 1 data problem, a diverged run, a round or worker process '
               'that failed, or (--reproduce) a rerun that disagrees; 2 bad flags or a torch too '
               'old; 130 Ctrl-C.')
    what = parser.add_argument_group('what to run')
    what.add_argument('--study', default=None, metavar='NAME',
                      help="a study (default: variants, test.py's rows); 'list' names them, "
                           f"'all' runs all but {', '.join(n for n in STUDIES if n not in ALL)}")
    what.add_argument('--variant', default=None, metavar='NAMES',
                      help='comma-separated row names of the study to run (default: all rows)')
    what.add_argument('--quick', action='store_true',
                      help='smoke run in seconds: 1 round, 2 epochs, a fifth of the pairs')
    what.add_argument('--fast', action='store_true',
                      help='the same as --study fast: the fast model only, in about a second '
                           'per round')
    what.add_argument('--reproduce', nargs='?', const='variants', default=None, metavar='STUDY',
                      help='rerun a committed study (default variants; or a results file) with '
                           'the settings its file records, and say row by row whether the rerun '
                           'agrees: identical on the same machine kind, within noise elsewhere; '
                           'with --rounds, only its first rounds. Exit 0 agrees, 1 does not')
    what.add_argument('--bench', action='store_true',
                      help='time the default models and every fast path against a plain '
                           'fp32 loop and a fixed reference run; print the figures')
    what.add_argument('--choose', nargs='?', const='tuning', default=None, metavar='TUNING',
                      help="apply the selection rule (study/tuning.py, README) to the committed "
                           "tuning results (or a results file of the tuning study) and print "
                           "every candidate and the best and fast models it picks; trains nothing")
    settings = parser.add_argument_group('settings (defaults are the report\'s)')
    settings.add_argument('--rounds', type=int_in_range(1), default=None,
                          help='rounds per row, each with fresh pairs and weights (default 10)')
    settings.add_argument('--epochs', type=int_in_range(1), default=None,
                          help='epochs for every row (default: per row, see HYP in test.py)')
    settings.add_argument('--batch_size', type=int_in_range(2), default=None,
                          help=f"mini-batch size for every row (default {HYP['mini_batch_size']})")
    settings.add_argument('--lr', type=positive_float, default=None,
                          help='learning rate for every row (default: per row)')
    settings.add_argument('--pairs', type=int_in_range(1, prologue.SPLIT_SIZES['train'] // 2),
                          default=None,
                          help=f"training pairs per round (default {HYP['nb_pairs']})")
    settings.add_argument('--test_pairs', type=int_in_range(1, prologue.SPLIT_SIZES['test'] // 2),
                          default=None,
                          help=f"test pairs per round (default {HYP['nb_test_pairs']})")
    settings.add_argument('--seed', type=int_in_range(0), default=0,
                          help='base seed; round r of every row uses seeds derived from '
                               '(seed, r), so the same seed gives the same numbers (default 0)')
    settings.add_argument('--validation', action='store_true',
                          help='score on a held-out quarter of the training pairs instead of '
                               'the test pairs (for choosing settings)')
    io = parser.add_argument_group('input and output')
    io.add_argument('--data_dir', default=None,
                    help='folder holding mnist/MNIST/raw/ (default $PYTORCH_DATA_DIR, else ./data)')
    io.add_argument('--save', action='store_true',
                    help='write the results into report/results/NAME.json (replacing the '
                         'committed file), for a whole study as defined only: never with '
                         '--quick, --variant, --epochs, --batch_size, --lr, --pairs, '
                         '--test_pairs or --validation. Without --save or --json nothing is '
                         'written; a study stopped by Ctrl-C, a failed round or a diverged run '
                         'writes nothing either')
    io.add_argument('--json', default=None, metavar='PATH',
                    help='write the results there instead (with --study all: a folder)')
    io.add_argument('--verbose', action='store_true', help='print the training error after every epoch')
    speed = parser.add_argument_group('speed')
    speed.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                       help='auto: cuda if available, else cpu')
    speed.add_argument('--workers', type=int_in_range(1, 64), default=None,
                       help='parallel worker processes (default: one per core on cpu, 1 on cuda)')
    speed.add_argument('--threads', type=int_in_range(1, 256), default=None,
                       help='torch threads per worker (default: cores / workers)')
    speed.add_argument('--no_channels_last', action='store_true', help='keep the NCHW memory format')
    speed.add_argument('--no_bf16', action='store_true',
                       help='train in float32 even where the CPU has native bfloat16')
    args = parser.parse_args(argv)
    # How this run was asked for, as a shell would take it back: recorded in the results.
    args.command = shlex.join(['python', 'test.py'] + list(sys.argv[1:] if argv is None else argv))
    if args.fast:
        if args.study not in (None, 'fast'):
            parser.error('--fast runs its own study (the fast model); drop --study or --fast')
        args.study = 'fast'
    return args


def resolve_machine(args):
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA GPU is available here; use --device cpu or auto')
    device = args.device if args.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    cores = os.cpu_count() or 1
    workers = args.workers or (1 if device == 'cuda' else cores)
    if device == 'cuda' and workers > 1:
        raise UsageError('--workers > 1 is for cpu only; one process drives the GPU')
    allow_bf16 = not args.no_bf16 and train.native_bf16(device)
    return runner.Machine(device=device, workers=workers,
                          threads=args.threads or max(1, cores // workers),
                          channels_last=not args.no_channels_last, allow_bf16=allow_bf16,
                          data_dir=args.data_dir, verbose=args.verbose)


def rows_for(rows, args):
    """Rows with the command line's overrides, checked before anything trains."""
    overrides = {'nb_epochs': args.epochs, 'mini_batch_size': args.batch_size, 'lr': args.lr,
                 'nb_pairs': args.pairs, 'nb_test_pairs': args.test_pairs}
    rows = [dict(r) for r in rows]
    for r in rows:
        if args.quick:  # a fifth of the pairs keeps the sizes of data_size apart
            r.update(nb_epochs=2, nb_pairs=max(25, r['nb_pairs'] // 5),
                     nb_test_pairs=max(25, r['nb_test_pairs'] // 5))
        r.update({k: v for k, v in overrides.items() if v is not None})
    for r in rows:
        try:
            prologue.check_pair_count(r['nb_pairs'], 'train')
            prologue.check_pair_count(r['nb_test_pairs'], 'test')
        except ValueError as e:
            raise UsageError(str(e)) from None
        if r['nb_pairs'] < 8:
            raise UsageError(f"--pairs {r['nb_pairs']} is too few to train on (and to hold out a "
                             f"quarter); use at least 8")
    return rows


def select(rows, variant, study_name):
    """The rows named in --variant (comma-separated), or all rows."""
    if not variant:
        return rows
    wanted = variant.split(',')
    unknown = [w for w in wanted if w not in [r['name'] for r in rows]]
    if unknown:
        raise UsageError(f"--variant {','.join(unknown)}: no such row in study {study_name}; "
                         f"choose from {', '.join(r['name'] for r in rows)}")
    return [r for r in rows if r['name'] in wanted]


def changed(args):
    """The flags that make a run other than the study as committed (rounds and seed aside,
    which its results file records): such a run never replaces report/results/ by default."""
    return [flag for flag, value in (
        ('--quick', args.quick), ('--variant', args.variant), ('--epochs', args.epochs),
        ('--batch_size', args.batch_size), ('--lr', args.lr), ('--pairs', args.pairs),
        ('--test_pairs', args.test_pairs), ('--validation', args.validation)) if value]


def results_path(name, args):
    """Where a study's results go: --json (a folder with --study all), else with --save
    report/results/NAME.json (a whole, unchanged study only), else nowhere."""
    if args.json and args.save:
        raise UsageError('--save writes into report/results/, --json elsewhere: give one of them')
    if args.save and changed(args):
        raise UsageError(f"--save replaces report/results/{name}.json, so only with the whole "
                         f"study as defined: drop {', '.join(changed(args))}, or write elsewhere "
                         f"with --json PATH")
    if args.json:
        path = os.path.join(args.json, f'{name}.json') if args.study == 'all' else args.json
    elif args.save:
        path = os.path.join(RESULTS, f'{name}.json')
    else:
        path = None
    if path:
        check_json(path)
    return path


def check_json(path):
    try:
        summary.check_writable(path)
    except ValueError as e:
        raise UsageError(f'--json {e}') from None


def run(args, project):
    STUDIES, ALL, row = project.studies, project.all, project.row
    if args.study == 'list':
        for name, study in STUDIES.items():
            print(f'{name:<16} {study.about}')
        print(f"{'all':<16} every study above but {', '.join(n for n in STUDIES if n not in ALL)}")
        return 0
    if args.study not in (None, 'all') and args.study not in STUDIES:
        raise UsageError(f"--study {args.study}: no such study; choose from list, all, "
                         f"{', '.join(STUDIES)}")
    if args.study == 'all' and args.json and not os.path.isdir(args.json):
        raise UsageError(f'--json {args.json}: with --study all give an existing folder; each '
                         f'study writes NAME.json there (default report/results/)')
    if args.bench and args.study:
        raise UsageError('--bench times the variants and the fast model; drop --study')
    if args.reproduce:
        return reproduce_study(args, project)
    if args.choose:
        return choose(args.choose, project)
    command = args.command
    if args.bench:
        rows = select(rows_for(STUDIES['variants'].rows + STUDIES['fast'].rows, args),
                      args.variant, 'bench')
        reference = rows_for([studies.bench_reference(row)], args)[0]
        path = results_path('bench', args)
        machine = resolve_machine(args)
        runner.check_data(machine.data_dir, test=True)
        result = bench.run(rows, reference, machine, args.rounds or 3, args.seed, command,
                           parallel_row='ws+aux')
        save(path, result)
        return 0
    names = ALL if args.study == 'all' else [args.study or 'variants']
    plan = [(STUDIES[name], select(rows_for(STUDIES[name].rows, args), args.variant, name),
             results_path(name, args)) for name in names]
    machine = resolve_machine(args)
    status = 0
    for study, rows, path in plan:
        runner.check_data(machine.data_dir, test=not (study.validation or args.validation))
        if args.validation:
            study = dataclasses.replace(study, validation=True)
        result = runner.run_study(study, rows, args.rounds or (1 if args.quick else 10), args.seed,
                                  machine, command)
        diverged = any(r['summary']['diverged'] for r in result['rows'])
        if result['complete'] and not diverged and 'error' not in result:
            save(path, result)
        elif path:
            kept = f'{path} is as it was' if os.path.exists(path) else f'{path} was not written'
            print(f'the study did not complete: {kept}', file=sys.stderr)
        if 'error' in result:
            raise runner.WorkerError(result['error'])
        if not result['complete']:
            return 130
        if diverged:
            status = 1
        if study.name == 'tuning' and not changed(args):
            print('\n' + '\n'.join(tuning.report(result, chosen_settings(project))))
        print()
    return status


def save(path, result):
    """Writes the results to path, if there is one: a temporary file, renamed over the old one."""
    if path:
        summary.write_json(path, result)
        print(f'results in {path}')


def chosen_settings(project):
    """{'best': .., 'fast': ..}: the settings of test.py's best and fast models."""
    return dict(best=studies.row_config(next(r for r in project.studies['variants'].rows
                                             if r['name'] == 'best')),
                fast=studies.row_config(project.studies['fast'].rows[0]))


def choose(name, project):
    """--choose: the selection rule on a tuning results file, printed; trains nothing."""
    path = name if name.endswith('.json') else os.path.join(RESULTS, f'{name}.json')
    if not os.path.isfile(path):
        raise UsageError(f'--choose {name}: there is no results file {path}; run '
                         f'python test.py --study tuning --rounds 40 first')
    data = summary.load_json(path)
    if data.get('study') != 'tuning':
        raise UsageError(f"--choose {name}: {path} holds study {data.get('study')!r}, not tuning")
    print(f"{path}: {data['settings']['rounds']} rounds per candidate on held-out training pairs")
    print('\n'.join(tuning.report(data, chosen_settings(project))))
    return 0


def reproduce_study(args, project):
    """--reproduce: the committed study rerun as recorded, and the verdict as exit status."""
    fixed = [flag for flag, value in (('--study', args.study), ('--bench', args.bench),
                                      ('--save', args.save)) if value]
    fixed += changed(args)
    if fixed or args.seed:
        raise UsageError(f"--reproduce reruns the recorded settings; drop {', '.join(fixed) or '--seed'}")
    name = args.reproduce
    path = name if name.endswith('.json') else os.path.join(RESULTS, f'{name}.json')
    if not os.path.isfile(path):
        raise UsageError(f'--reproduce {name}: there is no results file {path}; give a study '
                         f'of report/results/ or the path of a results file')
    if args.json:
        check_json(args.json)
    machine = resolve_machine(args)
    try:
        plan = reproduce.plan(summary.load_json(path), project.row, project.studies, machine,
                              args.rounds)
    except ValueError as e:
        raise UsageError(f'--reproduce {name}: {path} cannot be rerun: {e}') from None
    runner.check_data(machine.data_dir, test=not plan.study.validation)
    rerun, lines = reproduce.run(path, plan, args.command)
    print('\n'.join([''] + lines))
    if args.json and rerun['complete'] and 'error' not in rerun:
        save(args.json, rerun)
    if 'error' in rerun:
        raise runner.WorkerError(rerun['error'])
    if not rerun['complete']:
        return 130
    return 0 if rerun['reproduction']['reproduced'] else 1


def main(argv):
    """test.py's command line with a research flag, over the studies; returns the exit status."""
    project = project_of(studies.registry(), test.row, test.HYP)
    args = parse_args(argv, project)
    try:
        check_torch()
        return run(args, project)
    except UsageError as e:
        return fail(e, 2)
    except prologue.DataError as e:
        return fail(e, 1)
    except train.TrainingDiverged as e:  # in the benchmark, where every run must train
        return fail(f'{e}; try a smaller --lr', 1)
    except runner.WorkerError as e:  # a round that failed, or a worker that could not run
        return fail(e, 1)
    except KeyboardInterrupt:  # outside a study's rounds (loading, benchmarking)
        print('\ninterrupted', file=sys.stderr)
        return 130


def project_of(studies_by_name, row, hyp):
    """What the command line needs of test.py, and the studies that --study all runs."""
    return types.SimpleNamespace(studies=studies_by_name, row=row, hyp=hyp,
                                 all=[n for n, s in studies_by_name.items() if s.in_all])


def fail(message, status):
    print(f'test.py: error: {message}', file=sys.stderr)
    return status


def check_torch():
    """Raises UsageError below the oldest torch this project runs on."""
    version = tuple(int(part) for part in re.findall(r'\d+', torch.__version__)[:2])
    if version < MIN_TORCH:
        raise UsageError(f"torch {torch.__version__} is installed; this project needs torch "
                         f"{'.'.join(map(str, MIN_TORCH))} or newer")
