"""Training and evaluation: a hand-written mini-batch loop over tensors, and one evaluation function.

The loss is cross-entropy on the pair target plus, when `aux_weight > 0`, `aux_weight` times the
cross-entropy of the digit logits on both digit classes. The auxiliary loss lives here, not in
the model, so a variant with and without it is the same network.
"""
import contextlib
import math

import torch
import torch.nn.functional as F

import provenance


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def native_bf16():
    """True if this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), so autocast is fast.

    Without it oneDNN emulates bfloat16, which is slower than float32: then it stays off.
    """
    return provenance.bf16_kind() != 'none' and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast(device, enabled):
    if not enabled:
        return contextlib.nullcontext()
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
    mass = images.sum((1, 2), keepdim=True).clamp_min(1e-6)
    y_mean = (images * y).sum((1, 2), keepdim=True) / mass
    x_mean = (images * x).sum((1, 2), keepdim=True) / mass
    y_var = (images * (y - y_mean) ** 2).sum((1, 2), keepdim=True) / mass
    xy_cov = (images * (y - y_mean) * (x - x_mean)).sum((1, 2), keepdim=True) / mass
    slant = xy_cov / y_var.clamp_min(1e-6)  # x moves by `slant` pixels per row
    # Output pixel (x, y) reads the input at (x + slant * (y - y_mean), y), in grid_sample's
    # coordinates: -1 and 1 are the outer edges of the first and last pixels.
    source_x = (x + slant * (y - y_mean)).expand(n * c, h, w)
    grid = torch.stack(((2 * source_x + 1) / w - 1, ((2 * y + 1) / h - 1).expand(n * c, h, w)), -1)
    out = F.grid_sample(images[:, None], grid, align_corners=False, padding_mode='zeros')
    return out.view(n, c, h, w)


def shift_images(input, max_shift, generator=None, shifts=None):
    """Moves each 14 x 14 image by up to max_shift pixels in x and y, filling with the background.

    `shifts` (N x 2 x 2 integer offsets) fixes the moves; otherwise they are drawn at random, for
    each digit of each pair independently.
    """
    n, c, h, w = input.shape
    if shifts is None:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, c, 2), generator=generator)
    shifts = shifts.to(input.device)
    # The background is an image's minimum after standardization; pad each image with its own,
    # so a shift adds no edge and no image depends on the others of its batch.
    padded = input.amin((2, 3), keepdim=True).repeat(1, 1, h + 2 * max_shift, w + 2 * max_shift)
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = input
    rows = (torch.arange(h, device=input.device) + max_shift - shifts[..., 0, None])
    cols = (torch.arange(w, device=input.device) + max_shift - shifts[..., 1, None])
    i = torch.arange(n, device=input.device)[:, None, None, None]
    j = torch.arange(c, device=input.device)[None, :, None, None]
    return padded[i, j, rows[..., :, None], cols[..., None, :]]


def draw_new_pairs(input, classes, generator=None):
    """Draws a new random pairing of the training digits, with targets from their classes."""
    images, digits = input.reshape(-1, 1, *input.shape[2:]), classes.reshape(-1)
    order = torch.randperm(digits.numel(), generator=generator).to(input.device)
    input, classes = images[order].view(input.shape), digits[order].view(classes.shape)
    return input, (classes[:, 0] <= classes[:, 1]).long(), classes


def one_cycle(total_steps, warmup=0.25):
    """Learning-rate factor: a linear rise over the first quarter of the steps, then a linear
    fall to zero. A high peak rate early and a low rate at the end need fewer epochs."""
    rise = max(1, round(warmup * total_steps))
    return lambda step: (step + 1) / rise if step < rise else (total_steps - step) / (total_steps - rise + 1)


def train_model(model, train_input, train_target, train_classes, nb_epochs=25,
                mini_batch_size=100, lr=1e-3, weight_decay=0.0, aux_weight=0.0, shift=0,
                re_pair=False, schedule='constant', generator=None, bf16=False,
                on_epoch=None):
    """Trains in place with AdamW; returns the mean training loss of each epoch.

    shift: random moves of up to this many pixels each epoch; re_pair: draw new pairs of the
    training digits each epoch (uses the digit classes, so only with the auxiliary loss); schedule:
    'constant' or 'onecycle' (warm-up then annealing, which needs fewer epochs);
    on_epoch(epoch, model) is called after each epoch (for learning curves).
    """
    if re_pair and aux_weight <= 0:
        raise ValueError('re_pair uses the digit classes: it needs aux_weight > 0')
    device = next(model.parameters()).device
    nb_batches = math.ceil(train_input.size(0) / mini_batch_size)
    # The fused kernel updates all parameters in one call: the step costs much less on small nets.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  fused=device.type in ('cpu', 'cuda'))
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
            optimizer.zero_grad(set_to_none=True)
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
    """Pair error and digit error (in %, digit error None without digit outputs or classes).

    tta: average the predicted probabilities over the image and its four one-pixel moves.
    Also returns the predicted pair classes and digits, for inspecting the mistakes.
    """
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
