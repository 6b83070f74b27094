"""python -m study NAME: runs a study of the paper and prints its table (study/README.md).

Its flags are test.py's (whose defaults it takes) and its own: --save, --json, --variant,
--reproduce. Results are written only when asked, whole, and only for a complete study.
"""
import argparse
import json
import os
import sys

import dlc_practical_prologue as prologue
import test
from study import bench, reproduce, runner, studies, tuning

RESULTS = os.path.join(runner.ROOT, 'report', 'results')


class UsageError(Exception):
    """Bad flags: exit status 2, nothing trained."""


def parse_args(argv, registry):
    parser = argparse.ArgumentParser(
        prog='python -m study', description=__doc__.split('\n')[0],
        epilog="NAME: a study ({}); 'all': every study on test pairs, as the paper ran them; "
               "'list': the studies; 'choose': the tuning rule's picks from the committed tuning "
               "results (trains nothing); 'bench': times every model. Exit status: 0 done (with "
               "--reproduce: reproduced), 1 a data problem, a failed or diverged round or a "
               "reproduction that disagrees, 2 bad flags, 130 Ctrl-C.".format(', '.join(registry)))
    parser.add_argument('name', metavar='NAME')
    test.add_flags(parser)
    parser.set_defaults(seed=None)
    parser.add_argument('--variant', metavar='NAMES', help='comma-separated rows of the study '
                        '(default: all)')
    parser.add_argument('--save', action='store_true', help='write report/results/NAME.json, '
                        'for the study as declared only (its seed and rounds, every row); with '
                        "'all', each study as it completes")
    parser.add_argument('--json', metavar='PATH', help='write the results there instead (with '
                        "'all': into that folder)")
    parser.add_argument('--reproduce', action='store_true', help='rerun the committed '
                        'report/results/NAME.json as it records and say whether it agrees '
                        '(with --rounds: its first rounds only; --json: the comparison there)')
    return parser.parse_args(argv)


def rows_of(study, args):
    rows = [test.quick(r) if args.quick else r for r in study.rows]
    if args.variant:
        wanted = args.variant.split(',')
        unknown = set(wanted) - {r['name'] for r in rows}
        if unknown:
            raise UsageError('--variant {}: no such row in {}; choose from {}'.format(
                ','.join(sorted(unknown)), study.name, ', '.join(r['name'] for r in rows)))
        rows = [r for r in rows if r['name'] in wanted]
    return rows


def target(study, args):
    """Where the results go: --json, or report/results/NAME.json with --save, or nowhere."""
    declared = (args.seed in (None, study.seed) and args.rounds in (None, study.rounds)
                and not args.quick and not args.variant)
    if args.save and args.json:
        raise UsageError('--save writes report/results/, --json elsewhere: give one of them')
    if args.save and not declared:
        raise UsageError('--save replaces report/results/{}.json, the study as declared (seed '
                         '{}, {} rounds, every row): drop --seed, --rounds, --quick and '
                         '--variant, or write elsewhere with --json PATH'.format(
                             study.name, study.seed, study.rounds))
    folder = args.json if args.name == 'all' else None  # all: --json names a folder
    path = os.path.join(folder or RESULTS, study.name + '.json') if args.save or folder else \
        args.json
    writable(path)
    return path


def writable(path):
    if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise UsageError('{}: its folder does not exist or is not writable'.format(path))


def run(args, registry):
    name = args.name
    if name == 'list':
        for study in registry.values():
            print('{:<16} {}'.format(study.name, study.about))
        return 0
    if name == 'choose':
        settings = dict(best=studies.row_config(test.row('', '', **test.BEST)),
                        fast=studies.row_config(test.row('', '', **test.FAST)))
        data = runner.load_json(os.path.join(RESULTS, 'tuning.json'))
        print('\n'.join(tuning.report(data, settings)))
        path = os.path.join(RESULTS, 'tuning_head.json')
        head = runner.load_json(path) if os.path.exists(path) else None
        print('head step: not run yet' if head is None else 'head step: the MLP head reads {}; '
              'test.py\'s head is {}'.format(
            'the probabilities' if tuning.head_verdict(head) == 'mlp-softmax' else 'the logits',
            test.HYP['head']))
        return 0
    if name not in registry and name not in ('all', 'bench'):
        raise UsageError('no study {!r}; choose from {}, all, list, choose, bench'.format(
            name, ', '.join(registry)))
    device, workers = test.machine(args)
    if args.reproduce:
        if name in ('all', 'bench') or args.save or args.seed is not None or args.variant or \
                args.quick:
            raise UsageError('--reproduce reruns one committed study as recorded: give its name '
                             'and no --save, --seed, --quick or --variant')
        path = os.path.join(RESULTS, name + '.json')
        writable(args.json)
        return reproduce.run(runner.load_json(path), registry[name], args.rounds, device,
                             workers, args.data_dir, args.json)
    if name == 'bench':
        if args.quick or args.variant:
            raise UsageError('bench times every model as it is: drop --quick and --variant')
        return bench.run(args.rounds or 3, test.SEED if args.seed is None else args.seed, device,
                         args.data_dir, target(studies.Study('bench', '', [], rounds=3), args))
    chosen = [s for s in registry.values() if s.in_all] if name == 'all' else [registry[name]]
    plan = [(s, rows_of(s, args), target(s, args)) for s in chosen]
    status = 0
    for study, rows, path in plan:
        test_pairs = not study.validation
        prologue.downsampled('train', args.data_dir)
        prologue.downsampled('test', args.data_dir) if test_pairs else None
        result = runner.run_study(study, rows, args.rounds or (1 if args.quick else study.rounds),
                                  study.seed if args.seed is None else args.seed, device,
                                  workers, args.data_dir)
        diverged = any(r['summary']['diverged'] for r in result['rows'])
        if path and result['complete'] and not diverged:
            runner.write_json(path, result)
            print('results in ' + path)
        if result['error']:  # one line: what stopped it, and that nothing was written
            return fail(result['error'] + ('; {} was not written'.format(path) if path else ''),
                        130 if result['error'].startswith('interrupted') else 1)
        if path and diverged:
            print('{} was not written: a round diverged'.format(path), file=sys.stderr)
        status = status or int(diverged)
    return status


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    registry = studies.registry()
    args = parse_args(argv, registry)
    try:
        return run(args, registry)
    except (prologue.DataError, OSError, json.JSONDecodeError, bench.Diverged) as e:
        return fail(e, 1)
    except (UsageError, ValueError) as e:
        return fail(e, 2)
    except KeyboardInterrupt:
        return fail('interrupted', 130)


def fail(message, status):
    return test.fail(message, status, prog='python -m study')


if __name__ == '__main__':
    sys.exit(main())
