"""The protocol's guarantees, each checked where it could break (the README lists them).

Every test here was checked by planting the bug it guards against and watching it fail.
"""
import itertools
import os
import shutil
import tempfile
import unittest
from unittest import mock

import torch

import dlc_practical_prologue as prologue
import models
import train
from conftest import DATA_DIR, config, entry
from study import runner
from test_round import other_test_pairs
from test_train import toy_pairs

# A short run on real pairs: small enough for a unit test, with every random draw in play.
SHORT = dict(nb_pairs=120, nb_test_pairs=80, nb_epochs=2, dropout=0.1)


def run(seed=0, round=0, name='ws', curves=False, **overrides):
    return runner.study_round(config(name, **dict(SHORT, **overrides)), seed, round,
                              data_dir=DATA_DIR, channels_last=True, curves=curves)


def without_times(result):
    return {k: v for k, v in result.items() if k != 'seconds'}


class Normalization(unittest.TestCase):
    def test_a_test_input_depends_on_itself_and_the_training_inputs_only(self):
        g = torch.Generator().manual_seed(0)
        train_input = 255 * torch.rand(40, 2, 14, 14, generator=g)
        test_input = 255 * torch.rand(10, 2, 14, 14, generator=g)
        others = test_input.clone()
        others[1:] = 255 * torch.rand(9, 2, 14, 14, generator=g) ** 3  # other statistics
        for deskew in (False, True):
            with self.subTest(deskew=deskew):
                _, a = train.prepare_inputs(train_input, test_input, deskew)
                _, b = train.prepare_inputs(train_input, others, deskew)
                self.assertTrue(torch.equal(a[0], b[0]))
                # ... and it does depend on the training inputs.
                _, c = train.prepare_inputs(train_input[:20], test_input, deskew)
                self.assertFalse(torch.allclose(a[0], c[0]))
        train_std, test_std = train.prepare_inputs(train_input, test_input, False)
        expected = (test_input - train_input.mean()) / train_input.std()
        self.assertTrue(torch.allclose(test_std, expected))
        self.assertAlmostEqual(train_std.mean().item(), 0.0, places=5)


def every_network():
    """(name, row overrides) of every kind of network the studies run: each backbone, each head,
    with and without weight sharing, and each non-Siamese baseline."""
    kinds = [('backbone ' + b, dict(backbone=b)) for b in models.BACKBONES]
    kinds += [(f'head {h}', dict(head=h, aux_weight=1.0)) for h in models.HEADS]  # as studied
    kinds += [('two branches', dict(share_weights=False))]
    kinds += [(f'pairnet {k}', dict(net='pairnet', kind=k)) for k in ('fc', 'conv')]
    return kinds


class Evaluation(unittest.TestCase):
    """For every kind of network: batch norm's running statistics and no dropout at evaluation."""

    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.input, cls.target, cls.classes = toy_pairs(200)
        cls.models = []
        for name, overrides in every_network():
            model = entry.network(config(**dict(overrides, dropout=0.5, width=0.5)), 0, 0)
            # A little training, so that the running statistics differ from any batch's.
            train.train_model(model, cls.input, cls.target, cls.classes, nb_epochs=1,
                              aux_weight=1.0 if overrides.get('net') != 'pairnet' else 0.0,
                              mini_batch_size=50)
            cls.models.append((name, model))

    def test_a_pair_prediction_does_not_depend_on_the_rest_of_its_batch(self):
        mixed = self.input.clone()
        mixed[50:] = 3.0  # the other pairs of the batch: blank images of another brightness
        for (name, model), tta in itertools.product(self.models, (False, True)):
            with self.subTest(network=name, tta=tta):
                a = train.evaluate(model, self.input, self.target, self.classes, tta=tta)
                b = train.evaluate(model, mixed, self.target, self.classes, tta=tta)
                c = train.evaluate(model, self.input[:50], self.target[:50], tta=tta,
                                   mini_batch_size=7)
                self.assertTrue(torch.equal(a['pair_pred'][:50], b['pair_pred'][:50]))
                self.assertTrue(torch.equal(a['pair_pred'][:50], c['pair_pred']))
                again = train.evaluate(model, self.input, self.target, self.classes, tta=tta)
                self.assertTrue(torch.equal(a['pair_pred'], again['pair_pred']))  # no dropout
                if a['digit_pred'] is not None:
                    self.assertTrue(torch.equal(a['digit_pred'][:50], b['digit_pred'][:50]))
                    self.assertTrue(torch.equal(a['digit_pred'], again['digit_pred']))

    def test_the_model_mode_is_restored(self):
        for (name, model), mode in itertools.product(self.models, (True, False)):
            with self.subTest(network=name, mode=mode):
                model.train(mode)
                train.evaluate(model, self.input[:10], self.target[:10])
                self.assertEqual(model.training, mode)
                self.assertTrue(all(m.training == mode for m in model.modules()))
                model.train()


class Rounds(unittest.TestCase):
    """Fresh pairs and weights each round, the same pairs for every row, the same numbers again."""

    @classmethod
    def setUpClass(cls):
        cls.ws = [run(round=k) for k in (0, 1)]
        cls.ws_aux = [run(round=k, name='ws+aux', aux_weight=1.0, re_pair=True) for k in (0, 1)]
        cls.plain = run(round=0, name='plain', share_weights=False)
        cls.other_seed = run(seed=1, round=0)

    def test_each_round_draws_other_pairs_and_other_weights(self):
        self.assertNotEqual(self.ws[0]['pairs_digest'], self.ws[1]['pairs_digest'])
        self.assertNotEqual(self.ws[0]['init_digest'], self.ws[1]['init_digest'])

    def test_round_r_of_every_row_draws_the_same_pairs(self):
        for k in (0, 1):
            self.assertEqual(self.ws[k]['pairs_digest'], self.ws_aux[k]['pairs_digest'])
            # The same network starts from the same weights; only the loss differs.
            self.assertEqual(self.ws[k]['init_digest'], self.ws_aux[k]['init_digest'])
        self.assertEqual(self.ws[0]['pairs_digest'], self.plain['pairs_digest'])

    def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(self):
        self.assertEqual(without_times(run(round=1)), without_times(self.ws[1]))
        self.assertNotEqual(self.other_seed['pairs_digest'], self.ws[0]['pairs_digest'])
        self.assertNotEqual(self.other_seed['init_digest'], self.ws[0]['init_digest'])

    def test_every_network_draws_its_weights_from_the_round(self):
        for name, overrides in every_network():
            with self.subTest(network=name):
                cfg = config(**overrides)
                weights = lambda seed, k: runner.digest(
                    *entry.network(cfg, seed, k).state_dict().values())
                self.assertEqual(weights(0, 0), weights(0, 0))
                self.assertNotEqual(weights(0, 0), weights(0, 1))
                self.assertNotEqual(weights(0, 0), weights(1, 0))

    def test_the_digests_are_those_of_the_pairs(self):
        generator = torch.Generator().manual_seed(entry.seed_for(0, 1, 'data'))
        pairs = prologue.generate_pair_sets(SHORT['nb_pairs'], generator=generator,
                                            data_dir=DATA_DIR, nb_test=SHORT['nb_test_pairs'])
        self.assertEqual(runner.digest(*pairs), self.ws[1]['pairs_digest'])


class TestPairs(unittest.TestCase):
    def test_the_test_pairs_choose_nothing(self):
        """Whatever the test pairs, training (its loss, the training error) is the same; the
        learning curves read the test pairs for the figure only."""
        helper = other_test_pairs(lambda pairs, real: pairs[:3] + real(12345)[3:])

        full = dict(SHORT, deskew=True, tta=True, aux_weight=1.0, re_pair=True)
        cases = [('every setting', full, False), ('every setting, curves', full, True)]
        cases += [(name, dict(SHORT, **overrides), False) for name, overrides in every_network()]
        for name, overrides, curves in cases:
            with self.subTest(name):
                job = lambda: runner.study_round(config(**overrides), 0, 0, data_dir=DATA_DIR,
                                                 curves=curves)
                a = job()
                with mock.patch.object(prologue, 'generate_pair_sets', helper):
                    b = job()
                self.assertNotEqual(a['pairs_digest'], b['pairs_digest'])
                for key in ('final_loss', 'train_error', 'train_digit_error'):
                    self.assertEqual(a[key], b[key], key)
                if curves:
                    self.assertEqual(a['curve']['train_error'], b['curve']['train_error'])


class Validation(unittest.TestCase):
    def test_validation_never_reads_the_test_split(self):
        root = tempfile.mkdtemp()
        try:  # a data folder with the training files only, and no mirror to fetch the others
            raw = os.path.join(root, 'mnist', 'MNIST', 'raw')
            os.makedirs(raw)
            for name in prologue.SPLITS['train']:
                shutil.copy(os.path.join(DATA_DIR, 'mnist', 'MNIST', 'raw', name + '.gz'), raw)
            with mock.patch.dict(os.environ, {'MNIST_MIRROR': 'http://127.0.0.1:9/'}):
                result = runner.study_round(config(**SHORT), 0, 1, data_dir=root,
                                            validation=True)
            self.assertEqual(result['status'], 'ok')
            self.assertEqual(sorted(os.listdir(raw)),
                             sorted(n + '.gz' for n in prologue.SPLITS['train']))
        finally:
            shutil.rmtree(root)

    def test_the_held_out_quarter_is_a_slice_of_the_training_pairs(self):
        data = prologue.generate_validation_sets(200, 1, torch.Generator().manual_seed(123), DATA_DIR)
        self.assertEqual((data[0].size(0), data[3].size(0)), (150, 50))
        train_pairs = prologue.generate_split_pairs(200, 'train', torch.Generator().manual_seed(123))
        # Round 1 holds out quarter 1, and trains on the other three.
        self.assertTrue(torch.equal(data[3], train_pairs[0][50:100]))
        self.assertTrue(torch.equal(data[0], torch.cat((train_pairs[0][:50], train_pairs[0][100:]))))


class EachImageAlone(unittest.TestCase):
    """Deskewing and test-time moves apply alike to training and test images, so each image
    must be processed from itself alone."""

    def setUp(self):
        g = torch.Generator().manual_seed(0)
        self.images = 255 * torch.rand(6, 2, 14, 14, generator=g) ** 4

    def test_deskew(self):
        out = train.deskew(self.images)
        for i in range(6):
            self.assertTrue(torch.allclose(train.deskew(self.images[i:i + 1]), out[i:i + 1], atol=1e-4))

    def test_moves(self):
        standardized = (self.images - 30) / 60
        standardized[3] += 5  # an image whose background differs from the others'
        shifts = torch.tensor([[1, 0], [0, -1]]).expand(6, 2, 2)
        out = train.shift_images(standardized, 1, shifts=shifts)
        for i in range(6):
            self.assertTrue(torch.equal(train.shift_images(standardized[i:i + 1], 1,
                                                           shifts=shifts[i:i + 1]), out[i:i + 1]))

