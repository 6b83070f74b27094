"""MNIST digit pairs for EE-559 Project 1, with torch and the standard library only.

The course contract: `generate_pair_sets(nb)` returns `train_input, train_target, train_classes,
test_input, test_target, test_classes` (float32 nb x 2 x 14 x 14 on the 0-255 scale, int64 nb,
int64 nb x 2). MNIST is read from `<root>/mnist/MNIST/raw/` (torchvision's layout), root being
`data_dir`, else $PYTORCH_DATA_DIR, else ./data; each file as `.gz` or unpacked (as torchvision
leaves it), a missing one downloaded. A damaged file raises DataError, one line naming it and
the fix. Importing this module has no side effects.
"""
import gzip
import hashlib
import http.client
import os
import struct
import urllib.request
import zlib

import torch
import torch.nn.functional as F

MIRROR = 'https://ossci-datasets.s3.amazonaws.com/mnist/'  # torchvision's; or $MNIST_MIRROR
# name: (MD5 of the unpacked content, so any faithful packing is accepted; IDX magic; shape).
FILES = {
    'train-images-idx3-ubyte': ('6bbc9ace898e44ae57da46a324031adb', 2051, (60000, 28, 28)),
    'train-labels-idx1-ubyte': ('a25bea736e30d166cdddb491f175f624', 2049, (60000,)),
    't10k-images-idx3-ubyte': ('2646ac647ad5339dbf082846283269ea', 2051, (10000, 28, 28)),
    't10k-labels-idx1-ubyte': ('27ae3e4e09519cfbb04c329615203637', 2049, (10000,)),
}
SPLITS = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
SPLIT_SIZES = {'train': 60000, 'test': 10000}
FIX = 'delete it and rerun to download it again, or point --data_dir at a good copy'
_cache = {}  # decoded splits: many rounds of one process read and check the files once


class DataError(RuntimeError):
    """MNIST is missing, unreadable or corrupt; the message names the file and the fix."""


def _decode(path, name, content):
    """The checked content of one IDX file as a uint8 tensor."""
    md5, magic, shape = FILES[name]
    header = 4 + 4 * len(shape)
    if len(content) < header or struct.unpack('>I', content[:4])[0] != magic:
        raise DataError('{} is not an MNIST IDX file; {}'.format(path, FIX))
    if struct.unpack('>' + 'I' * len(shape), content[4:header]) != shape \
            or hashlib.md5(content).hexdigest() != md5:
        raise DataError('{} is truncated or corrupt (wrong size or checksum); {}'.format(path, FIX))
    if hasattr(torch, 'frombuffer'):  # torch 1.10 and later; before, a storage from the bytes
        return torch.frombuffer(bytearray(content), dtype=torch.uint8, offset=header).view(shape)
    return torch.ByteTensor(torch.ByteStorage.from_buffer(content[header:])).view(shape)


def _read(folder, name):
    """One file, unpacked or .gz, downloading the .gz where neither is there."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        path += '.gz'
        if not os.path.exists(path):
            _download(path)
    try:
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            content = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError('{} cannot be read ({}); {}'.format(path, e, FIX)) from None
    return _decode(path, name, content)


def _download(path):
    """Fetches path's file; only a complete file gets its name (a check follows on reading)."""
    url = (os.environ.get('MNIST_MIRROR') or MIRROR) + os.path.basename(path)
    partial = path + '.part'
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, 'wb') as out:
            out.write(response.read())
        os.replace(partial, path)
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise DataError('{} is missing and could not be downloaded from {} ({}); put the four '
                        'MNIST files in {}'.format(path, url, getattr(e, 'reason', e),
                                                   os.path.dirname(path))) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def downsampled(split='train', data_dir=None):
    """The split as float32 N x 1 x 14 x 14, 0-255 scale (avg_pool2d, kernel 2), and labels."""
    root = data_dir or os.environ.get('PYTORCH_DATA_DIR') or './data'
    folder = os.path.abspath(os.path.join(root, 'mnist', 'MNIST', 'raw'))
    if (folder, split) not in _cache:
        images, labels = (_read(folder, name) for name in SPLITS[split])
        _cache[folder, split] = (F.avg_pool2d(images.view(-1, 1, 28, 28).float(), kernel_size=2),
                                 labels.long())
    return _cache[folder, split]


def mnist_to_pairs(nb, input, target, generator=None):
    """Draws 2*nb distinct images and pairs them; target 1 when the first digit is <= the second."""
    # torch 1.4 refuses generator=None; its default generator is the same draw.
    generator = torch.default_generator if generator is None else generator
    a = torch.randperm(input.size(0), generator=generator)[:2 * nb].view(nb, 2)
    input = torch.cat((input[a[:, 0]], input[a[:, 1]]), 1)
    classes = target[a]
    target = (classes[:, 0] <= classes[:, 1]).long()
    return input, target, classes


def generate_split_pairs(nb, split, generator=None, data_dir=None):
    """nb pairs from one MNIST split: input float32 nb x 2 x 14 x 14 (0-255), target, classes.
    ValueError unless 2*nb distinct images can be drawn."""
    limit = SPLIT_SIZES[split] // 2
    if not isinstance(nb, int) or isinstance(nb, bool) or not 1 <= nb <= limit:
        raise ValueError('{!r} {} pairs cannot be drawn: each pair takes two distinct images of '
                         'the {} in MNIST {}, so use 1 to {}'.format(nb, split, SPLIT_SIZES[split],
                                                                     split, limit))
    return mnist_to_pairs(nb, *downsampled(split, data_dir), generator)


def generate_pair_sets(nb, generator=None, seed=None, data_dir=None, nb_test=None):
    """The course helper: nb train and nb (or nb_test) test pairs, drawn with `generator`, else
    one seeded with `seed`, else torch's global generator, as in the course."""
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    nb_test = nb if nb_test is None else nb_test
    return (generate_split_pairs(nb, 'train', generator, data_dir)
            + generate_split_pairs(nb_test, 'test', generator, data_dir))


def generate_validation_sets(nb, part, generator=None, data_dir=None):
    """The six course tensors from MNIST train alone, for choosing settings: nb training pairs,
    of which quarter `part` (0-3) is held out as the 'test' set. No test image is read."""
    input, target, classes = generate_split_pairs(nb, 'train', generator, data_dir)
    held_out = torch.zeros(nb, dtype=torch.bool)
    held_out[part * (nb // 4):(part + 1) * (nb // 4)] = True
    return (input[~held_out], target[~held_out], classes[~held_out],
            input[held_out], target[held_out], classes[held_out])
