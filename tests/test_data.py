"""The prologue keeps the course contract and reads MNIST as torchvision leaves it, packed or
not, with the same numbers either way; a missing file is downloaded; a damaged one is a one-line
error that names it and the fix."""
import gzip
import http.server
import os
import shutil
import threading

import pytest
import torch

import dlc_practical_prologue as prologue
from conftest import RAW, DATA_DIR, torch_1_4_randperm

def test_the_course_contract_shapes_dtypes_and_targets():
    pairs = prologue.generate_pair_sets(1000)
    shapes = [(1000, 2, 14, 14), (1000,), (1000, 2)] * 2
    assert [tuple(t.shape) for t in pairs] == shapes
    assert [t.dtype for t in pairs] == [torch.float32, torch.int64, torch.int64] * 2
    for input, target, classes in (pairs[:3], pairs[3:]):
        assert torch.equal(target, (classes[:, 0] <= classes[:, 1]).long())
        assert 0 <= input.min() and input.max() <= 255  # the course's 0-255 scale
        assert 20 < input.mean() < 45  # MNIST's mean ink, downsampled


def test_pairs_are_2nb_distinct_images_of_their_split_with_their_labels():
    for split in ('train', 'test'):
        images, labels = prologue.downsampled(split, DATA_DIR)
        input, target, classes = prologue.generate_split_pairs(
            500, split, torch.Generator().manual_seed(1), DATA_DIR)
        flat = input.reshape(1000, -1)
        assert len({tuple(x.tolist()) for x in flat}) == 1000
        index = {tuple(x.tolist()): int(y) for x, y in zip(images.reshape(len(images), -1),
                                                          labels)}
        assert [index[tuple(x.tolist())] for x in flat] == classes.reshape(-1).tolist()


def test_downsampled_is_the_2x2_average_of_the_28x28_digits():
    images, _ = prologue.downsampled('test', DATA_DIR)
    with gzip.open(os.path.join(RAW, 't10k-images-idx3-ubyte.gz')) as f:
        raw = torch.tensor(list(f.read()[16:16 + 28 * 28]), dtype=torch.float32).view(28, 28)
    assert torch.allclose(images[0, 0], raw.view(14, 2, 14, 2).mean((1, 3)))


def test_the_global_generator_where_torch_1_4_refuses_none(monkeypatch):
    torch_1_4_randperm(monkeypatch)
    torch.manual_seed(5)
    a = prologue.generate_pair_sets(10)
    torch.manual_seed(5)
    assert all(torch.equal(x, y) for x, y in zip(a, prologue.generate_pair_sets(10)))


def test_a_seed_gives_the_same_pairs_and_another_seed_others():
    a, b, c = (prologue.generate_pair_sets(50, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize('nb', [0, -1, 30001, 2.5, True])
def test_impossible_sizes(nb):
    with pytest.raises(ValueError, match='pairs cannot be drawn'):
        prologue.generate_pair_sets(nb)


@pytest.fixture
def copy(tmp_path):
    """A data folder holding a copy of the four files, packed as they are here."""
    raw = tmp_path / 'mnist' / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    for name in prologue.FILES:
        shutil.copy(os.path.join(RAW, name + '.gz'), raw)
    prologue._cache.clear()
    yield tmp_path, raw
    prologue._cache.clear()


def test_unpacked_files_give_the_same_numbers(copy):
    root, raw = copy
    for name in prologue.FILES:
        with gzip.open(str(raw / (name + '.gz'))) as f, open(str(raw / name), 'wb') as out:
            out.write(f.read())
        os.remove(str(raw / (name + '.gz')))
    unpacked = prologue.generate_pair_sets(100, seed=3, data_dir=str(root))
    prologue._cache.clear()
    packed = prologue.generate_pair_sets(100, seed=3, data_dir=DATA_DIR)
    assert all(torch.equal(x, y) for x, y in zip(unpacked, packed))


def damage(path, how):
    data = gzip.open(path).read()
    if how == 'truncated':
        open(path, 'wb').write(open(path, 'rb').read()[:1000])
    elif how == 'not gzip':
        open(path, 'wb').write(b'hello')
    else:
        data = {'wrong magic': b'\0\0\0\0' + data[4:], 'wrong size': data[:-10],
                'wrong content': data[:-1] + bytes([data[-1] ^ 1])}[how]
        with gzip.open(path, 'wb') as f:
            f.write(data)


@pytest.mark.parametrize('how', ['truncated', 'not gzip', 'wrong magic', 'wrong size',
                                 'wrong content'])
def test_a_damaged_file_is_one_line_that_names_it_and_the_fix(copy, how):
    root, raw = copy
    path = str(raw / 't10k-labels-idx1-ubyte.gz')
    damage(path, how)
    with pytest.raises(prologue.DataError) as error:
        prologue.downsampled('test', str(root))
    message = str(error.value)
    assert path in message and 'delete it and rerun' in message and '\n' not in message


class Mirror(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_missing_file_is_downloaded_checked_and_nothing_partial_is_left(copy, monkeypatch):
    root, raw = copy
    served = root / 'served'
    served.mkdir()
    shutil.move(str(raw / 't10k-images-idx3-ubyte.gz'), str(served))
    handler = lambda *a: Mirror(*a, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv('MNIST_MIRROR', 'http://127.0.0.1:{}/'.format(server.server_port))
    try:
        images, _ = prologue.downsampled('test', str(root))
        assert images.shape == (10000, 1, 14, 14)
        assert (raw / 't10k-images-idx3-ubyte.gz').exists()
        os.remove(str(raw / 't10k-images-idx3-ubyte.gz'))
        os.remove(str(served / 't10k-images-idx3-ubyte.gz'))  # now the mirror has nothing
        prologue._cache.clear()
        with pytest.raises(prologue.DataError, match='could not be downloaded'):
            prologue.downsampled('test', str(root))
        assert sorted(os.listdir(str(raw))) == sorted(
            n + '.gz' for n in prologue.FILES if n != 't10k-images-idx3-ubyte')
    finally:
        server.shutdown()
