"""The networks, on small tensors built here (no MNIST needed)."""
import itertools
import unittest

import torch

from tests.common import config, entry, models, rounds


class WeightSharing(unittest.TestCase):
    def test_shared_branch_is_one_module(self):
        shared = models.SiameseNet(share_weights=True)
        separate = models.SiameseNet(share_weights=False)
        self.assertIs(shared.branch_a, shared.branch_b)
        self.assertIsNot(separate.branch_a, separate.branch_b)
        ids_a = {id(p) for p in separate.branch_a.parameters()}
        self.assertFalse(ids_a & {id(p) for p in separate.branch_b.parameters()})

    def test_parameter_counts(self):
        shared = models.SiameseNet(share_weights=True)
        separate = models.SiameseNet(share_weights=False)
        branch = models.nb_parameters(shared.branch_a)
        head = models.nb_parameters(shared.head)
        self.assertEqual(models.nb_parameters(shared), branch + head)
        self.assertEqual(models.nb_parameters(separate), 2 * branch + head)

    def test_shared_branch_treats_both_images_alike(self):
        # Swapping the images swaps the digit outputs only when the weights are shared.
        torch.manual_seed(0)
        x = torch.randn(8, 2, 14, 14)
        for share, same in ((True, True), (False, False)):
            model = models.SiameseNet(share_weights=share).eval()
            digits = model(x)[1]
            swapped = model(x.flip(1))[1].flip(1)
            self.assertEqual(torch.allclose(digits, swapped, atol=1e-5), same)

    def test_one_gradient_step_moves_shared_weights_for_both_images(self):
        torch.manual_seed(0)
        model = models.SiameseNet(share_weights=True)
        x = torch.randn(4, 2, 14, 14)
        model(x)[1][:, 1].sum().backward()  # only the second image's outputs
        self.assertTrue(any(p.grad is not None and p.grad.abs().sum() > 0
                            for p in model.branch_a.parameters()))


class Shapes(unittest.TestCase):
    def test_every_backbone_and_head(self):
        x = torch.randn(3, 2, 14, 14)
        for backbone, head, share in itertools.product(models.BACKBONES, models.HEADS, (True, False)):
            model = models.SiameseNet(share, backbone, head, batch_norm=True, dropout=0.1)
            pair, digits = model(x)
            self.assertEqual((tuple(pair.shape), tuple(digits.shape)), ((3, 2), (3, 2, 10)),
                             f'{backbone} {head}')

    def test_baselines(self):
        x = torch.randn(3, 2, 14, 14)
        for kind, depth in itertools.product(('fc', 'conv'), (1, 2, 3)):
            pair, digits = models.PairNet(kind, depth)(x)
            self.assertEqual(tuple(pair.shape), (3, 2))
            self.assertIsNone(digits)

    def test_unknown_names(self):
        with self.assertRaisesRegex(ValueError, 'unknown backbone'):
            models.SiameseNet(backbone='alexnet')
        with self.assertRaisesRegex(ValueError, 'unknown head'):
            models.SiameseNet(head='svm')

    def test_budgets_stated_in_the_readme_hold(self):
        # The classic variants stay near the course's 70k parameters.
        for share in (True, False):
            n = models.nb_parameters(entry.network(config(share_weights=share), 0, 0))
            self.assertLess(n, 75000)
            self.assertGreater(n, 30000)


class PosteriorHead(unittest.TestCase):
    def test_is_the_exact_probability(self):
        torch.manual_seed(0)
        logits = torch.randn(5, 2, 10)
        out = models.PosteriorHead()(logits)
        p = logits.softmax(-1)
        brute = torch.tensor([sum(p[n, 0, i] * p[n, 1, j] for i in range(10) for j in range(10)
                                  if i <= j) for n in range(5)])
        self.assertTrue(torch.allclose(out[:, 1].exp(), brute, atol=1e-6))
        self.assertTrue(torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-6))

    def test_confident_digits_give_the_course_target(self):
        for a, b in itertools.product(range(10), repeat=2):
            logits = torch.full((1, 2, 10), -30.0)
            logits[0, 0, a] = logits[0, 1, b] = 30.0
            self.assertEqual(models.PosteriorHead()(logits).argmax(1).item(), int(a <= b))
            self.assertEqual(models.ArgmaxHead()(logits).argmax(1).item(), int(a <= b))


class MatchedDigits(unittest.TestCase):
    def test_relabeled_outputs_count_as_right(self):
        classes = torch.arange(100) % 10
        permutation = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])
        self.assertEqual(rounds.matched_digit_error(permutation[classes], classes), 0.0)
        pred = permutation[classes].clone()
        pred[:5] = pred[5:10]  # five outputs now wrong under any relabeling
        self.assertAlmostEqual(rounds.matched_digit_error(pred, classes), 5.0)


if __name__ == '__main__':
    unittest.main()
