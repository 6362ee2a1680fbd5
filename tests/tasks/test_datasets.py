"""Datasets: every reader on real files generated here, subsets, normalisation, cache, augment."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from spikeopt.config import DataConfig
from spikeopt.tasks import DATASETS, DataError, Dataset, augment, load_dataset
from spikeopt.tasks.datasets import cache_dir, subset_indices

SHARED_TARBALL = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # never read or write the user's real cache from a test
    monkeypatch.setenv("SPIKEOPT_CACHE", str(tmp_path / "cache"))


def load(**kw: Any) -> Dataset:
    return load_dataset(DataConfig(**kw))


def rng_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ---------------------------------------------------------------- fixtures: IDX


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_idx(root: Path, gz: bool) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng_images(40, (28, 28), 0),
        "train-labels-idx1-ubyte": np.arange(40) % 10,
        "t10k-images-idx3-ubyte": rng_images(20, (28, 28), 1),
        "t10k-labels-idx1-ubyte": (np.arange(20) * 3) % 10,
    }
    for name, arr in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx(tmp_path / "mnist", gz)
    ds = load(name="fashion", root=str(tmp_path / "mnist"))
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 28, 28) and ds.n_classes == 10 and not ds.sequence
    expected = arrays["train-images-idx3-ubyte"][:, None] / 255.0
    np.testing.assert_allclose(ds.x_train.numpy(), expected, atol=1e-7)
    assert ds.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_idx_missing_root_and_file(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"data\.root.*train-images-idx3-ubyte\[\.gz\]"):
        load(name="mnist")
    with pytest.raises(DataError, match="does not exist"):
        load(name="mnist", root=str(tmp_path / "nowhere"))
    make_idx(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load(name="mnist", root=str(tmp_path / "m"))
    assert time.perf_counter() - start < 1.0


def test_idx_truncated_wrong_magic_and_bad_gzip(tmp_path: Path) -> None:
    make_idx(tmp_path / "m", gz=False)
    images = tmp_path / "m" / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        load(name="mnist", root=str(tmp_path / "m"))
    images.write_bytes(struct.pack(">I", 0x0801) + good[4:])  # a labels magic on images
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: wrong magic number 0x00000801"):
        load(name="mnist", root=str(tmp_path / "m"))
    make_idx(tmp_path / "g", gz=True)
    labels = tmp_path / "g" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:15])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: cannot decompress"):
        load(name="mnist", root=str(tmp_path / "g"))


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    make_idx(tmp_path / "m", gz=False)
    write_idx(tmp_path / "m" / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match=r"40 images but .* 39 labels"):
        load(name="mnist", root=str(tmp_path / "m"))


# ---------------------------------------------------------------- fixtures: CIFAR pickles


def make_pickles(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Five train batches of 10 images and a test batch of 10, like the official files."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = rng_images(10, (3 * 32 * 32,), i)
        y = list(np.random.default_rng(i).permutation(10))
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": x, b"labels": [int(v) for v in y]}, fh)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)


def make_tarball(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return dest


def test_cifar_pickle_folder_subfolder_and_tarball(tmp_path: Path) -> None:
    x, y = make_pickles(tmp_path / "cifar-10-batches-py")
    tarball = make_tarball(
        tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py"
    )
    for root, source in [
        (tmp_path / "cifar-10-batches-py", "pickle"),
        (tmp_path, "pickle"),  # the folder that holds cifar-10-batches-py
        (tarball, "pickle"),
        (tarball, "auto"),
    ]:
        ds = load(name="cifar10", root=str(root), source=source)
        assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
        np.testing.assert_allclose(ds.x_train.numpy(), x[:50] / 255.0, atol=1e-7)
        assert ds.y_train.tolist() == y[:50].tolist() and ds.y_test.tolist() == y[50:].tolist()


def test_cifar_pickle_errors(tmp_path: Path) -> None:
    make_pickles(tmp_path / "p")
    (tmp_path / "p" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing the CIFAR-10 python batches data_batch_3"):
        load(name="cifar10", root=str(tmp_path / "p"), source="pickle")
    (tmp_path / "p" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        load(name="cifar10", root=str(tmp_path / "p"), source="pickle")


# ---------------------------------------------------------------- fixtures: image folders

CLASSES = ["cat", "airplane", "dog"]  # deliberately unsorted: indices follow sorted names


def make_images(base: Path, ext: str = "png", size: int = 32) -> dict[str, list]:
    """base/{train,test}/<class>/NNNN.<ext>: 4 train and 2 test images per class."""
    out: dict[str, list] = {"train": [], "test": []}
    seed = 0
    for split, per_class in (("train", 4), ("test", 2)):
        for cls in CLASSES:
            (base / split / cls).mkdir(parents=True)
            for i in range(per_class):
                seed += 1
                img = rng_images(1, (size, size, 3), seed)[0]
                Image.fromarray(img).save(base / split / cls / f"{i:04d}.{ext}")
                out[split].append((sorted(CLASSES).index(cls), img))
    return out


def test_image_folder_and_tarball_with_top_folder(tmp_path: Path) -> None:
    made = make_images(tmp_path / "imgs" / "cifar10")
    tarball = make_tarball(tmp_path / "imgs" / "cifar10", tmp_path / "c.tar.gz", "cifar10")
    loads = [
        load(name="cifar10", root=str(tmp_path / "imgs"), source="folder"),
        load(name="cifar10", root=str(tmp_path / "imgs" / "cifar10"), source="auto"),
        load(name="cifar10", root=str(tarball), source="folder"),
        load(name="cifar10", root=str(tarball)),  # auto detects the image layout
    ]
    for ds in loads:
        assert ds.x_train.shape == (12, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
        assert ds.n_classes == 3
        for split in ("train", "test"):
            # files come in path order: sorted class folder, then file name; PNG is lossless
            x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
            expected = sorted(made[split], key=lambda t: t[0])
            assert y.tolist() == [label for label, _ in expected]
            for got, (_, img) in zip(x, expected):
                np.testing.assert_allclose(got.numpy(), img.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_jpeg_folder_decodes_close_to_source(tmp_path: Path) -> None:
    make_images(tmp_path / "j", ext="jpg")
    flat = np.full((32, 32, 3), 200, np.uint8)  # flat colour: JPEG keeps it almost exactly
    Image.fromarray(flat).save(tmp_path / "j" / "train" / "cat" / "0000.jpg", quality=95)
    ds = load(name="cifar10", root=str(tmp_path / "j"), source="folder")
    cat = sorted(CLASSES).index("cat")
    first_cat = ds.x_train[ds.y_train == cat][0]
    assert abs(first_cat.mean().item() - 200 / 255) < 0.02
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "e" / "train").mkdir(parents=True)
    (tmp_path / "e" / "test").mkdir()
    with pytest.raises(DataError, match=r"no images under .* train/<class>"):
        load(name="cifar10", root=str(tmp_path / "e"), source="folder")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    (tmp_path / "flat" / "x").mkdir()
    (tmp_path / "flat" / "y").mkdir()
    with pytest.raises(DataError, match="no train/ and test/ folders"):
        load(name="cifar10", root=str(tmp_path / "flat"), source="folder")
    make_images(tmp_path / "s")
    Image.new("RGB", (16, 16)).save(tmp_path / "s" / "train" / "dog" / "0003.png")
    with pytest.raises(DataError, match=r"dog/0003\.png is 16x16, but the first image is 32x32"):
        load(name="cifar10", root=str(tmp_path / "s"), source="folder")


def test_folder_subset_decodes_the_same_samples(tmp_path: Path) -> None:
    make_images(tmp_path / "i")
    tarball = make_tarball(tmp_path / "i", tmp_path / "i.tar", "top")
    # the subset is decoded straight from the archive, without a full decode first
    part = load(name="cifar10", root=str(tarball), n_train=6, n_test=3, subset_seed=4)
    full = load(name="cifar10", root=str(tarball))
    idx = subset_indices(full.y_train.numpy(), 6, 4, "train")
    assert torch.equal(part.x_train, full.x_train[idx]) and part.y_train.bincount().tolist() == [
        2,
        2,
        2,
    ]
    assert len(list((tmp_path / "cache").glob("cifar10-folder-*.npz"))) == 2


# ---------------------------------------------------------------- Hugging Face, names, roots


def test_hf_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty local cache
    import datasets  # noqa: F401  # its own import (1-2 s, more on a busy machine) is not timed

    start = time.perf_counter()
    with pytest.raises(DataError, match=r"offline.*data\.root=.*data\.source=folder\|pickle"):
        load(name="cifar10", source="hf")
    assert time.perf_counter() - start < 3.0


def test_hf_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused at once
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"127\.0\.0\.1:9\) is unreachable.*data\.root="):
        load(name="cifar10", source="hf")
    assert time.perf_counter() - start < 3.0


def test_bad_names_and_missing_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid: digits, mnist1d, mnist, fashion, cifar10, shd"):
        load(name="imagenet")
    with pytest.raises(
        DataError, match=r"data\.root=/path/to/cifar10-jpg\.tar\.gz.*data\.source=hf"
    ):
        load(name="cifar10")
    with pytest.raises(DataError, match="valid: auto, pickle, folder, hf"):
        load(name="cifar10", root=str(tmp_path), source="web")
    assert DATASETS == (
        "digits",
        "mnist1d",
        "mnist",
        "fashion",
        "cifar10",
        "shd",
        "nmnist",
        "dvsgesture",
    )


# ---------------------------------------------------------------- digits, mnist1d


def test_digits_fixed_stratified_split() -> None:
    ds = load(name="digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.y_test.bincount().min() >= 35  # stratified: ~36 of each class
    again = load(name="digits", cache_dir=str(Path(os.environ["SPIKEOPT_CACHE"]) / "other"))
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)


def test_mnist1d_regenerated_cached_and_rng_untouched(tmp_path: Path) -> None:
    np.random.seed(123)
    ds = load(name="mnist1d", cache_dir=str(tmp_path / "c"))
    # mnist1d reseeds numpy's global RNG; the caller's stream must continue as if untouched
    assert np.random.random() == np.random.RandomState(123).random_sample()
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.sequence and ds.input_shape == (40,) and ds.x_train.dtype == torch.float32
    assert sorted(ds.y_train.unique().tolist()) == list(range(10))
    assert len(list((tmp_path / "c").glob("mnist1d-*.npz"))) == 1
    assert not list(Path.cwd().glob("mnist1d_data.pkl"))  # get_dataset() would write this
    cached = load(name="mnist1d", cache_dir=str(tmp_path / "c"), normalize=True)
    mean = cached.x_train.mean().item()
    assert abs(mean) < 1e-5 and abs(cached.x_train.std().item() - 1) < 1e-4
    std = ds.x_train.std()
    torch.testing.assert_close(cached.x_test, (ds.x_test - ds.x_train.mean()) / std)


# ---------------------------------------------------------------- subsets and normalisation


def test_subsets_balanced_deterministic_and_seeded() -> None:
    a = load(name="digits", n_train=105, n_test=50, subset_seed=1)
    counts = a.y_train.bincount().tolist()
    assert sum(counts) == 105 and max(counts) - min(counts) == 1
    assert a.y_test.bincount().tolist() == [5] * 10
    b = load(name="digits", n_train=105, n_test=50, subset_seed=1)
    c = load(name="digits", n_train=105, n_test=50, subset_seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    with pytest.raises(DataError, match=r"data\.n_train=5000 but the train split has only 1437"):
        load(name="digits", n_train=5000)


def test_subset_passes_a_small_class_shortfall_on() -> None:
    y = np.array([0] * 2 + [1] * 50 + [2] * 50)
    idx = subset_indices(y, 30, seed=0)
    assert np.bincount(y[idx]).tolist() == [2, 14, 14]
    assert np.array_equal(idx, subset_indices(y, 30, seed=0)) and len(set(idx)) == 30


def test_normalize_per_channel_with_training_statistics(tmp_path: Path) -> None:
    make_images(tmp_path / "i")
    raw = load(name="cifar10", root=str(tmp_path / "i"), n_train=6)
    ds = load(name="cifar10", root=str(tmp_path / "i"), n_train=6, normalize=True)
    mean = raw.x_train.mean((0, 2, 3), keepdim=True)
    std = raw.x_train.std((0, 2, 3), keepdim=True)
    torch.testing.assert_close(ds.x_train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(ds.x_train.std((0, 2, 3)), torch.ones(3))
    torch.testing.assert_close(ds.x_test, (raw.x_test - mean) / std)


# ---------------------------------------------------------------- cache


def test_cache_hit_skips_the_reader_and_a_changed_file_is_reread(tmp_path: Path) -> None:
    make_idx(tmp_path / "m", gz=False)
    first = load(name="mnist", root=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"))
    entries = list((tmp_path / "c").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"  # no temp file left behind
    # same size and mtime but garbage content: only a cache hit can still load it
    images = tmp_path / "m" / "train-images-idx3-ubyte"
    st = images.stat()
    images.write_bytes(b"\xff" * st.st_size)
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns))
    hit = load(name="mnist", root=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"))
    assert torch.equal(first.x_train, hit.x_train)
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited": read again
    with pytest.raises(DataError, match="wrong magic number"):
        load(name="mnist", root=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"))


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIKEOPT_CACHE", "/tmp/env-cache")
    assert cache_dir(DataConfig(cache_dir="/tmp/cfg-cache")) == Path("/tmp/cfg-cache")
    assert cache_dir(DataConfig()) == Path("/tmp/env-cache")
    monkeypatch.delenv("SPIKEOPT_CACHE")
    assert cache_dir(DataConfig()) == Path.home() / ".cache" / "spikeopt"


# ---------------------------------------------------------------- augmentation


def test_augment_deterministic_and_flip_correct() -> None:
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert augment(x, "none", torch.Generator()) is x
    flipped = augment(x, "flip", torch.Generator().manual_seed(1))
    assert torch.equal(flipped, augment(x, "flip", torch.Generator().manual_seed(1)))
    same = [torch.equal(f, s) for f, s in zip(flipped, x)]
    mirrored = [torch.equal(f, s.flip(-1)) for f, s in zip(flipped, x)]
    assert all(a or b for a, b in zip(same, mirrored)) and any(same) and any(mirrored)
    with pytest.raises(ValueError, match="valid: none, flip, flip-crop"):
        augment(x, "rotate", torch.Generator())


def test_augment_flip_crop_is_a_shifted_window() -> None:
    x = torch.rand(12, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    out = augment(x, "flip-crop", torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert torch.equal(out, augment(x, "flip-crop", torch.Generator().manual_seed(3)))
    assert not torch.equal(out, augment(x, "flip-crop", torch.Generator().manual_seed(4)))
    for sample, img in zip(out, x):
        windows = [
            torch.nn.functional.pad(v, (4, 4, 4, 4))[:, dy : dy + 6, dx : dx + 6]
            for v in (img, img.flip(-1))
            for dy in range(9)
            for dx in range(9)
        ]
        assert any(torch.equal(sample, w) for w in windows)


# ---------------------------------------------------------------- the real shared tarball


def test_real_cifar10_tarball_subset(tmp_path: Path) -> None:
    if not SHARED_TARBALL.exists():
        pytest.skip(f"shared CIFAR-10 tarball not found at {SHARED_TARBALL}")
    # a subset decodes only 300 JPEGs; the one pass over the 19 MB archive takes ~5 s
    ds = load(name="cifar10", root=str(SHARED_TARBALL), n_train=200, n_test=100)
    assert ds.x_train.shape == (200, 3, 32, 32) and ds.x_test.shape == (100, 3, 32, 32)
    assert (
        ds.y_train.bincount().tolist() == [20] * 10 and ds.y_test.bincount().tolist() == [10] * 10
    )
    assert ds.n_classes == 10 and ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert 0.3 < ds.x_train.mean().item() < 0.6  # natural images, not noise or zeros


def test_idx_files_with_no_images_are_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    for split in ("train", "t10k"):
        write_idx(root / f"{split}-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte", np.zeros((0,), np.uint8))
    with pytest.raises(DataError, match=r"the mnist train split at .*empty holds 0 samples"):
        load(name="mnist", root=str(root))
