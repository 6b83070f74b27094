"""Training and evaluation (a plain mini-batch loop over tensors, one evaluation function) and
the figures of many rounds. The loss is the pair cross-entropy plus `aux_weight` times the digit
cross-entropy of both digits: the auxiliary loss lives here, so a variant with and without it is
the same network."""
import functools
import math

import torch
import torch.nn.functional as F


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@functools.lru_cache(maxsize=None)
def fused_adamw(device='cpu'):
    """True where torch has the fused AdamW kernel for the device (CUDA from torch 2.0, CPU from
    2.4): one call updates every parameter, far cheaper on small nets than a loop over them."""
    try:
        weight = torch.zeros(1, device=device, requires_grad=True)
        weight.grad = torch.zeros(1, device=device)
        torch.optim.AdamW([weight], fused=True).step()
        return True
    except (TypeError, RuntimeError, ValueError):
        return False


def deskew(input):
    """Shears each image (raw, background 0, N x C x H x W) so its ink leans neither left nor
    right about its centre of mass (classic MNIST deskewing): it reads the image alone, so it
    applies alike to training and test digits; 1000 pairs are too few to learn slant away."""
    n, c, h, w = input.shape
    images = input.reshape(n * c, h, w)
    y = torch.arange(h, dtype=input.dtype, device=input.device).view(1, h, 1)
    x = torch.arange(w, dtype=input.dtype, device=input.device).view(1, 1, w)
    mass = images.sum((1, 2), keepdim=True).clamp(min=1e-6)
    y_mean = (images * y).sum((1, 2), keepdim=True) / mass
    x_mean = (images * x).sum((1, 2), keepdim=True) / mass
    y_var = (images * (y - y_mean) ** 2).sum((1, 2), keepdim=True) / mass
    xy_cov = (images * (y - y_mean) * (x - x_mean)).sum((1, 2), keepdim=True) / mass
    slant = xy_cov / y_var.clamp(min=1e-6)  # x moves by `slant` pixels per row
    # Output pixel (x, y) reads the input at (x + slant * (y - y_mean), y), in grid_sample's
    # coordinates: -1 and 1 are the outer edges of the first and last pixels.
    source_x = (x + slant * (y - y_mean)).expand(n * c, h, w)
    grid = torch.stack(((2 * source_x + 1) / w - 1, ((2 * y + 1) / h - 1).expand(n * c, h, w)), -1)
    out = F.grid_sample(images[:, None], grid, align_corners=False, padding_mode='zeros')
    return out.view(n, c, h, w)


def prepare_inputs(train_input, test_input, deskew_digits):
    """Deskews each image on its own if asked, then standardizes both with the training
    statistics only: a test input never depends on the other test inputs."""
    if deskew_digits:
        train_input, test_input = deskew(train_input), deskew(test_input)
    mean, std = train_input.mean(), train_input.std()
    return (train_input - mean) / std, (test_input - mean) / std


def shift_images(input, max_shift, generator=None, shifts=None):
    """Shifts each digit image by up to max_shift pixels in x and y, each digit at random unless
    `shifts` (N x 2 x 2 integer offsets) fixes them; the uncovered edge is background."""
    n, c, h, w = input.shape
    if shifts is None:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, c, 2), generator=generator)
    shifts = shifts.to(input.device)
    # Pad with each image's own background (its minimum): no edge, no dependence on the batch.
    background = input.flatten(2).min(2)[0][..., None, None]
    padded = background.repeat(1, 1, h + 2 * max_shift, w + 2 * max_shift)
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = input
    rows = (torch.arange(h, device=input.device) + max_shift - shifts[..., 0, None])
    cols = (torch.arange(w, device=input.device) + max_shift - shifts[..., 1, None])
    i = torch.arange(n, device=input.device)[:, None, None, None]
    j = torch.arange(c, device=input.device)[None, :, None, None]
    return padded[i, j, rows[..., :, None], cols[..., None, :]]


def draw_new_pairs(input, classes, generator):
    """Draws a new random pairing of the training digits, with targets from their classes."""
    images, digits = input.reshape(-1, 1, *input.shape[2:]), classes.reshape(-1)
    order = torch.randperm(digits.numel(), generator=generator).to(input.device)
    input, classes = images[order].view(input.shape), digits[order].view(classes.shape)
    return input, (classes[:, 0] <= classes[:, 1]).long(), classes


def one_cycle(total_steps, warmup=0.25):
    """Rate factor: a linear rise over the first quarter of the steps, then a linear fall to
    1 / (the remaining steps + 1) at the last."""
    rise = max(1, round(warmup * total_steps))
    return lambda step: ((step + 1) / rise if step < rise
                         else (total_steps - step) / (total_steps - rise + 1))


TRAINING = ('nb_epochs', 'mini_batch_size', 'lr', 'weight_decay', 'aux_weight', 'shift', 're_pair',
            'schedule')  # the settings of a row that train_model takes


def train_model(model, train_input, train_target, train_classes, nb_epochs=25,
                mini_batch_size=100, lr=1e-3, weight_decay=0.0, aux_weight=0.0, shift=0,
                re_pair=False, schedule='constant', generator=None, on_epoch=None):
    """Trains in place with AdamW; returns each epoch's mean loss. shift: random shifts of up to
    this many pixels; re_pair: new pairs of the digits each epoch (needs the digit loss); schedule:
    'constant' or 'onecycle'; on_epoch(epoch, model) after each epoch (learning curves)."""
    if re_pair and aux_weight <= 0:
        raise ValueError('re_pair uses the digit classes: it needs aux_weight > 0')
    # torch before 1.5 refuses generator=None in randperm; its default generator is the same draw.
    generator = torch.default_generator if generator is None else generator
    device = next(model.parameters()).device
    nb_batches = math.ceil(train_input.size(0) / mini_batch_size)
    fused = dict(fused=True) if fused_adamw(device.type) else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, **fused)
    if schedule not in ('constant', 'onecycle'):
        raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'onecycle'")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle(nb_epochs * nb_batches)
                                                  if schedule == 'onecycle' else lambda step: 1)
    losses = []
    for epoch in range(nb_epochs):
        model.train()
        input, target, classes = train_input, train_target, train_classes
        if re_pair:
            input, target, classes = draw_new_pairs(input, classes, generator)
        if shift:
            input = shift_images(input, shift, generator)
        batches = list(torch.randperm(input.size(0), generator=generator).to(device)
                       .split(mini_batch_size))
        if len(batches) > 1 and batches[-1].numel() == 1:  # batch norm needs two samples
            batches[-2:] = [torch.cat(batches[-2:])]
        total = torch.zeros((), device=device)
        for batch in batches:
            pair_logits, digit_logits = model(input[batch])
            loss = F.cross_entropy(pair_logits, target[batch])
            if aux_weight > 0:
                loss = loss + aux_weight * F.cross_entropy(digit_logits.reshape(-1, 10),
                                                           classes[batch].reshape(-1))
            for p in model.parameters():  # as zero_grad(set_to_none=True), which torch < 1.7 lacks
                p.grad = None
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * batch.numel()
        losses.append(total.item() / input.size(0))
        if not math.isfinite(losses[-1]):
            raise TrainingDiverged(f'the training loss became {losses[-1]} at epoch {epoch + 1}')
        if on_epoch is not None:
            on_epoch(epoch, model)
    return losses


TTA_SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]


@torch.no_grad()
def evaluate(model, input, target, classes=None, mini_batch_size=500, tta=False):
    """Pair and digit error in % (digit error None without digit outputs or classes) and the
    predictions; tta: average the probabilities over the image and its four one-pixel shifts."""
    was_training = model.training
    model.eval()
    pair_p, digit_p = [], []
    for x in input.split(mini_batch_size):
        outputs = [model(shift_images(x, 1, shifts=torch.tensor(s).expand(x.size(0), 2, 2)))
                   for s in TTA_SHIFTS] if tta else [model(x)]
        pair_p.append(sum(pair.softmax(1) for pair, _ in outputs))  # 0 + p is p exactly
        digit_p.append(None if outputs[0][1] is None else sum(d.softmax(-1) for _, d in outputs))
    model.train(was_training)
    pair_pred = torch.cat(pair_p).argmax(1)
    result = {'pair_error': 100.0 * (pair_pred != target).float().mean().item(),
              'digit_error': None, 'pair_pred': pair_pred, 'digit_pred': None}
    if digit_p[0] is not None:
        result['digit_pred'] = torch.cat(digit_p).argmax(-1)
        if classes is not None:
            result['digit_error'] = 100.0 * (result['digit_pred'] != classes).float().mean().item()
    return result


######################################################################
# The figures of many rounds: mean, std, and paired differences with their t intervals.

def mean_std(values):
    """Mean and sample standard deviation (n - 1; None for one value)."""
    mean, n = sum(values) / len(values), len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None


@functools.lru_cache(maxsize=None)  # the same few quantiles, asked for many times
def t_quantile(level, df):
    """q with P(|T| <= q) = level for Student's t with df degrees of freedom: Simpson's rule on
    its density, then bisection (the standard library has no t distribution)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)
    inside = lambda q, n=2000: 2 * q / (3 * n) * sum(
        (1 if k in (0, n) else 4 if k % 2 else 2) * density(k * q / n) for k in range(n + 1))
    low, high = 0.0, 1.0
    while inside(high) < level:
        low, high = high, 2 * high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if inside(mid) < level else (low, mid)
    return (low + high) / 2


def contrast(runs, weights, relative=False):
    """A contrast of test errors, round by round over the rounds its rows all finished: the sum of
    weight x error ({'ws': 1, 'plain': -1} is ws - plain), on the log scale when relative (so
    ws / plain as a log ratio); runs: {row name: results}. None where a log meets a zero error."""
    errors = [{r['round']: r['test_error'] for r in runs.get(n, []) if r['status'] == 'ok'}
              for n in weights]
    rounds = sorted(set.intersection(*map(set, errors)))
    if relative and any(e[k] <= 0 for e in errors for k in rounds):
        return None
    scale = math.log if relative else float
    return [sum(w * scale(e[k]) for w, e in zip(weights.values(), errors)) for k in rounds]


def interval(values, level=0.95):
    """The mean of values and its Student t interval at level; None below two values."""
    if not values or len(values) < 2:
        return None
    mean, std = mean_std(values)
    half = t_quantile(level, len(values) - 1) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def family(runs, contrasts):
    """Each contrast of a study's family (name, weights, relative) with its mean and interval,
    Bonferroni-adjusted: each at level 1 - 0.05 / m for the family's m contrasts. A relative one
    is given as the change in % of the error (exp of the mean log ratio, minus 1)."""
    level = 1 - 0.05 / len(contrasts) if contrasts else 0.95
    out = []
    for name, weights, relative in contrasts:
        values = contrast(runs, weights, relative)
        ci = interval(values, level) if values else None
        if ci and relative:
            ci = tuple(100 * (math.exp(v) - 1) for v in ci)
        out.append(dict(name=name, weights=weights, relative=relative, family=len(contrasts),
                        level=level, n=len(contrast(runs, weights)),
                        **(dict(mean=ci[0], ci=list(ci[1:])) if ci else {})))
    return out


def signed(x, digits=2):
    """x with its sign; a value that rounds to zero is +0, never -0."""
    text = '{:+.{}f}'.format(x, digits)
    return text.replace('-', '+') if float(text) == 0 else text


def contrast_text(c):
    """'+mean [low, high] pp' (or '%' for a relative contrast), or why there is none."""
    if 'mean' not in c:
        return 'needs two rounds' if c['n'] < 2 else 'no log of a zero error'
    d = 0 if c['relative'] else 2
    return '{} [{}, {}] {}'.format(signed(c['mean'], d), signed(c['ci'][0], d),
                                   signed(c['ci'][1], d), '%' if c['relative'] else 'pp')


def round_line(r):
    """The greppable line of one round's result."""
    if r['status'] != 'ok':
        return 'row={name} round={round} diverged: {message}'.format(**r)
    digit = '-' if r['test_digit_error'] is None else '{:.2f}'.format(r['test_digit_error'])
    return ('row={} round={} test_error={:.2f} digit_error={} train_error={:.2f} '
            'seconds={:.2f}'.format(r['name'], r['round'], r['test_error'], digit,
                                    r['train_error'], r['seconds']))


def pm(values):
    """'mean ± std' of the values that are not None, the mean alone for one, or '-'."""
    values = [v for v in values if v is not None]
    mean, std = mean_std(values) if values else (None, None)
    return '-' if mean is None else '{:.2f}'.format(mean) + (
        '' if std is None else ' ± {:.2f}'.format(std))


def table(rows, runs, contrasts):
    """Lines: each row's mean ± std over its finished rounds, then the family of contrasts with
    Bonferroni-adjusted intervals; rows: configs, runs: {row name: results}."""
    form = '{:<22} {:>7} {:>14} {:>14} {:>13} {:>6}'
    lines = ['', form.format('row', 'params', 'test error %', 'digit error %', 'train error %',
                             's/run')]
    for config in rows:
        ok = [r for r in runs[config['name']] if r['status'] == 'ok']
        figures = [pm([r[key] for r in ok]) for key in ('test_error', 'test_digit_error',
                                                         'train_error')]
        seconds = '{:.2f}'.format(sum(r['seconds'] for r in ok) / len(ok)) if ok else '-'
        lines.append(form.format(config['name'], ok[0]['nb_parameters'] if ok else '-', *figures,
                                 seconds))
    if contrasts:
        lines += ['', 'Paired differences of test error on the same rounds (pp; %: relative '
                  'change), intervals Bonferroni-adjusted for these {}:'.format(len(contrasts))]
    for c in family(runs, contrasts):
        lines.append('  {:<34} {}'.format(c['name'], contrast_text(c)))
    return lines
