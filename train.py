"""Training and evaluation: a hand-written mini-batch loop over tensors, one evaluation function,
and the figures of many rounds.

The loss is cross-entropy on the pair target plus, when `aux_weight > 0`, `aux_weight` times the
cross-entropy of the digit logits on both digit classes. The auxiliary loss lives here, not in
the model, so a variant with and without it is the same network.
"""
import contextlib
import functools
import math

import torch
import torch.nn.functional as F


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


######################################################################
# Speed paths: each used where the installed torch and the machine have it, found by trying it.
# None changes what is computed; each rounds sums its own way, so the numbers move within noise.

def cpu_flags():
    """The instruction sets this CPU announces (Linux; empty elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = [line.split(':', 1)[1] for line in f if line.startswith('flags')]
        return flags[0].split() if flags else []
    except OSError:
        return []


def bf16_kind():
    """How this CPU computes bfloat16: 'amx' (Intel AMX tiles), 'avx512_bf16' (vector
    instructions), or 'none' (emulated, slower than float32)."""
    flags = cpu_flags()
    return 'amx' if 'amx_bf16' in flags else 'avx512_bf16' if 'avx512_bf16' in flags else 'none'


@functools.lru_cache(maxsize=None)
def native_bf16(device='cpu'):
    """True where bfloat16 autocast runs in hardware: a CPU with AVX512-BF16 or AMX (elsewhere
    oneDNN emulates it, slower than float32), or a GPU that supports it; and a torch with
    autocast on that device (torch 1.10 and later)."""
    if device == 'cuda':
        supported = getattr(torch.cuda, 'is_bf16_supported', lambda: False)
        if not supported():
            return False
    elif bf16_kind() == 'none':
        return False
    # Tried on the operations of a digit branch, forward and backward: torch 1.10's CPU autocast
    # runs a linear layer in bfloat16 but has no bfloat16 max pooling.
    try:
        with autocast(device, True):
            x = torch.ones(2, 1, 4, 4, device=device, requires_grad=True)
            x = F.max_pool2d(F.conv2d(x, torch.ones(2, 1, 3, 3, device=device), padding=1), 2)
            x = F.batch_norm(x, None, None, training=True).flatten(1)
            F.linear(x, torch.ones(2, 8, device=device)).float().sum().backward()
        return True
    except (AttributeError, NotImplementedError, RuntimeError, TypeError):
        return False


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


def channels_last_works():
    """True where torch has the channels-last memory format (torch 1.5 and later)."""
    return hasattr(torch, 'channels_last')


def autocast(device, enabled):
    if not enabled:
        return contextlib.ExitStack()  # does nothing: Python 3.6 has no nullcontext
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def standardize(train_input, *inputs):
    """Standardizes every input with the mean and std of the training input."""
    mean, std = train_input.mean(), train_input.std()
    return [(x - mean) / std for x in (train_input,) + inputs]


def deskew(input):
    """Shears each image horizontally so its ink leans neither left nor right, about its centre of
    mass (the classic MNIST deskewing). Input: raw images, background 0, N x C x H x W.

    It uses nothing but the image itself, so it is applied alike to training and test digits;
    slant is a way of writing, not a part of the digit, and 750-1000 training pairs are too few
    to learn it away.
    """
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
    return standardize(train_input, test_input)


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


def draw_new_pairs(input, classes, generator=None):
    """Draws a new random pairing of the training digits, with targets from their classes."""
    images, digits = input.reshape(-1, 1, *input.shape[2:]), classes.reshape(-1)
    generator = torch.default_generator if generator is None else generator  # torch 1.4 needs one
    order = torch.randperm(digits.numel(), generator=generator).to(input.device)
    input, classes = images[order].view(input.shape), digits[order].view(classes.shape)
    return input, (classes[:, 0] <= classes[:, 1]).long(), classes


def one_cycle(total_steps, warmup=0.25):
    """Rate factor: a linear rise over the first quarter of the steps, a linear fall to zero."""
    rise = max(1, round(warmup * total_steps))
    return lambda step: ((step + 1) / rise if step < rise
                         else (total_steps - step) / (total_steps - rise + 1))


# The settings of a row that train_model takes.
TRAINING = ('nb_epochs', 'mini_batch_size', 'lr', 'weight_decay', 'aux_weight', 'shift', 're_pair',
            'schedule')


def train_model(model, train_input, train_target, train_classes, nb_epochs=25,
                mini_batch_size=100, lr=1e-3, weight_decay=0.0, aux_weight=0.0, shift=0,
                re_pair=False, schedule='constant', generator=None, bf16=False,
                on_epoch=None):
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
    scheduler = None
    if schedule == 'onecycle':
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, one_cycle(nb_epochs * nb_batches))
    elif schedule != 'constant':
        raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'onecycle'")
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
            with autocast(device, bf16):
                pair_logits, digit_logits = model(input[batch])
                loss = F.cross_entropy(pair_logits.float(), target[batch])
                if aux_weight > 0:
                    loss = loss + aux_weight * F.cross_entropy(
                        digit_logits.float().reshape(-1, 10), classes[batch].reshape(-1))
            for p in model.parameters():  # as zero_grad(set_to_none=True), which torch < 1.7 lacks
                p.grad = None
            loss.backward()
            optimizer.step()
            if scheduler is not None:
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
def evaluate(model, input, target, classes=None, mini_batch_size=500, tta=False, bf16=False):
    """Pair and digit error in % (digit error None without digit outputs or classes) and the
    predictions; tta: average the probabilities over the image and its four one-pixel shifts."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pair_p, digit_p = [], []
    for x in input.split(mini_batch_size):
        versions = [x]
        if tta:
            versions = [shift_images(x, 1, shifts=torch.tensor(s).expand(x.size(0), 2, 2))
                        for s in TTA_SHIFTS]
        p_sum = d_sum = None
        for v in versions:
            with autocast(device, bf16):
                pair_logits, digit_logits = model(v)
            p = pair_logits.float().softmax(1)
            p_sum = p if p_sum is None else p_sum + p
            if digit_logits is not None:
                d = digit_logits.float().softmax(-1)
                d_sum = d if d_sum is None else d_sum + d
        pair_p.append(p_sum)
        digit_p.append(d_sum)
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
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, std


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


def contrast(runs, names, nb_contrasts):
    """Name, mean and Bonferroni-adjusted interval (95 % for the family of nb_contrasts) of a
    contrast of test errors: (a, b) is a - b and (a, b, c, d) is (a - b) - (c - d), over the
    rounds its rows all finished; runs: {row name: results}. No mean below two rounds."""
    errors = [{r['round']: r['test_error'] for r in runs[n] if r['status'] == 'ok'} for n in names]
    rounds = sorted(set.intersection(*map(set, errors)))
    signs = (1, -1, -1, 1)[:len(names)]
    diffs = [sum(sign * e[r] for sign, e in zip(signs, errors)) for r in rounds]
    text = ' - '.join(names) if len(names) == 2 else '({} - {}) - ({} - {})'.format(*names)
    if len(diffs) < 2:
        return text, None, None
    mean, std = mean_std(diffs)
    half = t_quantile(1 - 0.05 / nb_contrasts, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return text, mean, (mean - half, mean + half)


def round_line(r):
    """The greppable line of one round's result."""
    if r['status'] != 'ok':
        return 'row={name} round={round} diverged: {message}'.format(**r)
    digit = '-' if r['test_digit_error'] is None else '{:.2f}'.format(r['test_digit_error'])
    return ('row={} round={} test_error={:.2f} digit_error={} train_error={:.2f} '
            'seconds={:.2f}'.format(r['name'], r['round'], r['test_error'], digit,
                                    r['train_error'], r['seconds']))


def table(rows, runs, contrasts):
    """Lines: each row's mean ± std over its finished rounds, then the family of contrasts with
    Bonferroni-adjusted intervals; rows: configs, runs: {row name: results}."""
    def pm(values):
        mean, std = mean_std(values) if values else (None, None)
        if mean is None:
            return '-'
        return '{:.2f}'.format(mean) if std is None else '{:.2f} ± {:.2f}'.format(mean, std)
    form = '{:<15} {:>7} {:>14} {:>14} {:>13} {:>6}'
    lines = ['', form.format('row', 'params', 'test error %', 'digit error %', 'train error %',
                             's/run')]
    for config in rows:
        ok = [r for r in runs[config['name']] if r['status'] == 'ok']
        figures = [pm([r[key] for r in ok if r[key] is not None])
                   for key in ('test_error', 'test_digit_error', 'train_error')]
        seconds = '{:.2f}'.format(sum(r['seconds'] for r in ok) / len(ok)) if ok else '-'
        lines.append(form.format(config['name'], ok[0]['nb_parameters'] if ok else '-', *figures,
                                 seconds))
    if contrasts:
        lines += ['', 'Paired differences of test error (pp) on the same rounds, 95 % intervals '
                  'Bonferroni-adjusted for these {} contrasts:'.format(len(contrasts))]
    signed = lambda x: '{:+.2f}'.format(x).replace('-0.00', '+0.00')
    for names in contrasts:
        text, mean, ci = contrast(runs, names, len(contrasts))
        figure = ('needs two rounds' if mean is None
                  else '{} [{}, {}]'.format(signed(mean), signed(ci[0]), signed(ci[1])))
        lines.append('  {:<34} {}'.format(text, figure))
    return lines


def check_torch_and_device(device):
    """The device to run on ('auto': cuda if there is one); ValueError for a torch below 1.4 or
    --device cuda without a GPU."""
    if tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (1, 4):
        raise ValueError('torch {} is installed; this project needs torch 1.4 or newer'.format(
            torch.__version__))
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda: there is no CUDA GPU here; use --device cpu')
    return 'cuda' if device == 'cuda' or device == 'auto' and torch.cuda.is_available() else 'cpu'


def speed_paths(device, no_bf16=False, no_channels_last=False, **options):
    """run_round's options for the speed paths this machine and torch have (unless refused)."""
    return dict(options, device=device, allow_bf16=not no_bf16 and native_bf16(device),
                channels_last=not no_channels_last and channels_last_works())


def speed_path_names(options):
    names = [name for name, on in (('channels-last', options['channels_last']),
                                   ('bf16 autocast', options['allow_bf16']),
                                   ('fused AdamW', fused_adamw(options['device']))) if on]
    return ', '.join(names) or 'none'
