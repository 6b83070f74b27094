"""MNIST digit pairs for EE-559 Project 1, with torch and the standard library only.

Keeps the course contract: `generate_pair_sets(nb)` returns
`train_input, train_target, train_classes, test_input, test_target, test_classes`
(float32 nb x 2 x 14 x 14 on the raw 0-255 scale, int64 nb, int64 nb x 2).

The four MNIST files are read from `<root>/mnist/MNIST/raw/` (torchvision's layout), where root is
the `data_dir` argument, else `$PYTORCH_DATA_DIR`, else `./data` (a root pointed at `mnist/`,
`MNIST/` or `raw/` itself is understood). Missing files are downloaded;
every file is checked (gzip stream, IDX magic and sizes, MD5 of the decompressed content) and any
problem raises `DataError` with a one-line message that names the file and the fix.
Importing this module has no side effects.
"""
import gzip
import hashlib
import http.client
import os
import struct
import sys
import urllib.request
import zlib

import torch
import torch.nn.functional as F

# Tried in order; the first is the mirror torchvision uses since yann.lecun.com became unreliable.
# $MNIST_MIRROR (a URL ending in /) replaces them, for a local copy or a proxy.
MIRRORS = [
    'https://ossci-datasets.s3.amazonaws.com/mnist/',
    'http://yann.lecun.com/exdb/mnist/',
]

# name: (MD5 of the decompressed content, IDX magic number, shape). Checking the content rather
# than the .gz accepts any faithful re-compression of the canonical files.
FILES = {
    'train-images-idx3-ubyte.gz': ('6bbc9ace898e44ae57da46a324031adb', 2051, (60000, 28, 28)),
    'train-labels-idx1-ubyte.gz': ('a25bea736e30d166cdddb491f175f624', 2049, (60000,)),
    't10k-images-idx3-ubyte.gz': ('2646ac647ad5339dbf082846283269ea', 2051, (10000, 28, 28)),
    't10k-labels-idx1-ubyte.gz': ('27ae3e4e09519cfbb04c329615203637', 2049, (10000,)),
}
SPLITS = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
          'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
SPLIT_SIZES = {'train': 60000, 'test': 10000}

# Decoded splits, kept per process so that many rounds read and check the files only once.
_cache = {}


class DataError(RuntimeError):
    """MNIST is missing, unreadable or corrupt; the message says which file and what to do."""


def data_root(data_dir=None):
    """The data root: the argument, else $PYTORCH_DATA_DIR, else ./data (as the course helper)."""
    if data_dir is None:
        data_dir = os.environ.get('PYTORCH_DATA_DIR') or './data'
    return data_dir


def raw_dir(data_dir=None):
    """The folder of the four files: <root>/mnist/MNIST/raw/ (torchvision's layout, where missing
    files are downloaded to), or the first of <root>/MNIST/raw/, <root>/raw/ and root itself that
    holds one of them: a --data_dir pointed at mnist/, MNIST/ or raw/ is understood."""
    root = data_root(data_dir)
    canonical = os.path.join(root, 'mnist', 'MNIST', 'raw')
    for folder in (canonical, os.path.join(root, 'MNIST', 'raw'), os.path.join(root, 'raw'), root):
        if any(os.path.exists(os.path.join(folder, name)) for name in FILES):
            return folder
    return canonical


FIX = ('point --data_dir or PYTORCH_DATA_DIR at a folder holding mnist/MNIST/raw/ with the four '
       'MNIST .gz files')


def _decode(path, name, content):
    """Checks one decompressed IDX file and returns it as a uint8 tensor."""
    md5, magic, shape = FILES[name]
    header = 4 + 4 * len(shape)
    if len(content) < header:
        raise DataError(f'{path} is truncated (no complete IDX header); delete it and rerun to '
                        f'download it again, or {FIX}')
    got_magic = struct.unpack('>I', content[:4])[0]
    if got_magic != magic:
        raise DataError(f'{path} is not the expected IDX file (magic number {got_magic}, '
                        f'expected {magic}); replace it with the original MNIST file, or {FIX}')
    got_shape = struct.unpack('>' + 'I' * len(shape), content[4:header])
    if got_shape != shape or len(content) != header + _product(shape):
        raise DataError(f'{path} has the wrong size (header {got_shape}, {len(content) - header} '
                        f'bytes of data; expected {shape}); delete it and rerun to download it '
                        f'again, or {FIX}')
    if hashlib.md5(content).hexdigest() != md5:
        raise DataError(f'{path} fails its checksum (MD5 of the content is not {md5}); delete it '
                        f'and rerun to download it again, or {FIX}')
    return _uint8_tensor(content, header).view(shape)


def _product(shape):
    n = 1
    for size in shape:
        n *= size
    return n


def _uint8_tensor(content, offset):
    """The bytes of content from offset on, as a uint8 tensor (a copy, without numpy)."""
    if hasattr(torch, 'frombuffer'):  # torch 1.10 and later
        return torch.frombuffer(bytearray(content), dtype=torch.uint8, offset=offset)
    return torch.ByteTensor(torch.ByteStorage.from_buffer(content[offset:]))


def _read(path, name):
    try:
        with gzip.open(path, 'rb') as f:
            content = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f'{path} cannot be decompressed ({e}): it is truncated or corrupt; '
                        f'delete it and rerun to download it again, or {FIX}') from None
    return _decode(path, name, content)


def _download(folder, name, quiet=False):
    """Fetches one file into folder; only a complete, verified file ever gets its final name."""
    path = os.path.join(folder, name)
    created = _missing_folders(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f'{path} is missing and {folder} cannot be created ({e.strerror}); '
                        f'{FIX}') from None
    if not os.access(folder, os.W_OK):
        raise DataError(f'{path} is missing and {folder} is not writable, so it cannot be '
                        f'downloaded; {FIX}')
    try:
        return _from_mirrors(path, name, quiet)
    except BaseException:  # failed or interrupted: leave no empty folders behind (say, after a typo)
        for empty in created:
            try:
                os.rmdir(empty)
            except OSError:
                break
        raise


def _missing_folders(folder):
    """folder and those of its parents that do not exist yet, deepest first."""
    missing, folder = [], os.path.abspath(folder)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _from_mirrors(path, name, quiet):
    partial = path + '.part'  # a fixed name, so a new attempt overwrites an interrupted one
    reasons = []
    mirrors = [os.environ['MNIST_MIRROR']] if os.environ.get('MNIST_MIRROR') else MIRRORS
    for mirror in mirrors:
        try:
            _fetch(mirror + name, partial, name, quiet)
            tensor = _read(partial, name)
            os.replace(partial, path)
            return tensor
        except (OSError, ValueError, http.client.HTTPException, DataError) as e:
            reasons.append(f'{mirror}: {getattr(e, "reason", None) or e}')
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    raise DataError(f'{path} is missing and could not be downloaded ({"; ".join(reasons)}); '
                    f'{FIX}')


def _fetch(url, dest, name, quiet):
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, 'wb') as out:
        total = int(response.headers.get('Content-Length') or 0)
        done = 0
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if not quiet and total:
                print(f'\rdownloading {name}: {100 * done // total}% of {total / 1e6:.1f} MB',
                      end='', file=sys.stderr, flush=True)
        if not quiet:
            print(file=sys.stderr)
        if total and done != total:
            raise ValueError(f'download interrupted after {done} of {total} bytes')


def load_mnist(split='train', data_dir=None, download=True, quiet=False):
    """Returns (images uint8 N x 28 x 28, labels int64 N) of the 'train' or 'test' split."""
    folder = raw_dir(data_dir)
    key = (os.path.abspath(folder), split)
    if key not in _cache:
        tensors = []
        for name in SPLITS[split]:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                tensors.append(_read(path, name))
            elif download:
                tensors.append(_download(folder, name, quiet))
            else:
                raise DataError(f'{path} is missing; {FIX}')
        _cache[key] = (tensors[0], tensors[1].long())
    return _cache[key]


def downsampled(split='train', data_dir=None, quiet=False):
    """The split as float32 N x 1 x 14 x 14 on the 0-255 scale (avg_pool2d, kernel 2), and labels."""
    key = (os.path.abspath(raw_dir(data_dir)), split, 14)
    if key not in _cache:
        images, labels = load_mnist(split, data_dir, quiet=quiet)
        _cache[key] = (F.avg_pool2d(images.view(-1, 1, 28, 28).float(), kernel_size=2), labels)
    return _cache[key]


def mnist_to_pairs(nb, input, target, generator=None):
    """Draws 2*nb distinct images and pairs them; target is 1 when the first digit is <= the second."""
    # torch before 1.5 refuses generator=None; its default generator is the same draw.
    generator = torch.default_generator if generator is None else generator
    a = torch.randperm(input.size(0), generator=generator)[:2 * nb].view(nb, 2)
    input = torch.cat((input[a[:, 0]], input[a[:, 1]]), 1)
    classes = target[a]
    target = (classes[:, 0] <= classes[:, 1]).long()
    return input, target, classes


def check_pair_count(nb, split):
    """Raises ValueError unless nb pairs (2*nb distinct images) can be drawn from the split."""
    limit = SPLIT_SIZES[split] // 2
    if not isinstance(nb, int) or isinstance(nb, bool) or not 1 <= nb <= limit:
        raise ValueError(f'{nb!r} {split} pairs cannot be drawn: each pair takes two distinct '
                         f'images of the {SPLIT_SIZES[split]} in MNIST {split}, so use 1 to {limit}')


def generate_split_pairs(nb, split, generator=None, data_dir=None, quiet=False):
    """nb pairs from one MNIST split: input float32 nb x 2 x 14 x 14 (0-255), target, classes."""
    check_pair_count(nb, split)
    return mnist_to_pairs(nb, *downsampled(split, data_dir, quiet), generator)


def generate_pair_sets(nb, generator=None, seed=None, data_dir=None, nb_test=None, quiet=False):
    """The course helper: nb train and nb (or nb_test) test pairs, drawn with `generator`, else
    one seeded with `seed`, else torch's global generator, as in the course."""
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    nb_test = nb if nb_test is None else nb_test
    check_pair_count(nb, 'train')
    check_pair_count(nb_test, 'test')
    return (generate_split_pairs(nb, 'train', generator, data_dir, quiet)
            + generate_split_pairs(nb_test, 'test', generator, data_dir, quiet))


def generate_validation_sets(nb, part, generator=None, data_dir=None, quiet=False):
    """The six course tensors from MNIST train alone, for choosing settings: nb training pairs,
    of which quarter `part` (0-3) is held out as the 'test' set. No test image is read."""
    input, target, classes = generate_split_pairs(nb, 'train', generator, data_dir, quiet)
    held_out = torch.zeros(nb, dtype=torch.bool)
    quarter = nb // 4
    held_out[part * quarter:(part + 1) * quarter] = True
    return (input[~held_out], target[~held_out], classes[~held_out],
            input[held_out], target[held_out], classes[held_out])
