"""``bioplaus_bench.data`` against tiny datasets written in torchvision's own formats (algorithms.md §7, §10).

Never touches the real datasets and never downloads. ``data._load_images`` is cached per
(name, settings), so every test uses its own ``tmp_path`` root and cache folder.
"""

from __future__ import annotations

import gzip
import os
import stat

import numpy as np
import pytest
import torch

from bioplaus_bench import data as D
from bioplaus_bench.data import DataMissingError, DataSettings, InputError, TeacherOptions
from bioplaus_bench.execution.setup import seed_everything

from .helpers import CIFAR_TRAIN_BATCHES, IDX_FILES

IDX_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def settings_for(tmp_path, *, verify: bool = False, download: bool = False) -> DataSettings:
    """Checksums are skipped unless a test asks: the tiny files here are never the originals."""
    return DataSettings(root=tmp_path / "data", download=download, verify_checksums=verify,
                        cache_dir=tmp_path / "cache")


def load(source, settings, *, seed=0, validation=None, subset=None):
    seed_everything(seed)
    return D.load_data(source, D.NoOptions(), settings, seed=seed, validation=validation,
                       subset=subset)


def trace(x: torch.Tensor, full: torch.Tensor) -> list[int]:
    """The row of ``full`` that each row of ``x`` is, exactly; each must match exactly one."""
    equal = (x.flatten(1)[:, None, :] == full.flatten(1)[None, :, :]).all(dim=-1)
    assert (equal.sum(dim=1) == 1).all(), "a sample is not exactly one row of the full training set"
    return equal.int().argmax(dim=1).tolist()


def snapshot(folder) -> dict[str, tuple[int, int, int]]:
    """Every path under ``folder`` with its mode, size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# --- Normalisation (algorithms.md §7) ------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_is_normalised_with_mnist_mean_and_std(tmp_path, make_idx_dataset, gz):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=30, n_test=7, seed=1, gz=gz)
    data = load("mnist", settings_for(tmp_path, verify=False))

    assert data.train.x.shape == (30, 1, 28, 28) and data.test.x.shape == (7, 1, 28, 28)
    assert data.train.x.dtype == torch.float32 and data.input_shape == (1, 28, 28)
    assert data.val is None
    for split, x, y in ((data.train, raw.train_x, raw.train_y), (data.test, raw.test_x, raw.test_y)):
        expected = (x.astype(np.float64) / 255.0 - 0.1307) / 0.3081
        np.testing.assert_allclose(split.x[:, 0].double().numpy(), expected, rtol=0, atol=1e-5)
        assert split.y.dtype == torch.long
        assert split.y.tolist() == y.tolist()
    # one pixel by hand: sample 4, row 10, column 13
    pixel = int(raw.train_x[4, 10, 13])
    assert float(data.train.x[4, 0, 10, 13]) == pytest.approx((pixel / 255 - 0.1307) / 0.3081, abs=1e-5)
    assert data.task.kind == "classification" and data.task.n_outputs == 10


def test_fashion_mnist_is_not_normalised(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "FashionMNIST", n_train=25, n_test=5, seed=2)
    data = load("fashion_mnist", settings_for(tmp_path))

    np.testing.assert_allclose(data.train.x[:, 0].double().numpy(), raw.train_x / 255.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(data.test.x[:, 0].double().numpy(), raw.test_x / 255.0, rtol=0, atol=1e-6)
    assert data.train.x.min() >= 0.0 and data.train.x.max() <= 1.0
    assert data.train.y.tolist() == raw.train_y.tolist()
    assert data.test.y.tolist() == raw.test_y.tolist()


def test_fashion_mnist_reads_its_own_folder_not_mnist(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", seed=3)
    fashion = make_idx_dataset(tmp_path / "data", "FashionMNIST", seed=4)
    data = load("fashion_mnist", settings_for(tmp_path))
    assert torch.equal(data.train.y, torch.from_numpy(fashion.train_y))
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), fashion.test_x / 255.0, atol=1e-6)


def test_cifar_is_normalised_per_channel_in_chw_order(tmp_path, make_cifar):
    raw = make_cifar(tmp_path / "data", n_per_batch=3, n_test=4, seed=5)
    # a recognisable pixel: sample 7 (in data_batch_3), blue channel (c=2), row 5, column 9
    data = load("cifar10", settings_for(tmp_path, verify=False))

    assert data.train.x.shape == (15, 3, 32, 32) and data.test.x.shape == (4, 3, 32, 32)
    assert data.input_shape == (3, 32, 32) and data.train.x.dtype == torch.float32
    c, h, w = 2, 5, 9
    byte = int(raw.train_x[7, c * 1024 + h * 32 + w])
    assert float(data.train.x[7, c, h, w]) == pytest.approx((byte / 255 - 0.5) / 0.5, abs=1e-6)
    for split, x, y in ((data.train, raw.train_x, raw.train_y), (data.test, raw.test_x, raw.test_y)):
        expected = (x.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0 - 0.5) / 0.5
        np.testing.assert_allclose(split.x.double().numpy(), expected, rtol=0, atol=1e-6)
        assert split.y.tolist() == y.tolist()
    # flattened for an MLP, the order is C, H, W: exactly the rows as stored in the pickles
    flat = data.train.x.flatten(1).double().numpy()
    np.testing.assert_allclose(flat, (raw.train_x / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert data.train.x.min() >= -1.0 and data.train.x.max() <= 1.0


def test_cifar_with_unmatched_checksums_is_rejected(tmp_path, make_cifar):
    make_cifar(tmp_path / "data")
    with pytest.raises(InputError, match="--skip-checksums") as error:
        load("cifar10", settings_for(tmp_path, verify=True))
    assert "cifar-10-batches-py" in str(error.value)
    assert not isinstance(error.value, DataMissingError)


def test_cifar_unverified_loads_and_warns(tmp_path, make_cifar, capsys):
    raw = make_cifar(tmp_path / "data", n_per_batch=2, n_test=3)
    data = load("cifar10", settings_for(tmp_path, verify=False))
    err = capsys.readouterr().err
    assert "warning" in err and "checksums" in err and str(tmp_path / "data") in err
    assert len(data.train) == 10 and len(data.test) == 3
    assert data.test.y.tolist() == raw.test_y.tolist()


# --- Compressed files, the decompression cache and read-only data folders -------------------

def test_gz_files_are_decompressed_into_the_cache(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=20, n_test=5, seed=6, gz=True)
    before = snapshot(tmp_path / "data")
    data = load("mnist", settings_for(tmp_path, verify=False))

    (cache_raw,) = (tmp_path / "cache").glob("MNIST-*/MNIST/raw")
    for key, name in IDX_FILES.items():
        written = gzip.decompress((raw.folder / f"{name}.gz").read_bytes())
        assert (cache_raw / name).read_bytes() == written, key
    assert snapshot(tmp_path / "data") == before  # nothing written next to the .gz files
    assert data.train.y.tolist() == raw.train_y.tolist()


def test_gz_with_unmatched_md5_is_rejected_before_decompressing(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", gz=True)
    with pytest.raises(InputError, match="MD5") as error:
        load("mnist", settings_for(tmp_path, verify=True))
    assert "train-images-idx3-ubyte.gz" in str(error.value)
    assert not isinstance(error.value, DataMissingError)
    assert not list((tmp_path / "cache").glob("MNIST-*/MNIST/raw/*"))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_only_data_folder_is_never_written(tmp_path, make_idx_dataset, gz):
    root = tmp_path / "data"
    raw = make_idx_dataset(root, "FashionMNIST", n_train=15, n_test=4, seed=7, gz=gz)
    folders = [root, root / "FashionMNIST", raw.folder]
    for folder in folders:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        before = snapshot(root)
        data = load("fashion_mnist", settings_for(tmp_path, verify=False))
        after = snapshot(root)
    finally:
        for folder in folders:
            folder.chmod(stat.S_IRWXU)
    # as root the chmod does not stop writes; the unchanged listing is what is checked
    assert after == before
    assert data.train.y.tolist() == raw.train_y.tolist()
    assert bool(list((tmp_path / "cache").glob("FashionMNIST-*/FashionMNIST/raw"))) == gz


def test_decompression_cache_is_not_stale_across_data_folders(tmp_path, make_idx_dataset):
    cache = tmp_path / "shared-cache"
    first = make_idx_dataset(tmp_path / "a", "MNIST", seed=8, gz=True)
    second = make_idx_dataset(tmp_path / "b", "MNIST", seed=9, gz=True)
    assert first.train_y.tolist() != second.train_y.tolist()
    for root, raw in ((tmp_path / "a", first), (tmp_path / "b", second)):
        settings = DataSettings(root=root, verify_checksums=False, cache_dir=cache)
        data = load("mnist", settings)
        assert data.train.y.tolist() == raw.train_y.tolist()


# --- Train / validation split (algorithms.md §7) -------------------------------------------------------

def test_split_sizes_and_train_union_val_is_the_training_set(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=50, n_test=9, seed=10)
    settings = settings_for(tmp_path)
    full = load("mnist", settings, validation=None)
    data = load("mnist", settings, seed=3, validation=12)

    assert len(data.train) == 38 and len(data.val) == 12
    assert data.train.x.shape == (38, 1, 28, 28) and data.val.x.shape == (12, 1, 28, 28)
    assert torch.equal(data.test.x, full.test.x) and torch.equal(data.test.y, full.test.y)
    assert len(data.test) == 9
    train_rows, val_rows = trace(data.train.x, full.train.x), trace(data.val.x, full.train.x)
    assert sorted(train_rows + val_rows) == list(range(50))  # a partition: disjoint and complete
    # labels travel with their images
    assert data.train.y.tolist() == [int(raw.train_y[i]) for i in train_rows]
    assert data.val.y.tolist() == [int(raw.train_y[i]) for i in val_rows]


@pytest.mark.parametrize("validation", [None, 0])
def test_no_validation_gives_the_full_training_set_in_order(tmp_path, make_idx_dataset, validation):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=20, n_test=4, seed=11)
    data = load("mnist", settings_for(tmp_path), validation=validation)
    assert data.val is None
    assert len(data.train) == 20
    assert trace(data.train.x, data.train.x) == list(range(20))
    assert data.train.y.tolist() == raw.train_y.tolist()
    # the order is the file's: the tagged first pixel counts 0, 1, 2, ...
    first = torch.round((data.train.x[:, 0, 0, 0] * 0.3081 + 0.1307) * 255).long()
    assert first.tolist() == list(range(20))


def test_validation_as_large_as_the_training_set_is_an_input_error(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=10, n_test=3)
    with pytest.raises(InputError, match="validation split of 10"):
        load("mnist", settings_for(tmp_path), validation=10)


def test_split_is_reproducible_per_seed_and_differs_between_seeds(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=4, seed=12)
    settings = settings_for(tmp_path)
    a, b, c = (load("mnist", settings, seed=s, validation=10) for s in (7, 7, 8))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    assert torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.x, c.val.x)


@pytest.mark.parametrize("source", ["mnist", "cifar10"])
def test_split_is_random_split_on_the_globally_seeded_rng(tmp_path, make_idx_dataset, make_cifar,
                                                           source):
    settings = settings_for(tmp_path, verify=False)
    if source == "mnist":
        make_idx_dataset(tmp_path / "data", "MNIST", n_train=30, n_test=4, seed=13)
    else:
        make_cifar(tmp_path / "data", n_per_batch=6, n_test=2, seed=13)
    full = load(source, settings, validation=None)
    n, v, seed = 30, 8, 1234

    torch.manual_seed(seed)
    train_idx, val_idx = torch.utils.data.random_split(range(n), [n - v, v])
    torch.manual_seed(seed)
    data = D.load_data(source, D.NoOptions(), settings, seed=seed, validation=v)

    assert trace(data.train.x, full.train.x) == list(train_idx.indices)
    assert trace(data.val.x, full.train.x) == list(val_idx.indices)


def test_split_comes_from_the_global_rng_not_the_seed_argument(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=30, n_test=3, seed=14)
    settings = settings_for(tmp_path)
    torch.manual_seed(1)
    a = D.load_data("mnist", D.NoOptions(), settings, seed=5, validation=6)
    torch.manual_seed(1)
    b = D.load_data("mnist", D.NoOptions(), settings, seed=6, validation=6)
    torch.manual_seed(2)
    c = D.load_data("mnist", D.NoOptions(), settings, seed=5, validation=6)
    assert torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.val.x, c.val.x)


# --- subset -----------------------------------------------------------------------------------

def test_subset_keeps_the_first_training_samples(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=5, seed=15)
    settings = settings_for(tmp_path)

    plain = load("mnist", settings, subset=7)
    assert len(plain.train) == 7 and plain.val is None
    assert plain.train.y.tolist() == raw.train_y[:7].tolist()
    assert len(plain.test) == 5  # the test set is never cut

    whole = load("mnist", settings, seed=4, validation=10)
    cut = load("mnist", settings, seed=4, validation=10, subset=7)
    assert torch.equal(cut.train.x, whole.train.x[:7]) and torch.equal(cut.train.y, whole.train.y[:7])
    assert torch.equal(cut.val.x, whole.val.x)  # the split is drawn before cutting


# --- Missing data -----------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
def test_missing_idx_dataset_names_the_folder_and_files(tmp_path, source):
    (tmp_path / "data").mkdir()
    settings = settings_for(tmp_path)
    with pytest.raises(DataMissingError) as error:
        D.check_available(source, settings)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "data" / IDX_CLASS[source] / "raw") in message
    for name in IDX_FILES.values():
        assert name in message
    with pytest.raises(DataMissingError):  # and load_data says the same, without downloading
        load(source, settings)


def test_missing_cifar_names_the_folder_and_files(tmp_path):
    (tmp_path / "data").mkdir()
    settings = settings_for(tmp_path)
    with pytest.raises(DataMissingError) as error:
        D.check_available("cifar10", settings)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "data" / "cifar-10-batches-py") in message
    for name in [*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta"]:
        assert name in message
    with pytest.raises(DataMissingError):
        load("cifar10", settings_for(tmp_path, verify=False))


def test_one_missing_file_is_reported(tmp_path, make_idx_dataset, make_cifar):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", gz=True)
    (raw.folder / "t10k-labels-idx1-ubyte.gz").unlink()
    cifar = make_cifar(tmp_path / "data")
    (cifar.folder / "data_batch_4").unlink()
    for source in ("mnist", "cifar10"):
        with pytest.raises(DataMissingError):
            D.check_available(source, settings_for(tmp_path))


def test_present_data_passes_the_check(tmp_path, make_idx_dataset, make_cifar):
    make_idx_dataset(tmp_path / "data", "MNIST")
    make_idx_dataset(tmp_path / "data", "FashionMNIST", gz=True)
    make_cifar(tmp_path / "data")
    for source in ("mnist", "fashion_mnist", "cifar10", "teacher"):
        assert D.check_available(source, settings_for(tmp_path, verify=False)) is None


def test_a_raw_folder_that_passes_the_check_loads(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=10, n_test=3, gz=True)
    name = IDX_FILES["test_labels"]
    (raw.folder / name).write_bytes(gzip.decompress((raw.folder / f"{name}.gz").read_bytes()))
    (raw.folder / f"{name}.gz").unlink()
    settings = settings_for(tmp_path, verify=False)
    D.check_available("mnist", settings)
    assert load("mnist", settings).test.y.tolist() == raw.test_y.tolist()


# --- Split ------------------------------------------------------------------------------------

def test_split_to_converts_inputs_and_keeps_integer_labels():
    split = D.Split(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    moved = split.to(torch.float64, "cpu")
    assert moved.x.dtype == torch.float64 and moved.y.dtype == torch.long
    regression = D.Split(torch.zeros(3, 2), torch.ones(3, 2)).to(torch.float64, "cpu")
    assert regression.y.dtype == torch.float64


# --- Teacher regression task (algorithms.md §10) -------------------------------------------------------

def reference_teacher(options: TeacherOptions, seed: int, n_val: int):
    """algorithms.md §10 from scratch: Glorot-normal (gain 3) bias-free ReLU MLP with weights from a torch
    generator seeded with the run seed, inputs U(−1, 1) from numpy's RandomState(seed), drawn
    for train, test and validation in that order."""
    generator = torch.Generator().manual_seed(seed)
    widths = [options.input_dim, *options.hidden, options.output_dim]
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        weight = torch.empty(n_out, n_in, dtype=torch.float64)
        torch.nn.init.xavier_normal_(weight, gain=options.gain, generator=generator)
        layers.append(weight)
    rng = np.random.RandomState(seed)
    out = []
    for n in (options.n_train, options.n_test, n_val):
        x = torch.from_numpy(rng.uniform(-1, 1, size=(n, options.input_dim)))
        h = x
        for i, weight in enumerate(layers):
            h = torch.nn.functional.linear(h, weight)
            h = torch.relu(h) if i < len(layers) - 1 else h
        out.append((x, h))
    return out


def test_teacher_shapes_range_and_task():
    data = D.load_data("teacher", TeacherOptions(), DataSettings(), seed=42, validation=300)
    assert data.train.x.shape == (400, 6) and data.train.y.shape == (400, 2)
    assert data.test.x.shape == (200, 6) and data.test.y.shape == (200, 2)
    assert data.val.x.shape == (300, 6) and data.val.y.shape == (300, 2)
    for split in (data.train, data.test, data.val):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.float32
        assert split.x.min() >= -1.0 and split.x.max() <= 1.0
        assert split.y.std() > 0
    assert data.train.x.min() < -0.9 and data.train.x.max() > 0.9  # spread over the whole cube
    assert data.task.kind == "regression" and data.task.n_outputs == 2
    assert data.input_shape == (6,)


def test_teacher_without_validation_has_no_val_split():
    data = D.load_data("teacher", TeacherOptions(hidden=(10,)), DataSettings(), seed=1, validation=None)
    assert data.val is None and len(data.train) == 400 and len(data.test) == 200


def test_teacher_is_deterministic_per_seed_and_ignores_the_global_rng():
    options = TeacherOptions(hidden=(30, 30))
    torch.manual_seed(0)
    np.random.seed(0)
    a = D.load_data("teacher", options, DataSettings(), seed=42, validation=50)
    torch.manual_seed(99)
    np.random.seed(99)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    b = D.load_data("teacher", options, DataSettings(), seed=42, validation=50)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global RNGs are not consumed
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    c = D.load_data("teacher", options, DataSettings(), seed=43, validation=50)
    for name in ("train", "test", "val"):
        sa, sb, sc = getattr(a, name), getattr(b, name), getattr(c, name)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
        assert not torch.equal(sa.x, sc.x) and not torch.equal(sa.y, sc.y)


@pytest.mark.parametrize("options", [TeacherOptions(), TeacherOptions(hidden=(5, 4), output_dim=3, gain=1.5)],
                         ids=["spec", "small"])
def test_teacher_targets_are_a_glorot_relu_mlp_of_the_inputs(options):
    train, test, val = D.teacher_data(options, seed=42, n_val=50)
    for split, (x, y) in zip((train, test, val), reference_teacher(options, 42, 50), strict=True):
        assert split.x.dtype == torch.float64
        assert torch.equal(split.x, x)
        torch.testing.assert_close(split.y, y, rtol=1e-10, atol=1e-10)
    assert train.y.shape[1] == options.output_dim

