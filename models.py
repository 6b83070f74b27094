"""Networks that compare two 14x14 MNIST digits. `SiameseNet`, the model of the study, has one
argument per design axis (sharing, digit branch, head, batch norm, dropout, width) and returns
`(pair_logits, digit_logits)`; whether the digits get a loss is train.py's business. `PairNet` is
the non-Siamese baseline that sees the two digits as two channels."""
import torch
from torch import nn
import torch.nn.functional as F

BACKBONES = {
    'conv': 'two 3x3 conv layers with max pooling, then two linear layers (the classic design)',
    'lenet5': 'LeNet-5 adapted to 14x14: two 5x5 conv layers, then three linear layers',
    'lenet5fc': 'LeNet-5 with its linear layers as convolutions (fully convolutional)',
    'resnet': 'a small ResNet: 3x3 stem, two stages of one residual block, global pooling',
    'vgg': 'VGG-style: two stages of two 3x3 conv layers and max pooling, one linear layer',
}
HEADS = {
    'mlp': 'an MLP on the 20 concatenated digit logits (learned)',
    'mlp-softmax': 'the same MLP on the two digit softmaxes, the probabilities (learned)',
    'outer': 'the outer product of the two digit softmaxes into a linear layer (learned)',
    'posterior': 'the exact P(d1 <= d2) from the two digit softmaxes (no parameters)',
    'argmax': 'compares the two predicted digits (no parameters, trained by the digit loss only)',
}


def conv_block(c_in, c_out, kernel_size, batch_norm, padding=0, stride=1, pool=False):
    # Pooling first, so that batch norm and ReLU work on a quarter of the values.
    return ([nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=not batch_norm)]
            + [nn.MaxPool2d(2)] * pool + [nn.BatchNorm2d(c_out)] * batch_norm + [nn.ReLU()])


def linear_block(n_in, n_out, batch_norm, dropout):
    return ([nn.Dropout(dropout)] * (dropout > 0) + [nn.Linear(n_in, n_out, bias=not batch_norm)]
            + [nn.BatchNorm1d(n_out)] * batch_norm + [nn.ReLU()])


def classifier(n_in, batch_norm, dropout):
    return ([nn.Flatten()] + linear_block(n_in, 96, batch_norm, dropout)
            + ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(96, 10)])


class ResidualBlock(nn.Module):
    def __init__(self, channels, batch_norm):
        super().__init__()
        self.body = nn.Sequential(*conv_block(channels, channels, 3, batch_norm, padding=1),
                                  nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
                                  nn.BatchNorm2d(channels) if batch_norm else nn.Identity())

    def forward(self, x):
        return F.relu(x + self.body(x))


def digit_branch(backbone='conv', batch_norm=False, dropout=0.0, width=1):
    """A network from one 1 x 14 x 14 image to 10 digit logits; width scales its channels."""
    w = lambda c: int(round(c * width))
    if backbone == 'conv':
        layers = (conv_block(1, w(16), 3, batch_norm, padding=1, pool=True)
                  + conv_block(w(16), w(32), 3, batch_norm, padding=1, pool=True)
                  + classifier(w(32) * 9, batch_norm, dropout))
    elif backbone in ('lenet5', 'lenet5fc'):
        layers = (conv_block(1, w(6), 5, batch_norm, padding=2, pool=True)
                  + conv_block(w(6), w(16), 5, batch_norm))
        if backbone == 'lenet5':
            layers += ([nn.Flatten()] + linear_block(w(16) * 9, w(120), batch_norm, dropout)
                       + linear_block(w(120), w(84), batch_norm, dropout) + [nn.Linear(w(84), 10)])
        else:  # the linear layers as a 3x3 and two 1x1 convolutions: same parameters, no Flatten
            layers += (conv_block(w(16), w(120), 3, batch_norm)
                       + ([nn.Dropout(dropout)] if dropout > 0 else [])
                       + conv_block(w(120), w(84), 1, batch_norm)
                       + [nn.Conv2d(w(84), 10, 1), nn.Flatten()])
    elif backbone == 'resnet':
        layers = (conv_block(1, w(16), 3, batch_norm, padding=1)
                  + [ResidualBlock(w(16), batch_norm)]
                  + conv_block(w(16), w(32), 3, batch_norm, padding=1, stride=2)
                  + [ResidualBlock(w(32), batch_norm), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
                  + ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(w(32), 10)])
    elif backbone == 'vgg':
        layers = (conv_block(1, w(20), 3, batch_norm, padding=1)
                  + conv_block(w(20), w(20), 3, batch_norm, padding=1, pool=True)
                  + conv_block(w(20), w(40), 3, batch_norm, padding=1)
                  + conv_block(w(40), w(40), 3, batch_norm, padding=1, pool=True)
                  + [nn.Flatten()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
                  + [nn.Linear(w(40) * 9, 10)])
    else:
        raise ValueError(f'unknown backbone {backbone!r}; choose from {", ".join(BACKBONES)}')
    return nn.Sequential(*layers)


class MLPHead(nn.Module):
    def __init__(self, softmax=False, hidden=64):
        super().__init__()
        self.softmax = softmax  # probabilities: no head can lean on the logits' free scale
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(20, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, digit_logits):
        return self.net(digit_logits.softmax(-1) if self.softmax else digit_logits)


class OuterHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(100, 2)

    def forward(self, digit_logits):
        p = digit_logits.softmax(-1)
        return self.linear((p[:, 0, :, None] * p[:, 1, None, :]).flatten(1))


class PosteriorHead(nn.Module):
    """log P(d1 > d2) and log P(d1 <= d2) for independent digits: normalized log-probabilities,
    so cross-entropy on them is exactly the negative log-likelihood of the pair target."""

    def forward(self, digit_logits):
        log_p = digit_logits.log_softmax(-1)
        joint = log_p[:, 0, :, None] + log_p[:, 1, None, :]  # joint[n, i, j] = log p1(i) p2(j)
        digits = torch.arange(10, device=joint.device)
        le = digits[:, None] <= digits[None, :]  # le[i, j]: i <= j
        return torch.stack((joint.masked_fill(le, -float('inf')).flatten(1).logsumexp(1),
                            joint.masked_fill(~le, -float('inf')).flatten(1).logsumexp(1)), 1)


class ArgmaxHead(nn.Module):
    def forward(self, digit_logits):
        digits = digit_logits.argmax(-1)
        return F.one_hot((digits[:, 0] <= digits[:, 1]).long(), 2).float()


def comparison_head(head):
    if head not in HEADS:
        raise ValueError(f'unknown head {head!r}; choose from {", ".join(HEADS)}')
    return {'mlp': MLPHead, 'mlp-softmax': lambda: MLPHead(softmax=True), 'outer': OuterHead,
            'posterior': PosteriorHead, 'argmax': ArgmaxHead}[head]()


class SiameseNet(nn.Module):
    """Two digit branches and a comparison head: N x 2 x 14 x 14 in, (pair_logits N x 2, digit
    logits N x 2 x 10) out; pair class 1 means "first digit <= second", as the course's target."""

    def __init__(self, share_weights=True, backbone='conv', head='mlp', batch_norm=False,
                 dropout=0.0, width=1):
        super().__init__()
        self.share_weights = share_weights
        self.branch_a = digit_branch(backbone, batch_norm, dropout, width)
        # Sharing reuses the module itself, so parameters() lists the shared weights once.
        self.branch_b = self.branch_a if share_weights else digit_branch(backbone, batch_norm,
                                                                         dropout, width)
        self.head = comparison_head(head)

    def forward(self, x):
        if self.share_weights:  # one call on both images: one batch norm over all digits
            digit_logits = self.branch_a(x.reshape(-1, 1, *x.shape[2:])).view(-1, 2, 10)
        else:
            digit_logits = torch.stack((self.branch_a(x[:, :1]), self.branch_b(x[:, 1:])), 1)
        return self.head(digit_logits), digit_logits


class PairNet(nn.Module):
    """The pair as one 2-channel image, no digit outputs. kind 'fc': `depth` hidden linear layers
    of `hidden` units; 'conv': `depth` 3x3 conv layers (max pooling after the first two, then
    down to 3x3) and one hidden linear layer."""

    def __init__(self, kind='fc', depth=2, hidden=128, batch_norm=False, dropout=0.0):
        super().__init__()
        if kind == 'fc':
            layers, n = [nn.Flatten()], 2 * 14 * 14
            for _ in range(depth):
                layers += linear_block(n, hidden, batch_norm, dropout)
                n = hidden
        elif kind == 'conv':
            layers, c = [], 2
            for i in range(depth):
                layers += conv_block(c, 32 * 2 ** min(i, 1), 3, batch_norm, padding=1, pool=i < 2)
                c = 32 * 2 ** min(i, 1)
            layers += [nn.AdaptiveMaxPool2d(3), nn.Flatten()]
            layers += linear_block(c * 9, hidden, batch_norm, dropout)
            n = hidden
        else:
            raise ValueError(f"unknown baseline kind {kind!r}; choose 'fc' or 'conv'")
        self.net = nn.Sequential(*layers, nn.Linear(n, 2))

    def forward(self, x):
        return self.net(x), None


def nb_parameters(model):
    return sum(p.numel() for p in model.parameters())
