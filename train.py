"""Training and evaluation: a hand-written mini-batch loop over tensors, and one evaluation function.

The loss is cross-entropy on the pair target plus, when `aux_weight > 0`, `aux_weight` times the
cross-entropy of the digit logits on both digit classes. The auxiliary loss lives here, not in
the model, so a variant with and without it is the same network.
"""
import contextlib
import ctypes
import functools
import hashlib
import math
import time

import torch
import torch.nn.functional as F

import dlc_practical_prologue as prologue
import models
from study import provenance


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


######################################################################
# Speed paths: each used where the installed torch and the machine have it, found by trying it.

@functools.lru_cache(maxsize=None)
def native_bf16(device='cpu'):
    """True where bfloat16 autocast runs in hardware: a CPU with AVX512-BF16 or AMX (elsewhere
    oneDNN emulates it, slower than float32), or a GPU that supports it; and a torch with
    autocast on that device (torch 1.10 and later)."""
    if device == 'cuda':
        supported = getattr(torch.cuda, 'is_bf16_supported', lambda: False)
        if not supported():
            return False
    elif provenance.bf16_kind() == 'none' or not torch.backends.mkldnn.is_available():
        return False
    try:
        with autocast(device, True):
            torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
        return True
    except (AttributeError, RuntimeError, TypeError):
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


######################################################################
# One round of one row: its pairs, its network, training, then the figures on the test pairs.

def seed_for(*keys):
    """A 63-bit seed from (base seed, round, purpose): independent streams, stable everywhere."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], 'little') >> 1


def digest(*tensors):
    """12 hex digits of the tensors' exact contents: which pairs and initial weights a run
    used, checkable across runs and machines."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return h.hexdigest()[:12]


def load_pairs(config, data_seed, validation, round_index, data_dir):
    """The six course tensors of one round. With validation, the 'test' tensors are a held-out
    quarter of the training pairs and no test pair is ever drawn."""
    generator = torch.Generator().manual_seed(data_seed)
    if not validation:
        return prologue.generate_pair_sets(config['nb_pairs'], generator=generator,
                                           data_dir=data_dir, nb_test=config['nb_test_pairs'],
                                           quiet=True)
    input, target, classes = prologue.generate_split_pairs(
        config['nb_pairs'], 'train', generator, data_dir, quiet=True)
    # Round r holds out quarter r % 4 of its training pairs, so all of them serve in turn.
    held_out = torch.zeros(input.size(0), dtype=torch.bool)
    quarter = input.size(0) // 4
    start = (round_index % 4) * quarter
    held_out[start:start + quarter] = True
    return (input[~held_out], target[~held_out], classes[~held_out],
            input[held_out], target[held_out], classes[held_out])


def prepare_inputs(train_input, test_input, deskew_digits):
    """Deskews each image on its own if asked, then standardizes both with the training
    statistics only: a test input never depends on the other test inputs."""
    if deskew_digits:
        train_input, test_input = deskew(train_input), deskew(test_input)
    return standardize(train_input, test_input)


def build_model(config):
    if config['net'] == 'pairnet':
        return models.PairNet(config['kind'], config['depth'], config['hidden'],
                              config['batch_norm'], config['dropout'])
    return models.SiameseNet(config['share_weights'], config['backbone'], config['head'],
                             config['batch_norm'], config['dropout'], config['width'])


def to_device(model, device, channels_last):
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def run_round(config, seed, round_index, device='cpu', channels_last=False, allow_bf16=False,
              data_dir=None, validation=False, curves=False, keep_mistakes=False, verbose=False):
    """Trains one row (config) for one round and returns its figures (errors in %).

    Pairs, initial weights and training randomness come from seeds derived from (seed,
    round_index), so round r of every row sees the same pairs. validation: score on a held-out quarter of the
    training pairs, never drawing a test pair; curves: also the errors after every epoch;
    keep_mistakes: the misread test pairs.
    """
    data_seed = seed_for(seed, round_index, 'data')
    pairs = load_pairs(config, data_seed, validation, round_index, data_dir)
    train_input, train_target, train_classes, test_input, test_target, test_classes = pairs
    raw_test_input = test_input
    train_input, test_input = prepare_inputs(train_input, test_input, config['deskew'])
    train_input, train_target, train_classes, test_input, test_target, test_classes = (
        t.to(device) for t in (train_input, train_target, train_classes,
                               test_input, test_target, test_classes))
    torch.manual_seed(seed_for(seed, round_index, 'weights'))
    model = to_device(build_model(config), device, channels_last)
    result = dict(name=config['name'], round=round_index, data_seed=data_seed,
                  pairs_digest=digest(*pairs), init_digest=digest(*model.state_dict().values()),
                  status='ok', nb_parameters=models.nb_parameters(model))
    curve = {'train_error': [], 'test_error': []}

    def record_epoch(epoch, model):
        for key, input, target in (('train_error', train_input, train_target),
                                   ('test_error', test_input, test_target)):
            curve[key].append(round(evaluate(model, input, target)['pair_error'], 2))
        if verbose:
            print(f"epoch {config['name']} round={round_index} epoch={epoch + 1} "
                  f"train_error={curve['train_error'][-1]:.2f}", flush=True)

    bf16 = allow_bf16 and config['bf16']
    # Wall time for the reader; processor time as the cost the tuning rule compares, which
    # other programs running on the machine barely change.
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        losses = train_model(
            model, train_input, train_target, train_classes, nb_epochs=config['nb_epochs'],
            mini_batch_size=config['mini_batch_size'], lr=config['lr'],
            weight_decay=config['weight_decay'], aux_weight=config['aux_weight'],
            shift=config['shift'], re_pair=config['re_pair'], schedule=config['schedule'],
            generator=torch.Generator().manual_seed(seed_for(seed, round_index, 'train')),
            bf16=bf16, on_epoch=record_epoch if curves else None)
    except TrainingDiverged as e:
        return dict(result, status='diverged', message=str(e))
    result['seconds'] = time.perf_counter() - start
    result['final_loss'] = losses[-1]
    start = time.perf_counter()
    test = evaluate(model, test_input, test_target, test_classes, tta=config['tta'], bf16=bf16)
    result['eval_seconds'] = time.perf_counter() - start
    result['cpu_seconds'] = time.process_time() - cpu_start
    trained = evaluate(model, train_input, train_target, train_classes, tta=config['tta'],
                       bf16=bf16)
    # Digit outputs trained by nothing but a learned head need not be digits: no digit error.
    has_digits = config['net'] == 'siamese' and (config['aux_weight'] > 0
                                                 or config['head'] == 'posterior')
    result.update(test_error=test['pair_error'], train_error=trained['pair_error'],
                  test_digit_error=test['digit_error'] if has_digits else None,
                  train_digit_error=trained['digit_error'] if has_digits else None)
    if curves:
        result['curve'] = curve
    if config['net'] == 'siamese' and config['aux_weight'] == 0 and config['head'] == 'posterior':
        # Without digit labels the digit outputs may still be digits, under some relabeling.
        result['matched_digit_error'] = matched_digit_error(test['digit_pred'], test_classes)
    if keep_mistakes:
        wrong = (test['pair_pred'] != test_target).nonzero().flatten()
        result['mistakes'] = [dict(index=i, classes=test_classes[i].tolist(),
                                   target=test_target[i].item(),
                                   predicted_digits=None if test['digit_pred'] is None
                                   else test['digit_pred'][i].tolist(),
                                   image=raw_test_input[i].round().int().tolist())
                              for i in wrong.tolist()]
    return result



def matched_digit_error(digit_pred, classes):
    """Digit error (%) after the best one-to-one relabeling of the ten outputs (exact, by
    dynamic programming over subsets of digits)."""
    pred, true = digit_pred.reshape(-1).tolist(), classes.reshape(-1).tolist()
    counts = [[0] * 10 for _ in range(10)]
    for p, t in zip(pred, true):
        counts[p][t] += 1
    best = {0: 0}  # mask of digits used by outputs 0..k-1 -> most agreements
    for output in range(10):
        nxt = {}
        for mask, score in best.items():
            for digit in range(10):
                if not mask >> digit & 1:
                    key = mask | 1 << digit
                    nxt[key] = max(nxt.get(key, -1), score + counts[output][digit])
        best = nxt
    return 100.0 * (1 - best[(1 << 10) - 1] / len(pred))
