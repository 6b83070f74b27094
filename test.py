"""EE-559 Project 1: compare two MNIST digits with Siamese networks, with and without weight
sharing and an auxiliary digit loss. `python test.py` runs the study and prints its table.

The story of one round, in the card's files (train.run_round):
  pairs     dlc_practical_prologue.generate_pair_sets: 1000 training pairs from MNIST train,
            1000 test pairs from MNIST test, fresh each round;
  model     models.SiameseNet, one flag per design axis (weight sharing, branch, head);
  training  train.train_model, a hand-written loop: cross-entropy on the pair target, plus
            aux_weight x cross-entropy on both digits when the row uses the auxiliary loss;
  figures   train.evaluate on the test pairs, which give the final figures and nothing else.
Each row of a study is HYP below with a few overrides; every round draws new pairs and weights
from seeds derived from --seed and the round, the same pairs for every row. The package study/
runs many rounds (in worker processes), prints the mean ± std table and writes the results.
Every setting was chosen on held-out training pairs (`--study tuning`), never on test pairs.
"""
import sys
import types
import warnings

# torch warns on stderr when numpy is missing, which it does not need: keep stderr for errors.
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')

from study import cli, studies  # noqa: E402  (after the filter: study imports torch)

######################################################################
# Hyperparameters: the defaults of every row; the studies override a few per row.

HYP = dict(
    nb_pairs=1000,          # training pairs per round: the course's size
    nb_test_pairs=1000,     # test pairs per round, used only for the final figures
    net='siamese',          # 'siamese' (models.SiameseNet) or 'pairnet' (the 2-channel baseline)
    share_weights=True,     # one digit branch for both images (ws), or two (plain, aux)
    backbone='conv',        # the classic branch, near the course's 70k parameters with two branches
    width=1,                # channel multiplier of the digit branch
    head='mlp',             # the course's learned comparison; see models.HEADS
    batch_norm=True,        # tuning: + batch norm validates better than the course's recipe
    dropout=0.0,            # no dropout (--study regularization measures it)
    kind='fc',              # pairnet only: 'fc' or 'conv'
    depth=2,                # pairnet only: hidden layers
    hidden=128,             # pairnet only: units of the hidden linear layers
    nb_epochs=25,           # the course's budget
    mini_batch_size=50,     # tuning: with the one-cycle schedule, better than the course's 100
    lr=1e-2,                # tuning: AdamW's peak rate of the one-cycle schedule
    weight_decay=0.0,       # plain AdamW steps: not varied by the tuning study
    schedule='onecycle',    # tuning: a rise, then a fall to zero, beats the course's constant 1e-3
    aux_weight=0.0,         # weight of the digit cross-entropy; 0 = no auxiliary loss
    re_pair=False,          # draw new pairs of the training digits each epoch (uses digit labels)
    shift=1,                # tuning: random moves of up to one pixel while training help
    deskew=False,           # shear every digit upright first, training and test alike
    tta=False,              # average predictions over one-pixel moves at evaluation
    bf16=False,             # bfloat16 autocast where the hardware has it natively (a speed path)
)

# What the aux variants add: the digit loss and nothing else (the course's question). Re-pairing
# the training digits each epoch also uses the digit labels: it is a row of its own.
AUX = dict(aux_weight=1.0)
# The best and the fast models: what the rule of study/tuning.py picks from the validation-only
# tuning study (`python test.py --choose`; tests/test_studies.py checks it). Best: the posterior
# head, which needs no parameters, on a branch 1.5 times as wide, digit-loss weight 3, 30 epochs,
# deskewed digits, test-time moves; as good as any candidate and the cheapest of those. Fast:
# the same design at width 1 and 5 epochs, the best within the time of the course's recipe.
BEST = dict(width=1.5, head='posterior', aux_weight=3.0, deskew=True, nb_epochs=30, tta=True,
            bf16=True)
FAST = dict(BEST, width=1, nb_epochs=5)

# The four variants of the study: weight sharing x auxiliary loss (name: about, overrides).
VARIANTS = {
    'plain': ('two branches, pair loss only', dict(share_weights=False)),
    'ws': ('weight sharing, pair loss only', {}),
    'aux': ('two branches, pair + digit loss', dict(share_weights=False, **AUX)),
    'ws+aux': ('weight sharing, pair + digit loss', AUX),
}


def row(name, about, **overrides):
    """One row of a study: HYP with the overrides, a name and a line saying what it is."""
    unknown = set(overrides) - set(HYP)
    if unknown:
        raise ValueError(f"row {name}: unknown settings {', '.join(sorted(unknown))}")
    return dict(HYP, name=name, about=about, **overrides)


VARIANTS_STUDY = studies.Study(
    'variants', 'the four Siamese variants (weight sharing x aux loss), re-pairing and the best model',
    [row(name, about, **overrides) for name, (about, overrides) in VARIANTS.items()]
    + [row('ws+aux+re-pair', 'ws+aux, new pairs of the training digits each epoch',
           re_pair=True, **AUX),
       row('best', 'the best model (BEST)', **BEST)],
    reference='plain', mistakes_of='best',
    # The course's questions: weight sharing without and with the digit loss, the digit loss
    # without and with weight sharing; then what re-pairing and the best model add.
    contrasts=(('ws', 'plain'), ('ws+aux', 'aux'), ('aux', 'plain'), ('ws+aux', 'ws'),
               ('ws+aux+re-pair', 'ws+aux'), ('best', 'ws+aux')))
PRESETS = types.SimpleNamespace(AUX=AUX, BEST=BEST, FAST=FAST, VARIANTS=VARIANTS)
STUDIES = {s.name: s for s in [VARIANTS_STUDY] + studies.further(row, PRESETS)}


def main(argv=None):
    """Runs what the command line asks (by default the variants study: each row for 10 rounds,
    one line per round, then the mean ± std table); returns the exit status."""
    return cli.main(argv, STUDIES, row, HYP)


if __name__ == '__main__':
    sys.exit(main())
