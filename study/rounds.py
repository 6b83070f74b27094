"""A round as the studies record it: test.run_round, plus the digests of its pairs and initial
weights, the errors after every epoch (curves), the misread test pairs, and the digit error of
a net trained without digit labels after relabelling its outputs."""
import ctypes
import hashlib

import torch

import test
import train


def digest(*tensors):
    """12 hex digits of the tensors' exact contents: which pairs and initial weights a run
    used, checkable across runs and machines."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return h.hexdigest()[:12]


def run_round(config, seed, round_index, device='cpu', channels_last=False, allow_bf16=False,
              data_dir=None, validation=False, curves=False, keep_mistakes=False, verbose=False):
    """test.run_round of one row and round, with what a results file records of it; a
    diverged run comes back with status 'diverged' and its message."""
    head = dict(name=config['name'], round=round_index,
                data_seed=test.seed_for(seed, round_index, 'data'),
                init_digest=digest(*test.network(config, seed, round_index).state_dict().values()))
    curve = {'train_error': [], 'test_error': []}

    def record_epoch(epoch, model, train_input, train_target, test_input, test_target):
        if curves:
            for key, input, target in (('train_error', train_input, train_target),
                                       ('test_error', test_input, test_target)):
                curve[key].append(round(train.evaluate(model, input, target)['pair_error'], 2))
        if verbose:
            error = train.evaluate(model, train_input, train_target)['pair_error']
            print(f"epoch {config['name']} round={round_index} epoch={epoch + 1} "
                  f"train_error={error:.2f}", flush=True)

    result = test.run_round(config, seed, round_index, device, data_dir, validation,
                            channels_last, allow_bf16, keep=True,
                            on_epoch=record_epoch if curves or verbose else None)
    if result['status'] != 'ok':
        return dict(head, **result)
    kept = result.pop('kept')
    result = dict(head, pairs_digest=digest(*kept['pairs']), **result)
    if curves:
        result['curve'] = curve
    test_eval = {k: v.cpu() if torch.is_tensor(v) else v for k, v in kept['test'].items()}
    test_target, test_classes = kept['pairs'][4], kept['pairs'][5]
    if config['net'] == 'siamese' and config['aux_weight'] == 0 and config['head'] == 'posterior':
        # Without digit labels the digit outputs may still be digits, under some relabelling.
        result['matched_digit_error'] = matched_digit_error(test_eval['digit_pred'], test_classes)
    if keep_mistakes:
        raw_test_input = kept['pairs'][3]
        wrong = (test_eval['pair_pred'] != test_target).nonzero().flatten()
        result['mistakes'] = [dict(index=i, classes=test_classes[i].tolist(),
                                   target=test_target[i].item(),
                                   predicted_digits=None if test_eval['digit_pred'] is None
                                   else test_eval['digit_pred'][i].tolist(),
                                   image=raw_test_input[i].round().int().tolist())
                              for i in wrong.tolist()]
    return result


def matched_digit_error(digit_pred, classes):
    """Digit error (%) after the best one-to-one relabelling of the ten outputs (exact, by
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
