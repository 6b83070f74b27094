"""The studies: test.py's own rows (`variants`) and the further ones, each a list of rows, every
row test.py's defaults (HYP) with a few overrides, a base seed, rounds and the family of
contrasts it is about, all declared before the run that fills them."""
from dataclasses import dataclass

import models
import test
from test import diff
from study import tuning

# The numbers of training pairs of the data_size study.
SIZES = (250, 500, 1000, 2000, 4000, 8000)
# Declared seeds (never used before each study's run): the studies on test pairs take test.SEED;
# the headline confirmation and the tuning studies keep the seeds declared with them.
CONFIRM_SEED, TUNING_SEED = 20261204, 20261203


@dataclass
class Study:
    name: str
    about: str
    rows: list                 # full row configs: HYP with overrides, a name and an about
    contrasts: tuple = ()      # its family: (name, {row: weight}, relative), Bonferroni-adjusted
    rounds: int = 10
    seed: int = test.SEED
    validation: bool = False   # score on held-out training pairs; never draw a test pair
    curves: bool = False       # also record the train and test error after every epoch
    in_all: bool = True        # run by `python -m study all` (the studies on test pairs)


def versus(pairs):
    """A family of differences a - b, in percentage points."""
    return tuple(('{} - {}'.format(a, b), diff(a, b), False) for a, b in pairs)


def registry():
    """{name: Study}: test.py's variants, then the further studies, then the tuning studies."""
    row, p = test.row, test
    four = [row(name, about, **overrides) for name, (about, overrides) in p.VARIANTS.items()]
    re_pair = dict(p.AUX, re_pair=True)
    studies = [
        Study('variants', "test.py's rows: the four variants (weight sharing x aux loss), a size "
              "control, re-pairing and the best model", p.ROWS, tuple(p.CONTRASTS)),
        Study('heads', 'how the two digit outputs become the pair answer (ws+aux)',
              [row(h, about, head=h, **p.AUX) for h, about in models.HEADS.items()],
              versus([('mlp-softmax', 'mlp'), ('outer', 'mlp-softmax'),
                      ('posterior', 'mlp-softmax'), ('argmax', 'posterior')])),
        Study('baselines', 'non-Siamese 2-channel MLPs and conv nets against the Siamese nets',
              baselines(row, p), versus([(b, 'siamese-ws') for b in (
                  'fc1', 'fc2', 'fc3', 'conv1', 'conv2', 'conv3', 'siamese-ws+aux')])),
        Study('backbones', 'five digit branches, each in the four variants',
              [row('{}/{}'.format(b, name), about, backbone=b, **overrides)
               for b, about in models.BACKBONES.items()
               for name, (_, overrides) in p.VARIANTS.items()],
              versus([('{}/ws+aux'.format(b), 'conv/ws+aux') for b in models.BACKBONES
                      if b != 'conv'])),
        Study('aux_weight', 'the auxiliary-loss weight swept from 0 to 10 (ws)',
              [row('aux={:g}'.format(w), 'ws, digit-loss weight w', aux_weight=w)
               for w in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)],
              versus([('aux={:g}'.format(w), 'aux=1') for w in (0.1, 0.3, 3.0, 10.0)])),
        Study('regularization', 'batch norm and dropout on the ws+aux net',
              regularization(row, p), versus([('no-bn', 'bn')] + [
                  ('bn+dropout={:g}'.format(d), 'bn') for d in (0.1, 0.25, 0.5)]
                  + [('no-bn+dropout=0.25', 'no-bn')])),
        Study('curves', 'train and test error after every epoch, four variants', four,
              curves=True),
        Study('data_size', '250 to 8000 training pairs, four variants and re-pairing',
              [row('{}/{}'.format(n, name), '{} training pairs'.format(n), nb_pairs=n, **overrides)
               for n in SIZES for name, (_, overrides)
               in list(p.VARIANTS.items()) + [('ws+aux+re-pair', ('', re_pair))]],
              versus([('{}/{}'.format(n, a), '{}/{}'.format(n, b)) for n in SIZES
                      for a, b in (('ws+aux', 'ws'), ('ws+aux+re-pair', 'ws+aux'))])),
        # ws-posterior differs from ws in its head alone: what the head does without digit labels.
        Study('no_digit_labels', 'the pair label only: the posterior head on ws and on the best '
              'model', [row('ws', 'ws, pair loss only'),
                        row('ws-posterior', 'ws with the posterior head, pair loss only',
                            head='posterior'),
                        # Re-pairing reads the digit labels too: off with the digit loss.
                        row('pair-loss-only', 'the best model without any digit label (no digit '
                            'loss, no re-pairing)', **dict(p.BEST, aux_weight=0.0, re_pair=False)),
                        row('with-digit-loss', 'the best model', **p.BEST)],
              versus([('ws-posterior', 'ws'), ('pair-loss-only', 'with-digit-loss')])),
        Study('fast', 'the fast model alone', [row('fast', 'the fast model (FAST)', **p.FAST)]),
        Study('confirm', 'the best model alone on a seed of its own: the headline',
              [row('best', 'the best model (BEST)', **p.BEST)], rounds=100, seed=CONFIRM_SEED),
        Study('tuning', 'the candidates behind every setting (held-out training pairs)',
              [row(name, about, **o) for name, about, o, _ in tuning.candidates()],
              versus([(name, vs) for name, _, _, vs in tuning.candidates() if vs]), rounds=40,
              seed=TUNING_SEED, validation=True, in_all=False),
        Study('tuning_head', 'the head step: the MLP head on the digit probabilities, not the '
              'logits, in the four variants (held-out training pairs)', tuning.head_step(row, p),
              versus([(name + '/softmax', name) for name in p.VARIANTS]), rounds=40,
              seed=TUNING_SEED, validation=True, in_all=False),
    ]
    return {s.name: s for s in studies}


def baselines(row, p):
    rows = [row('fc{}'.format(d), '2-channel MLP, {} hidden layer(s)'.format(d), net='pairnet',
                kind='fc', depth=d) for d in (1, 2, 3)]
    rows += [row('conv{}'.format(d), '2-channel conv net, {} conv layer(s)'.format(d),
                 net='pairnet', kind='conv', depth=d) for d in (1, 2, 3)]
    return rows + [row('siamese-ws', 'Siamese with weight sharing, pair loss only'),
                   row('siamese-ws+aux', 'Siamese with weight sharing and the digit loss', **p.AUX)]


def regularization(row, p):
    rows = [row('bn', 'ws+aux with batch norm (the default)', **p.AUX),
            row('no-bn', 'without batch norm', batch_norm=False, **p.AUX)]
    rows += [row('bn+dropout={:g}'.format(d), 'dropout before the linear layers', dropout=d,
                 **p.AUX) for d in (0.1, 0.25, 0.5)]
    return rows + [row('no-bn+dropout=0.25', 'dropout alone', batch_norm=False, dropout=0.25,
                       **p.AUX)]


# The settings that belong to the pair net or to the Siamese net only: a results file records
# those of the row's own net.
SIAMESE_KEYS = ('share_weights', 'backbone', 'width', 'head', 'aux_weight', 're_pair')
PAIRNET_KEYS = ('kind', 'depth', 'hidden')


def row_config(config):
    """The settings that matter for this row: what its results file records."""
    drop = PAIRNET_KEYS if config['net'] == 'siamese' else SIAMESE_KEYS
    return {k: v for k, v in config.items() if k not in drop and k not in ('name', 'about')}
