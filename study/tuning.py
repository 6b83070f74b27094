"""The tuning studies and the rule that picks the best and fast models from them.

Every candidate is scored on held-out training pairs: each round trains on three quarters of its
1000 training pairs and scores on the fourth, 40 rounds, never drawing a test pair. Each
candidate changes one thing of the row it names (`vs`), so every step has a paired interval.

The rule, applied by `choose` to the committed results and written in study/README.md:
  1. a candidate is beaten when another candidate validates significantly better than it: the
     95 % interval of their paired difference (other - candidate) lies below zero;
  2. among the candidates that no other beats, take the cheapest, counting costs within 10 % of
     the cheapest as equal. The cost is a count, the same on every machine: the
     multiply-accumulates of the conv and linear layers in a run's training (a backward pass
     counted as two forward passes) and evaluation (`macs`). Measured seconds are never used;
  3. among those, the lowest mean validation error.
The best model is the rule applied to every candidate; the fast model is the rule applied to the
candidates that cost at most what the course's own recipe costs (`course/ws+aux`).

The head step (`tuning_head`, declared before it ran, after the rest): the MLP head on the digit
probabilities instead of the logits, in each of the four variants. HYP's head follows `head_verdict`.
"""
import functools

import torch

import test
import train

# The course's settings, the starting point of the tuning steps and the benchmark's reference.
# Every candidate names its head: the tuning study ran with the MLP head on the logits.
COURSE = dict(batch_norm=False, nb_epochs=25, mini_batch_size=100, lr=1e-3, schedule='constant',
              shift=0, head='mlp')
# The earlier best model (W): the posterior head on a branch twice as wide, 30 epochs,
# test-time moves, deskewed digits, digit-loss weight 3; and the earlier fast model.
W = dict(head='posterior', aux_weight=3.0, width=2, nb_epochs=30, tta=True, deskew=True)
EARLIER_FAST = dict(W, width=1, nb_epochs=5, tta=False)
BUDGET_ROW = 'course/ws+aux'  # the row whose cost is the fast model's budget
SAME_COST = 1.10   # costs within 10 % of the cheapest count as equal


def candidates():
    """(name, what it changes, overrides of test.py's HYP, the row it changes one thing of)."""
    mlp = dict(head='mlp')
    course_aux = dict(COURSE, aux_weight=1.0)
    onecycle = dict(course_aux, batch_norm=True, schedule='onecycle', lr=1e-2, mini_batch_size=50)
    posterior = dict(aux_weight=1.0, head='posterior')
    chain = [dict(posterior, width=2), dict(posterior, width=2, nb_epochs=30),
             dict(posterior, width=2, nb_epochs=30, tta=True),
             dict(posterior, width=2, nb_epochs=30, tta=True, deskew=True)]
    rows = [
        # From the course's recipe to the settings of the four variants (HYP), one step at a time.
        ('course/ws', "the course's recipe: Adam 1e-3, batch 100, no batch norm, no moves",
         COURSE, None),
        ('course/ws+aux', '+ the digit loss', course_aux, 'course/ws'),
        ('course+bn/ws+aux', '+ batch norm', dict(course_aux, batch_norm=True), 'course/ws+aux'),
        ('course+bn+onecycle/ws+aux', '+ one-cycle schedule to 1e-2, batch 50', onecycle,
         'course+bn/ws+aux'),
        ('ws+aux', '+ one-pixel moves: the ws+aux variant', dict(mlp, aux_weight=1.0),
         'course+bn+onecycle/ws+aux'),
        ('ws', 'without the digit loss: the ws variant', mlp, 'ws+aux'),
        ('ws+aux+re-pair', '+ new pairs of the training digits each epoch',
         dict(mlp, aux_weight=1.0, re_pair=True), 'ws+aux'),
        ('ws+aux/lr=3e-3', 'a lower peak learning rate', dict(mlp, aux_weight=1.0, lr=3e-3),
         'ws+aux'),
        ('ws+aux/40 epochs', 'more epochs', dict(mlp, aux_weight=1.0, nb_epochs=40), 'ws+aux'),
        # The one-cycle step changed schedule, rate and batch together: the batch on its own.
        ('ws+aux/batch 100', "the course's batch of 100",
         dict(mlp, aux_weight=1.0, mini_batch_size=100), 'ws+aux'),
        # From ws+aux to the earlier best model W, one step at a time.
        ('posterior', 'the posterior head instead of the MLP head', posterior, 'ws+aux'),
        ('posterior/width 2', '+ twice the channels', chain[0], 'posterior'),
        ('posterior/width 2/30 epochs', '+ 30 epochs', chain[1], 'posterior/width 2'),
        ('posterior/width 2/30 epochs/tta', '+ test-time moves', chain[2],
         'posterior/width 2/30 epochs'),
        ('posterior/width 2/30 epochs/tta/deskew', '+ deskewed digits', chain[3],
         'posterior/width 2/30 epochs/tta'),
        ('W', '+ digit-loss weight 3: the earlier best model', W,
         'posterior/width 2/30 epochs/tta/deskew'),
    ]
    # One change of W at a time, then the changes that validated better before, combined.
    changes = {'re-pair': dict(re_pair=True), 'lr=3e-3': dict(lr=3e-3),
               'batch 100': dict(mini_batch_size=100), 'dropout 0.1': dict(dropout=0.1),
               '40 epochs': dict(nb_epochs=40), 'width 1.5': dict(width=1.5)}
    for name, change in changes.items():
        rows.append(('W/' + name, 'W with ' + name, dict(W, **change), 'W'))
    for names in (('lr=3e-3', 'batch 100'), ('lr=3e-3', 'dropout 0.1'),
                  ('batch 100', 'dropout 0.1'), ('lr=3e-3', 'batch 100', 'dropout 0.1'),
                  ('lr=3e-3', 'batch 100', 'dropout 0.1', '40 epochs')):
        combined = dict(W)
        for name in names:
            combined.update(changes[name])
        rows.append(('W/' + '/'.join(names), 'W with ' + ', '.join(names), combined,
                     'W/' + '/'.join(names[:-1])))
    # Cheap candidates, for the fast model.
    rows.append(('fast', 'W at width 1, 5 epochs, one evaluation: the earlier fast model',
                 EARLIER_FAST, 'W'))
    for name, change in {'8 epochs': dict(nb_epochs=8), 'tta': dict(tta=True),
                         'aux=1': dict(aux_weight=1.0), 'no deskew': dict(deskew=False),
                         'lr=2e-2': dict(lr=2e-2), 'batch 100': dict(mini_batch_size=100),
                         'width 0.5/7 epochs': dict(width=0.5, nb_epochs=7)}.items():
        rows.append(('fast/' + name, 'the fast model with ' + name,
                     dict(EARLIER_FAST, **change), 'fast'))
    return rows


def head_step(row, p):
    """The four variants with the MLP head on the logits and on the probabilities."""
    return [row(name + suffix, about + what, **dict(overrides, head=head))
            for name, (about, overrides) in p.VARIANTS.items()
            for suffix, what, head in (('', ', MLP head on the logits', 'mlp'),
                                       ('/softmax', ', MLP head on the probabilities',
                                        'mlp-softmax'))]


def head_verdict(data):
    """The head step's rule, declared before it ran: the MLP head reads the probabilities when,
    in the family of the four variants' paired differences (softmax - logits, intervals
    Bonferroni-adjusted for the four), at least one lies below zero and none above."""
    family = [c for c in data['contrasts'] if 'ci' in c]
    better = any(c['ci'][1] < 0 for c in family)
    worse = any(c['ci'][0] > 0 for c in family)
    return 'mlp-softmax' if better and not worse and len(family) == 4 else 'mlp'


def forward_macs(config):
    """Multiply-accumulates of one forward pass of the row's network on one pair, counted on
    its conv and linear layers (the rest, batch norm and the heads' sums, is under 1 %)."""
    model, count = test.network(config, 0, 0), [0]

    def hook(module, inputs, output):
        weight = module.weight  # each output element takes weight numel / out channels products
        count[0] += output.numel() * (weight.numel() // weight.size(0))
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(hook)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 2, 14, 14))  # two pairs: batch norm's statistics need two samples
    return count[0] // 2


def macs(config, validation=True):
    """Multiply-accumulates of one run: training (a backward pass counted as two forward passes)
    and the evaluation that the run's time covers, each test-time shift a pass of its own."""
    nb_train = config['nb_pairs'] - config['nb_pairs'] // 4 if validation else config['nb_pairs']
    nb_eval = config['nb_pairs'] // 4 if validation else config['nb_test_pairs']
    passes = 3 * nb_train * config['nb_epochs'] + nb_eval * (5 if config['tta'] else 1)
    return forward_macs(config) * passes


def cost(row):
    """A tuning row's cost: millions of multiply-accumulates per run (`macs`)."""
    return _cost(tuple(sorted(row['config'].items())))


@functools.lru_cache(maxsize=None)
def _cost(config):
    return macs(dict(test.HYP, **dict(config))) / 1e6


def beaten_by(rows):
    """{row name: the rows that validate significantly better than it} among rows."""
    runs = {r['name']: r['runs'] for r in rows}
    better = lambda a, b: (train.interval(train.contrast(runs, test.diff(a, b))) or [0] * 3)[2] < 0
    return {r: [o for o in runs if o != r and better(o, r)] for r in runs}


def choose(data, budget=None, cost=cost):
    """The rule (module docstring) on a tuning results file: the name of the chosen row, among
    the rows costing at most `budget` (all rows without a budget); cost(row) is `cost`."""
    rows = [r for r in data['rows'] if r['summary']['n'] >= 2
            and (budget is None or cost(r) <= budget)]
    beaten = beaten_by(rows)
    unbeaten = [r for r in rows if not beaten[r['name']]]
    cheapest = min(cost(r) for r in unbeaten)
    affordable = [r for r in unbeaten if cost(r) <= SAME_COST * cheapest]
    return min(affordable, key=lambda r: r['summary']['test_error']['mean'])['name']


def choices(data):
    """{'best': row name, 'fast': row name} that the rule picks on a tuning results file, and
    the fast model's budget (`cost`)."""
    budget = cost(by_name(data)[BUDGET_ROW])
    return dict(best=choose(data), fast=choose(data, budget), budget=budget)


def by_name(data):
    return {r['name']: r for r in data['rows']}


def report(data, settings):
    """Lines: every candidate with its validation error, cost and how many candidates beat it,
    then the rule's choices and whether they are test.py's ({'best': .., 'fast': ..})."""
    if not all(r['summary']['n'] >= 2 for r in data['rows']):
        return ['the rule compares candidates on paired rounds: it needs two rounds or more']
    beaten, chosen = beaten_by(data['rows']), choices(data)
    lines = ['{:<44} {:>14} {:>12} {:>9}'.format('candidate', 'valid. error %', 'M MACs/run',
                                                 'beaten by')]
    lines += ['{:<44} {:>14} {:>12,.0f} {:>9}'.format(
        r['name'], train.pm([run['test_error'] for run in r['runs'] if run['status'] == 'ok']),
        cost(r), len(beaten[r['name']])) for r in data['rows']]
    for kind, limit in (('best', 'every candidate'),
                        ('fast', 'the candidates of at most {:,.0f} M MACs per run (the cost of '
                                 '{})'.format(chosen['budget'], BUDGET_ROW))):
        same = by_name(data)[chosen[kind]]['config'] == settings[kind]
        lines.append('{}: {}, the rule applied to {}; test.py\'s {} is {}'.format(
            kind, chosen[kind], limit, kind.upper(), 'this choice' if same else 'NOT this choice'))
    return lines
