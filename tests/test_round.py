"""One round tested whole (test.run_round, as the studies run it), with oracles: models that
know the digits of some images exactly, as the README says the round hands them to a model, and
nothing else. Whatever goes wrong in how a round puts its parts together (which pairs it scores,
how it prepares them, which classes it compares with, which mode it evaluates in), one of these
figures moves off the value it must have.
"""
import unittest
from unittest import mock

import torch

import dlc_practical_prologue as prologue
import models
import train
from conftest import DATA_DIR, config, entry
from study import runner


def other_test_pairs(change):
    """The course helper handing the round its training pairs and the test pairs that
    change(pairs, real helper) makes."""
    real = prologue.generate_pair_sets

    def helper(nb, generator=None, seed=None, data_dir=None, nb_test=None):
        pairs = real(nb, generator=generator, seed=seed, data_dir=data_dir, nb_test=nb_test)
        return change(pairs, lambda s: real(nb, seed=s, data_dir=data_dir, nb_test=nb_test))
    return helper

# Small rounds on real MNIST pairs; no random moves, so a training image reaches the model as is.
SMALL = dict(nb_pairs=120, nb_test_pairs=100, nb_epochs=2, shift=0, head='posterior')
SEED, ROUND = 3, 1


def key(image):
    """An image's exact values, as a dictionary key."""
    return tuple(image.reshape(-1).tolist())


def as_the_readme_says(cfg, seed=SEED, round_index=ROUND, validation=False):
    """The round's six tensors as the README describes them, written out here without the
    round's code: the course helper's pairs from the seed of (seed, round, 'data') (with
    validation, the training pairs' quarter round % 4 held out), each image deskewed alone if the
    row asks, then standardized with the mean and std of the training inputs."""
    generator = torch.Generator().manual_seed(entry.seed_for(seed, round_index, 'data'))
    if validation:
        input, target, classes = prologue.generate_split_pairs(cfg['nb_pairs'], 'train',
                                                               generator, DATA_DIR)
        quarter = cfg['nb_pairs'] // 4
        held = torch.zeros(cfg['nb_pairs'], dtype=torch.bool)
        held[(round_index % 4) * quarter:(round_index % 4 + 1) * quarter] = True
        raw = (input[~held], target[~held], classes[~held], input[held], target[held],
               classes[held])
    else:
        raw = prologue.generate_pair_sets(cfg['nb_pairs'], generator=generator, data_dir=DATA_DIR,
                                          nb_test=cfg['nb_test_pairs'])
    train_input, test_input = raw[0], raw[3]
    if cfg['deskew']:
        train_input, test_input = train.deskew(train_input), train.deskew(test_input)
    mean, std = train_input.mean(), train_input.std()
    return raw, ((train_input - mean) / std, raw[1], raw[2], (test_input - mean) / std, raw[4],
                 raw[5])


class Oracle(torch.nn.Module):
    """Knows the digit of each image in `known` ({key: digit}) and nothing else: a confident
    digit for a known image, equal logits for any other (read as digit 0), the posterior head on
    top. Asked in training mode it answers 9 - digit, so figures taken in training mode are
    wrong. It counts the images it was shown in evaluation mode."""

    def __init__(self, known):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # for the optimizer to step
        self.known = known
        self.head = models.PosteriorHead()
        self.images_in_eval = 0

    def forward(self, x):
        images = x.detach().float().reshape(-1, 14 * 14)
        logits = torch.zeros(images.size(0), 10)
        for i, image in enumerate(images):
            digit = self.known.get(key(image))
            if digit is not None:
                logits[i, 9 - digit if self.training else digit] = 30.0
        if not self.training:
            self.images_in_eval += images.size(0)
        digit_logits = logits.view(-1, 2, 10) + 0 * self.weight
        return self.head(digit_logits), digit_logits


def knowing(input, classes, which=None):
    """{key: digit} of the pairs of input (those listed in which, else all)."""
    which = range(input.size(0)) if which is None else which
    return {key(input[i, j]): int(classes[i, j]) for i in which for j in (0, 1)}


def run_with(oracle, cfg, round_index=ROUND, **flags):
    """One round of cfg with the oracle as its model (the round builds nothing else)."""
    with mock.patch.object(entry, 'network', lambda config, seed, round_index: oracle):
        return runner.study_round(cfg, SEED, round_index, data_dir=DATA_DIR, **flags)


def chance(target):
    """The error of a model that knows nothing here: equal digit logits give P(d1 <= d2) = 0.55,
    so it answers 1 for every pair, and misses the pairs whose target is 0."""
    return 100.0 * (target == 0).float().mean().item()


class KnowsTheTrainingPairs(unittest.TestCase):
    def test_perfect_on_training_pairs_and_chance_on_test_pairs(self):
        for deskew in (False, True):
            with self.subTest(deskew=deskew):
                cfg = config(**dict(SMALL, deskew=deskew))
                raw, ready = as_the_readme_says(cfg)
                result = run_with(Oracle(knowing(ready[0], ready[2])), cfg, curves=True)
                self.assertEqual(result['status'], 'ok')
                self.assertEqual(result['train_error'], 0.0)
                self.assertEqual(result['train_digit_error'], 0.0)
                self.assertAlmostEqual(result['test_error'], chance(ready[4]))
                self.assertAlmostEqual(result['test_digit_error'],
                                       100.0 * (ready[5] != 0).float().mean().item())
                # The learning curves: the training curve reads the training pairs, the test
                # curve the test pairs, after every epoch.
                self.assertEqual(result['curve']['train_error'], [0.0] * cfg['nb_epochs'])
                self.assertEqual(result['curve']['test_error'],
                                 [round(chance(ready[4]), 2)] * cfg['nb_epochs'])


class TheTrainingLoss(unittest.TestCase):
    """Training sees the training pairs, their targets and classes, with the row's digit-loss
    weight: the oracle's loss is known exactly (its logits are fixed), epoch after epoch."""

    def expected_loss(self, cfg, ready):
        oracle = Oracle(knowing(ready[0], ready[2])).train()
        pair_logits, digit_logits = oracle(ready[0])
        pair = torch.nn.functional.cross_entropy(pair_logits, ready[1], reduction='none')
        digits = torch.nn.functional.cross_entropy(digit_logits.reshape(-1, 10),
                                                   ready[2].reshape(-1), reduction='none')
        return (pair + cfg['aux_weight'] * digits.view(-1, 2).mean(1)).mean().item()

    def test_the_loss_of_the_training_pairs_with_the_rows_weight(self):
        for weight in (0.0, 1.0, 3.0):
            with self.subTest(aux_weight=weight):
                cfg = config(**dict(SMALL, aux_weight=weight))
                raw, ready = as_the_readme_says(cfg)
                result = run_with(Oracle(knowing(ready[0], ready[2])), cfg)
                self.assertAlmostEqual(result['final_loss'], self.expected_loss(cfg, ready),
                                       places=4)

    def test_moves_and_new_pairs_reach_the_model(self):
        cfg = config(**SMALL)
        raw, ready = as_the_readme_says(cfg)
        still = run_with(Oracle(knowing(ready[0], ready[2])), cfg)['final_loss']
        for change in (dict(shift=1), dict(re_pair=True, aux_weight=1.0)):
            with self.subTest(**change):
                other = config(**dict(SMALL, **change))
                loss = run_with(Oracle(knowing(ready[0], ready[2])), other)['final_loss']
                expected = self.expected_loss(other, ready)
                self.assertNotAlmostEqual(loss, expected if 'aux_weight' in change else still,
                                          places=2)


class KnowsTheTestPairs(unittest.TestCase):
    """The test figures are taken on the test pairs, prepared as the README says (deskewed
    alone, standardized with the training statistics), in evaluation mode, against their own
    targets and classes; the training figures on the training pairs."""

    def check(self, cfg, validation=False):
        raw, ready = as_the_readme_says(cfg, validation=validation)
        oracle = Oracle(knowing(ready[3], ready[5]))
        result = run_with(oracle, cfg, validation=validation)
        self.assertEqual(result['test_error'], 0.0)
        self.assertEqual(result['test_digit_error'], 0.0)
        self.assertAlmostEqual(result['train_error'], chance(ready[1]))
        self.assertEqual(result['pairs_digest'], runner.digest(*raw))
        return result, oracle, ready

    def test_every_kind_of_row(self):
        for overrides in ({}, dict(deskew=True), dict(tta=True), dict(deskew=True, tta=True)):
            with self.subTest(**overrides):
                cfg = config(**dict(SMALL, **overrides))
                result, oracle, ready = self.check(cfg)
                # Test-time moves: five versions of every image, for the test figure and the
                # training figure alike; one version without them.
                versions = 5 if cfg['tta'] else 1
                shown = 2 * versions * (ready[0].size(0) + ready[3].size(0))
                self.assertEqual(oracle.images_in_eval, shown)

    def test_validation_scores_the_held_out_quarter(self):
        for deskew in (False, True):
            with self.subTest(deskew=deskew):
                self.check(config(**dict(SMALL, deskew=deskew)), validation=True)
