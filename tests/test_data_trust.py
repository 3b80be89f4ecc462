"""Data you can trust: no code runs from a data file, checksums are enforced or the
skipping is said out loud, caches are checked before reuse, and ``data_fingerprint`` tells
verified data from any other.

Like ``test_data.py``: tiny files in torchvision's formats under ``tmp_path``, never the real
datasets, never the network. The tiny files are not the originals, so where a test needs
"original" files it puts their MD5s in place of the known ones (``pretend_original_*``).
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tv

from bioplaus_bench import data as D
from bioplaus_bench.data import DataMissingError, DataSettings, InputError, images

from .helpers import CIFAR_TRAIN_BATCHES, IDX_FILES

CIFAR_FILES = [*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta"]


def settings_for(root: Path, cache: Path, *, verify: bool) -> DataSettings:
    return DataSettings(root=root, verify_checksums=verify, cache_dir=cache)


def load(source: str, settings: DataSettings) -> D.Data:
    return D.load_data(source, D.NoOptions(), settings, seed=0, validation=None)


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def unpacked(path: Path) -> bytes:
    """The IDX bytes of ``path``, decompressing a ``.gz`` file."""
    content = path.read_bytes()
    return gzip.decompress(content) if path.suffix == ".gz" else content


def flip_byte(path: Path, offset: int = -1) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def pretend_original_idx(monkeypatch, raw: Path, cls_name: str) -> None:
    """Make the tiny IDX files in ``raw`` count as the originals: their MD5s stand in for
    torchvision's (``.gz``) and for the embedded ones of the decompressed files."""
    cls = getattr(tv, cls_name)
    resources, table = [], {}
    for gz_name, _ in cls.resources:
        name = gz_name.removesuffix(".gz")
        path = raw / name if (raw / name).is_file() else raw / gz_name
        resources.append((gz_name, md5(path) if path.suffix == ".gz" else "0" * 32))
        table[name] = hashlib.md5(unpacked(path)).hexdigest()
    monkeypatch.setattr(cls, "resources", resources)
    monkeypatch.setitem(D.IDX_MD5, cls_name, table)


def pretend_original_cifar(monkeypatch, folder: Path) -> None:
    """Make the tiny CIFAR-10 in ``folder`` count as the original (torchvision's MD5 lists)."""
    def listed(entries):
        return [[name, md5(folder / name)] for name, _ in entries]
    monkeypatch.setattr(tv.CIFAR10, "train_list", listed(tv.CIFAR10.train_list))
    monkeypatch.setattr(tv.CIFAR10, "test_list", listed(tv.CIFAR10.test_list))
    monkeypatch.setattr(tv.CIFAR10, "meta", {**tv.CIFAR10.meta,
                                              "md5": md5(folder / "batches.meta")})


# --- 1. No code runs from a CIFAR-10 pickle ---------------------------------------------------

class Payload:
    """Unpickling this calls ``function(*args)``: what a malicious pickle does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
def test_a_crafted_cifar_pickle_is_refused_and_never_run(tmp_path, make_cifar, how):
    cifar = make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    marker = tmp_path / "MARKER"
    payload = (Payload(os.system, f"touch '{marker}'") if how == "os.system" else
               Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"))
    batch = {"batch_label": "x", "labels": [0, 1], "data": payload, "filenames": ["a", "b"]}
    # protocol 2 like the original batches; without fix_imports, exec stays builtins.exec
    (cifar.folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2,
                                                             fix_imports=False))

    with pytest.raises(InputError) as error:
        load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    message = str(error.value)
    assert not marker.exists()
    assert "\n" not in message
    assert "data_batch_1" in message and "refusing to load" in message
    assert (f"{os.system.__module__}.system" if how == "os.system" else how) in message
    assert not isinstance(error.value, DataMissingError)


def test_a_crafted_meta_file_is_never_run(tmp_path, make_cifar):
    cifar = make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    marker = tmp_path / "MARKER"
    (cifar.folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": Payload(os.system, f"touch '{marker}'")}))
    try:
        load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    except InputError as error:
        assert "batches.meta" in str(error)
    assert not marker.exists()


def numpy1_names(pickled: bytes) -> bytes:
    """A protocol-2 pickle as numpy 1.x writes it (the real CIFAR-10 batches name
    ``numpy.core.multiarray``; numpy 2.x writes ``numpy._core.multiarray``)."""
    return pickled.replace(b"numpy._core.", b"numpy.core.")


@pytest.mark.parametrize("protocol", [2, 4, 5, "numpy-1.x"])
def test_cifar_loads_exactly_what_torchvision_loads(tmp_path, make_cifar, monkeypatch, protocol):
    raw = make_cifar(tmp_path / "data", n_per_batch=3, n_test=4, seed=21)
    for name in [*CIFAR_TRAIN_BATCHES, "test_batch"]:
        path = raw.folder / name
        batch = pickle.loads(path.read_bytes())
        batch["labels"] = [int(v) for v in batch["labels"]]
        pickled = pickle.dumps(batch, protocol=2 if protocol == "numpy-1.x" else protocol)
        path.write_bytes(numpy1_names(pickled) if protocol == "numpy-1.x" else pickled)

    data = load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))

    monkeypatch.setattr(tv.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv.CIFAR10, "_load_meta", lambda self: None)
    for split, train in ((data.train, True), (data.test, False)):
        reference = tv.CIFAR10(str(tmp_path / "data"), train=train)
        x = torch.from_numpy(np.ascontiguousarray(reference.data)).permute(0, 3, 1, 2)
        expected = (x.float() / 255.0 - 0.5) / 0.5
        assert torch.equal(split.x, expected)
        assert split.x.stride() == expected.stride()  # the same memory layout, too
        assert split.y.tolist() == list(reference.targets)


def test_a_batch_without_image_rows_is_a_clear_error(tmp_path, make_cifar):
    cifar = make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    (cifar.folder / "test_batch").write_bytes(pickle.dumps({"data": [1, 2], "labels": [0, 1]}))
    with pytest.raises(InputError, match="test_batch") as error:
        load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    assert "\n" not in str(error.value)


# --- 2. The known rebuilt copy of CIFAR-10 ----------------------------------------------------

def test_the_known_rebuilt_copy_is_recognised_but_needs_skip_checksums(tmp_path, make_cifar,
                                                                         monkeypatch, capsys):
    raw = make_cifar(tmp_path / "data", n_per_batch=2, n_test=3)
    digests = {name: md5(raw.folder / name) for name in CIFAR_FILES}
    monkeypatch.setattr(images, "CIFAR_REBUILT_MD5", digests)

    with pytest.raises(InputError) as error:
        load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=True))
    message = str(error.value)
    assert "known rebuilt copy" in message and "exact pixels" in message
    assert "--skip-checksums" in message and str(raw.folder) in message and "\n" not in message

    capsys.readouterr()
    data = load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning") and "known rebuilt copy" in line and str(raw.folder) in line
    assert data.test.y.tolist() == raw.test_y.tolist()


def test_unknown_cifar_files_are_named_unknown_in_the_warning(tmp_path, make_cifar, capsys):
    raw = make_cifar(tmp_path / "data", n_per_batch=2, n_test=3)
    load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning") and "unknown files" in line and str(raw.folder) in line
    assert "rebuilt" not in line


def test_original_cifar_files_load_verified_without_a_warning(tmp_path, make_cifar, monkeypatch,
                                                             capsys):
    raw = make_cifar(tmp_path / "data", n_per_batch=2, n_test=3)
    pretend_original_cifar(monkeypatch, raw.folder)
    data = load("cifar10", settings_for(tmp_path / "data", tmp_path / "cache", verify=True))
    assert "warning" not in capsys.readouterr().err
    assert data.train.y.tolist() == raw.train_y.tolist()


# --- 3. MNIST / Fashion-MNIST: warnings, decompressed files, the cache, broken files ---------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
def test_skipping_idx_checksums_warns(tmp_path, make_idx_dataset, capsys, source, gz):
    cls_name = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[source]
    raw = make_idx_dataset(tmp_path / "data", cls_name, n_train=10, n_test=3, gz=gz)
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=False)
    D.check_available(source, settings)
    load(source, settings)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1  # once per process, though checked and loaded
    assert "checksums" in warnings[0] and str(raw.folder) in warnings[0]
    assert "unknown files" in warnings[0]


def test_a_decompressed_idx_file_is_verified(tmp_path, make_idx_dataset, monkeypatch, capsys):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=10, n_test=3)
    pretend_original_idx(monkeypatch, raw.folder, "MNIST")
    data = load("mnist", settings_for(tmp_path / "data", tmp_path / "cache", verify=True))
    assert data.train.y.tolist() == raw.train_y.tolist()
    assert "warning" not in capsys.readouterr().err

    shutil.copytree(tmp_path / "data", tmp_path / "tampered")
    tampered = tmp_path / "tampered" / "MNIST" / "raw" / IDX_FILES["test_labels"]
    flip_byte(tampered)
    with pytest.raises(InputError) as error:
        load("mnist", settings_for(tmp_path / "tampered", tmp_path / "cache", verify=True))
    message = str(error.value)
    assert str(tampered) in message and "MD5" in message and "--skip-checksums" in message
    assert "\n" not in message


def test_unknown_decompressed_idx_files_are_refused_when_verifying(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "FashionMNIST", n_train=10, n_test=3)
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=True)
    for attempt in (lambda: D.check_available("fashion_mnist", settings),
                    lambda: load("fashion_mnist", settings)):
        with pytest.raises(InputError, match="--skip-checksums") as error:
            attempt()
        assert str(raw.folder / IDX_FILES["train_images"]) in str(error.value)


@pytest.mark.parametrize("known", [False, True], ids=["unknown-gz", "original-gz"])
def test_a_tampered_cache_file_is_not_reused(tmp_path, make_idx_dataset, monkeypatch, known):
    raw = make_idx_dataset(tmp_path / "a", "MNIST", n_train=12, n_test=4, seed=3, gz=True)
    if known:
        pretend_original_idx(monkeypatch, raw.folder, "MNIST")
    cache = tmp_path / "cache"
    load("mnist", settings_for(tmp_path / "a", cache, verify=known))
    (cached,) = cache.glob(f"MNIST-*/MNIST/raw/{IDX_FILES['train_labels']}")
    flip_byte(cached)  # the last label changes

    # a second data folder with the same files shares the cache folder (it is named by content)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    data = load("mnist", settings_for(tmp_path / "b", cache, verify=known))
    assert data.train.y.tolist() == raw.train_y.tolist()
    assert cached.read_bytes() == gzip.decompress(
        (raw.folder / f"{IDX_FILES['train_labels']}.gz").read_bytes())


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not-gzip", "empty"])
def test_a_broken_gz_file_is_one_clear_error(tmp_path, make_idx_dataset, damage):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=4, gz=True)
    path = raw.folder / f"{IDX_FILES['train_images']}.gz"
    content = path.read_bytes()
    if damage == "truncated":
        content = content[: len(content) // 2]
    elif damage == "corrupt":
        content = content[:-8] + bytes(b ^ 0x55 for b in content[-8:])  # CRC and size
    elif damage == "empty":
        content = b""
    else:
        content = b"not a gzip file at all"
    path.write_bytes(content)
    with pytest.raises(InputError) as error:
        load("mnist", settings_for(tmp_path / "data", tmp_path / "cache", verify=False))
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "truncated or corrupt gzip" in message


def test_an_unwritable_cache_folder_is_one_clear_error(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=10, n_test=3, gz=True)
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")  # root ignores chmod
    with pytest.raises(InputError) as error:
        load("mnist", settings_for(tmp_path / "data", cache, verify=False))
    message = str(error.value)
    assert str(cache) in message and "BIOPLAUS_CACHE" in message and "\n" not in message
    assert f"{cache} is a file; expected a folder" in message


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "a", "MNIST", n_train=10, n_test=3, gz=True)
    cache = tmp_path / "cache"
    load("mnist", settings_for(tmp_path / "a", cache, verify=False))
    (raw,) = cache.glob("MNIST-*/MNIST/raw")
    # a directory in place of a cache file: the final rename onto it fails
    (raw / IDX_FILES["test_images"]).unlink()
    (raw / IDX_FILES["test_images"]).mkdir()
    (raw / IDX_FILES["test_images"] / "keep").write_text("")
    before = sorted(p.name for p in raw.iterdir())

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InputError) as error:
        load("mnist", settings_for(tmp_path / "b", cache, verify=False))
    assert "BIOPLAUS_CACHE" in str(error.value) and str(cache) in str(error.value)
    assert sorted(p.name for p in raw.iterdir()) == before


# --- 4. data_fingerprint ----------------------------------------------------------------------

def test_fingerprint_of_generated_data():
    assert D.data_fingerprint("teacher", DataSettings()) == {"source": "teacher",
                                                            "files": "generated"}


@pytest.mark.parametrize("verify", [True, False])
def test_fingerprint_of_verified_data_names_no_files(tmp_path, make_idx_dataset, make_cifar,
                                                     monkeypatch, verify):
    raw = make_idx_dataset(tmp_path / "data", "FashionMNIST", n_train=10, n_test=3, gz=True)
    cifar = make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    pretend_original_idx(monkeypatch, raw.folder, "FashionMNIST")
    pretend_original_cifar(monkeypatch, cifar.folder)
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=verify)
    for source in ("fashion_mnist", "cifar10"):
        assert D.data_fingerprint(source, settings) == {"source": source, "checksums": "verified"}


def test_fingerprint_of_unverified_files_lists_the_files_read(tmp_path, make_idx_dataset):
    raw = make_idx_dataset(tmp_path / "data", "MNIST", n_train=10, n_test=3, gz=True)
    # a decompressed file next to its .gz is what load reads, so it is what the fingerprint names
    plain = raw.folder / IDX_FILES["test_labels"]
    plain.write_bytes(unpacked(raw.folder / f"{plain.name}.gz"))
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=False)

    fingerprint = D.data_fingerprint("mnist", settings)
    read = [raw.folder / f"{IDX_FILES[key]}.gz" for key in ("train_images", "train_labels",
                                                             "test_images")] + [plain]
    assert fingerprint == {"source": "mnist", "checksums": "skipped",
                           "files": {path.name: md5(path) for path in read}}


def test_fingerprint_of_the_known_rebuilt_cifar_copy(tmp_path, make_cifar, monkeypatch):
    raw = make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    digests = {name: md5(raw.folder / name) for name in CIFAR_FILES}
    monkeypatch.setattr(images, "CIFAR_REBUILT_MD5", digests)
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=False)
    assert D.data_fingerprint("cifar10", settings) == {
        "source": "cifar10", "checksums": "known rebuilt copy (exact pixels)", "files": digests}


@pytest.mark.parametrize("source", ["mnist", "cifar10"])
def test_one_changed_byte_changes_the_fingerprint(tmp_path, make_idx_dataset, make_cifar, source):
    if source == "mnist":
        make_idx_dataset(tmp_path / "a", "MNIST", n_train=10, n_test=3)
        changed = Path("MNIST", "raw", IDX_FILES["train_images"])
    else:
        make_cifar(tmp_path / "a", n_per_batch=2, n_test=2)
        changed = Path("cifar-10-batches-py", "data_batch_3")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    flip_byte(tmp_path / "b" / changed, offset=-20)
    a, b = (D.data_fingerprint(source, settings_for(tmp_path / root, tmp_path / "cache",
                                                    verify=False)) for root in ("a", "b"))
    assert a["checksums"] == b["checksums"] == "skipped"
    assert a != b and a["files"][changed.name] != b["files"][changed.name]


def test_fingerprint_differs_between_verified_and_skipped(tmp_path, make_cifar, monkeypatch):
    make_cifar(tmp_path / "a", n_per_batch=2, n_test=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    pretend_original_cifar(monkeypatch, tmp_path / "a" / "cifar-10-batches-py")
    flip_byte(tmp_path / "b" / "cifar-10-batches-py" / "data_batch_2", offset=-20)
    good, bad = (D.data_fingerprint("cifar10", settings_for(tmp_path / root, tmp_path / "cache",
                                                            verify=False)) for root in ("a", "b"))
    assert good == {"source": "cifar10", "checksums": "verified"}
    assert bad["checksums"] == "skipped" and good != bad


def test_fingerprint_is_computed_once_and_returned_fresh(tmp_path, make_cifar, monkeypatch):
    make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=False)
    first = D.data_fingerprint("cifar10", settings)
    first["files"].clear()  # a caller's change never reaches the next caller
    monkeypatch.setattr(images, "_md5", lambda path: pytest.fail(f"{path} hashed again"))
    second = D.data_fingerprint("cifar10", settings)
    assert len(second["files"]) == len(CIFAR_FILES)
    load("cifar10", settings)  # loading reads the same files without hashing them again


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist", "cifar10"])
def test_fingerprint_of_missing_data_is_the_missing_data_error(tmp_path, source):
    (tmp_path / "data").mkdir()
    settings = settings_for(tmp_path / "data", tmp_path / "cache", verify=True)
    with pytest.raises(DataMissingError) as expected:
        D.check_available(source, settings)
    with pytest.raises(DataMissingError) as error:
        D.data_fingerprint(source, settings)
    assert str(error.value) == str(expected.value)


def test_fingerprint_refuses_what_load_refuses(tmp_path, make_cifar):
    make_cifar(tmp_path / "data", n_per_batch=2, n_test=2)
    with pytest.raises(InputError, match="--skip-checksums"):
        D.data_fingerprint("cifar10", settings_for(tmp_path / "data", tmp_path / "cache",
                                                   verify=True))
