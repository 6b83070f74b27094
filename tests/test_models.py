"""The networks: weight sharing is one branch used twice, every branch and head gives the shapes
the round expects, the heads compute what they say, and the sizes the paper gives hold."""
import itertools

import pytest
import torch

import models
import test as entry
from study.runner import matched_digit_error


def test_a_shared_branch_is_one_module_counted_once():
    shared, separate = models.SiameseNet(True), models.SiameseNet(False)
    assert shared.branch_a is shared.branch_b and separate.branch_a is not separate.branch_b
    branch, head = models.nb_parameters(shared.branch_a), models.nb_parameters(shared.head)
    assert models.nb_parameters(shared) == branch + head
    assert models.nb_parameters(separate) == 2 * branch + head


def test_swapping_the_images_swaps_the_digits_only_with_shared_weights():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 14, 14)
    for share in (True, False):
        model = models.SiameseNet(share_weights=share, batch_norm=True).eval()
        swapped = model(x.flip(1))[1].flip(1)
        assert torch.allclose(model(x)[1], swapped, atol=1e-5) == share


def test_one_step_moves_the_shared_weights_from_either_image():
    for image in (0, 1):
        torch.manual_seed(0)
        model = models.SiameseNet(share_weights=True)
        x = torch.zeros(4, 2, 14, 14)
        x[:, image] = torch.randn(4, 14, 14)
        model(x)[1][:, image].sum().backward()
        assert model.branch_a[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('backbone,head,share', itertools.product(
    models.BACKBONES, models.HEADS, (True, False)))
def test_every_branch_and_head(backbone, head, share):
    model = models.SiameseNet(share, backbone, head, batch_norm=True, dropout=0.1, width=1.5)
    pair, digits = model(torch.randn(3, 2, 14, 14))
    assert pair.shape == (3, 2) and digits.shape == (3, 2, 10)


@pytest.mark.parametrize('kind,depth', itertools.product(('fc', 'conv'), (1, 2, 3)))
def test_the_two_channel_baselines(kind, depth):
    pair, digits = models.PairNet(kind, depth, 128, True, 0.1)(torch.randn(3, 2, 14, 14))
    assert pair.shape == (3, 2) and digits is None


def test_unknown_names_are_refused():
    for kwargs in (dict(backbone='x'), dict(head='x')):
        with pytest.raises(ValueError, match='unknown'):
            models.SiameseNet(**kwargs)


def test_the_sizes_the_paper_gives():
    # plain about the course's 70k, ws half of it, plain-small about ws's size.
    size = {r['name']: models.nb_parameters(entry.network(r, 0, 0)) for r in entry.ROWS}
    assert 60000 < size['plain'] < 75000 and size['plain'] == size['aux']
    assert size['ws'] == size['ws+aux'] and abs(size['ws'] - size['plain'] / 2) < 1000
    assert abs(size['plain-small'] - size['ws']) < 0.05 * size['ws']


def test_the_posterior_head_is_the_exact_probability():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 10)
    out = models.PosteriorHead()(logits)
    p = logits.softmax(-1)
    brute = torch.tensor([sum(p[n, 0, i] * p[n, 1, j] for i in range(10) for j in range(10)
                              if i <= j) for n in range(5)])
    assert torch.allclose(out[:, 1].exp(), brute, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-6)


def test_confident_digits_give_the_course_target():
    for a, b in itertools.product(range(10), repeat=2):
        logits = torch.full((1, 2, 10), -30.0)
        logits[0, 0, a] = logits[0, 1, b] = 30.0
        for head in (models.PosteriorHead(), models.ArgmaxHead()):
            assert head(logits).argmax(1).item() == int(a <= b)


def test_the_softmax_mlp_head_reads_the_probabilities_and_the_other_the_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 10)
    for head, same in (('mlp-softmax', True), ('mlp', False)):
        torch.manual_seed(1)
        module = models.comparison_head(head)
        # Adding a constant to a digit's logits leaves its probabilities as they are.
        assert torch.allclose(module(logits), module(logits + 3.0), atol=1e-6) == same


def test_the_matched_digit_error_forgives_a_relabelling_only():
    classes = torch.arange(10).repeat(3).view(-1, 2)
    assert matched_digit_error((classes + 1) % 10, classes) == 0.0
    wrong = classes.clone()
    wrong.view(-1)[0] = 5  # one misread digit of 30
    assert matched_digit_error(wrong, classes) == pytest.approx(100 / 30)
