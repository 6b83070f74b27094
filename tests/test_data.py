"""The pair data: the course contract on real MNIST, and clear errors for broken or missing files."""
import gzip
import http.server
import os
import shutil
import struct
import tempfile
import threading
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from tests.common import DATA_DIR, prologue, rounds, torch_1_4_randperm

RAW = prologue.raw_dir(DATA_DIR)


class CourseContract(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sets = prologue.generate_pair_sets(1000, seed=0)

    def test_shapes_and_dtypes(self):
        shapes = [(1000, 2, 14, 14), (1000,), (1000, 2)] * 2
        dtypes = [torch.float32, torch.int64, torch.int64] * 2
        self.assertEqual([tuple(t.shape) for t in self.sets], shapes)
        self.assertEqual([t.dtype for t in self.sets], dtypes)

    def test_targets_match_classes(self):
        for input, target, classes in (self.sets[:3], self.sets[3:]):
            self.assertTrue(torch.equal(target, (classes[:, 0] <= classes[:, 1]).long()))
            self.assertTrue(((classes >= 0) & (classes <= 9)).all())

    def test_course_scale_and_mnist_mean(self):
        # Raw 0-255 scale, as the course; the mean of MNIST train pixels / 255 is 0.1307.
        images, labels = prologue.load_mnist('train')
        self.assertAlmostEqual((images.float() / 255).mean().item(), 0.1307, places=4)
        self.assertEqual(labels[:10].tolist(), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
        train_input = self.sets[0]
        self.assertAlmostEqual(train_input.max().item(), 255.0, delta=20)
        self.assertAlmostEqual((train_input / 255).mean().item(), 0.1307, delta=0.01)

    def test_images_are_distinct(self):
        for input in (self.sets[0], self.sets[3]):
            images = input.reshape(-1, 196)
            self.assertEqual(torch.unique(images, dim=0).size(0), images.size(0))

    def test_pairs_use_2nb_distinct_indices(self):
        # Each image is its own index: then every drawn pair shows which images were used.
        ids = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 14, 14)
        input, target, classes = prologue.mnist_to_pairs(25, ids, torch.arange(50) % 10)
        used = input[:, :, 0, 0].flatten()
        self.assertEqual(len(set(used.tolist())), 50)

    def test_pairs_come_from_their_split_with_their_labels(self):
        # Every image of a training pair is an image of MNIST train, with its label as its class;
        # every image of a test pair is one of MNIST test (the two splits share no image).
        found = {}
        for split in ('train', 'test'):
            images, labels = prologue.downsampled(split)
            for image, label in zip(images, labels.tolist()):
                found.setdefault(rounds.digest(image), set()).add((split, label))
        for split, (input, target, classes) in (('train', self.sets[:3]), ('test', self.sets[3:])):
            for image, label in zip(input.reshape(-1, 1, 14, 14), classes.reshape(-1).tolist()):
                self.assertIn((split, label), found.get(rounds.digest(image), set()), split)

    def test_draws_as_the_course_helper_from_the_global_generator(self):
        for seed in (0, 1):
            torch.manual_seed(seed)
            ours = prologue.generate_pair_sets(50)
            torch.manual_seed(seed)
            self.assertTrue(all(torch.equal(a, b) for a, b in zip(ours, course_pair_sets(50))))
        torch.manual_seed(0)
        first = prologue.generate_pair_sets(50)
        self.assertFalse(torch.equal(first[0], ours[0]))  # seeds 0 and 1 differ

    def test_the_global_generator_where_torch_1_4_refuses_none(self):
        # torch 1.4's randperm refuses generator=None: the course call must still draw, the same
        # pairs as from the global generator.
        torch.manual_seed(3)
        expected = prologue.generate_pair_sets(50)
        torch.manual_seed(3)
        with torch_1_4_randperm():
            found = prologue.generate_pair_sets(50)
        self.assertTrue(all(torch.equal(a, b) for a, b in zip(found, expected)))

    def test_seed_gives_same_pairs_and_other_seed_other_pairs(self):
        a = prologue.generate_pair_sets(100, seed=5)
        b = prologue.generate_pair_sets(100, seed=5)
        c = prologue.generate_pair_sets(100, seed=6)
        self.assertTrue(all(torch.equal(x, y) for x, y in zip(a, b)))
        self.assertFalse(torch.equal(a[0], c[0]))

    def test_impossible_sizes(self):
        for nb, kw in ((0, {}), (-3, {}), (30001, {}), (100, {'nb_test': 5001}), (1.5, {})):
            with self.assertRaisesRegex(ValueError, 'pairs cannot be drawn'):
                prologue.generate_pair_sets(nb, seed=0, **kw)


def course_pair_sets(nb):
    """What the course helper draws: its mnist_to_pairs on the train then the test split, from
    torch's global generator (the four MNIST files standing in for torchvision's loader)."""
    out = ()
    for split in ('train', 'test'):
        images, labels = prologue.load_mnist(split)
        input = F.avg_pool2d(images.view(-1, 1, 28, 28).float(), kernel_size=2)
        a = torch.randperm(input.size(0))[:2 * nb].view(nb, 2)
        classes = labels[a]
        out += (torch.cat((input[a[:, 0]], input[a[:, 1]]), 1),
                (classes[:, 0] <= classes[:, 1]).long(), classes)
    return out


def write_gz(path, content):
    with gzip.open(path, 'wb') as f:
        f.write(content)


class DataDir(unittest.TestCase):
    """--data_dir may name the root of mnist/MNIST/raw/, or mnist/, MNIST/ or raw/ itself."""

    def test_every_level_of_the_layout_is_understood(self):
        root = tempfile.mkdtemp()
        try:
            raw = os.path.join(root, 'mnist', 'MNIST', 'raw')
            os.makedirs(raw)
            open(os.path.join(raw, 'train-images-idx3-ubyte.gz'), 'w').close()
            for given in (root, os.path.join(root, 'mnist'), os.path.join(root, 'mnist', 'MNIST'),
                          raw):
                with self.subTest(given=given):
                    self.assertEqual(prologue.raw_dir(given), raw)
            empty = os.path.join(root, 'elsewhere')  # nothing there: downloads go to the layout
            self.assertEqual(prologue.raw_dir(empty), os.path.join(empty, 'mnist', 'MNIST', 'raw'))
        finally:
            shutil.rmtree(root)

    def test_the_real_files_through_the_raw_folder(self):
        raw = prologue.raw_dir(DATA_DIR)
        a = prologue.generate_pair_sets(50, seed=3, data_dir=DATA_DIR, nb_test=50, quiet=True)
        b = prologue.generate_pair_sets(50, seed=3, data_dir=raw, nb_test=50, quiet=True)
        for x, y in zip(a, b):
            self.assertTrue(torch.equal(x, y))


class BrokenFiles(unittest.TestCase):
    """Each broken file gives a DataError naming the file and the fix, never a wrong result."""

    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.raw = prologue.raw_dir(self.root)
        os.makedirs(self.raw)
        for name in prologue.FILES:
            shutil.copy(os.path.join(RAW, name), self.raw)
        os.chmod(self.raw, 0o755)
        for name in prologue.FILES:
            os.chmod(os.path.join(self.raw, name), 0o644)
        self.name = 't10k-labels-idx1-ubyte.gz'
        self.path = os.path.join(self.raw, self.name)
        with gzip.open(self.path) as f:
            self.content = f.read()
        prologue._cache.clear()

    def tearDown(self):
        shutil.rmtree(self.root)
        prologue._cache.clear()

    def assertDataError(self, pattern):
        with self.assertRaises(prologue.DataError) as caught:
            prologue.load_mnist('test', self.root, download=False)
        message = str(caught.exception)
        self.assertIn(self.path, message)
        self.assertRegex(message, pattern)
        self.assertIn('PYTORCH_DATA_DIR', message)
        self.assertNotIn('\n', message)

    def test_copy_is_valid(self):
        images, labels = prologue.load_mnist('test', self.root, download=False)
        self.assertEqual(tuple(images.shape), (10000, 28, 28))

    def test_truncated_gzip(self):
        with open(self.path, 'rb') as f:
            data = f.read()
        with open(self.path, 'wb') as f:
            f.write(data[:len(data) // 2])
        self.assertDataError('cannot be decompressed')

    def test_not_gzip(self):
        with open(self.path, 'wb') as f:
            f.write(b'<html>404 not found</html>')
        self.assertDataError('cannot be decompressed')

    def test_wrong_magic(self):
        write_gz(self.path, struct.pack('>I', 2051) + self.content[4:])
        self.assertDataError('magic number 2051')

    def test_wrong_size(self):
        write_gz(self.path, self.content[:-100])
        self.assertDataError('wrong size')
        write_gz(self.path, self.content[:8] + bytes(100))
        self.assertDataError('wrong size')

    def test_wrong_checksum(self):
        content = bytearray(self.content)
        content[100] = (content[100] + 1) % 10
        write_gz(self.path, bytes(content))
        self.assertDataError('checksum')

    def test_missing_without_download(self):
        os.remove(self.path)
        self.assertDataError('missing')


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the real files, or only the first half of them while claiming the full length."""
    half = False

    def do_GET(self):
        path = os.path.join(RAW, os.path.basename(self.path))
        if not os.path.exists(path):
            self.send_error(404)
            return
        with open(path, 'rb') as f:
            data = f.read()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2] if self.half else data)

    def log_message(self, *args):
        pass


class Download(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.raw = prologue.raw_dir(self.root)
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.server.server_port}/'
        prologue._cache.clear()
        Handler.half = False

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        os.chmod(self.root, 0o755)
        shutil.rmtree(self.root)
        prologue._cache.clear()

    def load(self, mirror):
        with mock.patch.dict(os.environ, {'MNIST_MIRROR': mirror}):
            return prologue.load_mnist('test', self.root, quiet=True)

    def test_download_writes_verified_files(self):
        images, labels = self.load(self.url)
        self.assertEqual(labels.numel(), 10000)
        self.assertEqual(sorted(os.listdir(self.raw)),
                         ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'])

    def test_no_network(self):
        with self.assertRaisesRegex(prologue.DataError, 'missing and could not be downloaded'):
            self.load('http://127.0.0.1:9/')  # nothing listens on the discard port
        self.assertEqual(os.listdir(self.root), [])  # no file, no empty folder

    def test_interrupted_download_leaves_nothing_and_next_run_recovers(self):
        Handler.half = True
        with self.assertRaisesRegex(prologue.DataError, 'interrupted|IncompleteRead|could not'):
            self.load(self.url)
        self.assertEqual(os.listdir(self.root), [])  # no file, no empty folder
        Handler.half = False
        prologue._cache.clear()
        self.assertEqual(self.load(self.url)[1].numel(), 10000)

    def test_ctrl_c_during_download_leaves_nothing(self):
        def half_then_interrupt(url, dest, name, quiet):
            with open(dest, 'wb') as f:
                f.write(b'partial')
            raise KeyboardInterrupt
        with mock.patch.object(prologue, '_fetch', half_then_interrupt):
            with self.assertRaises(KeyboardInterrupt):
                self.load(self.url)
        self.assertEqual(os.listdir(self.root), [])  # no file, no empty folder

    def test_read_only_folder(self):
        os.makedirs(self.raw)
        os.chmod(self.raw, 0o555)
        # root ignores permission bits: make the folder look read-only to root as well.
        real_access = os.access
        with mock.patch.object(prologue.os, 'access',
                               lambda path, mode: mode != os.W_OK and real_access(path, mode)):
            with self.assertRaisesRegex(prologue.DataError, 'not writable'):
                self.load(self.url)
        os.chmod(self.raw, 0o755)
        self.assertEqual(os.listdir(self.raw), [])


if __name__ == '__main__':
    unittest.main()
