"""Event datasets (SHD, N-MNIST, DVS Gesture) from fixtures in each original file format."""

from __future__ import annotations

import gzip
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError, DataConfig
from spikeopt.tasks.datasets import Dataset, load_dataset
from spikeopt.tasks.encoders import as_frames
from spikeopt.tasks.readers import DataError

# ---------------------------------------------------------------- fixtures in the authors' formats


def shd_sample(rng: np.random.Generator, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Spike times (s) and units of one fake recording: class c fires channels 10c..10c+9."""
    n = 40
    units = (10 * label + rng.integers(0, 10, n)).astype(np.uint16)
    times = np.sort(rng.uniform(0, 0.9, n)).astype(np.float16)
    return times, units


def write_shd(path: Path, recordings: list[tuple[np.ndarray, np.ndarray]], labels: list[int]
              ) -> None:  # fmt: skip
    """An SHD HDF5 file: spikes/times, spikes/units (variable length), labels, extra/keys."""
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(labels),), h5py.vlen_dtype(np.float16))
        u = f.create_dataset("spikes/units", (len(labels),), h5py.vlen_dtype(np.uint16))
        for i, (times, units) in enumerate(recordings):
            t[i], u[i] = times, units
        f["labels"] = np.asarray(labels, np.uint16)
        f["extra/keys"] = np.array([f"digit-{c}".encode() for c in range(20)])


def make_shd(root: Path, n: int = 16, compress: str = "") -> Path:
    """shd_train.h5 / shd_test.h5 (optionally .zip or .gz) with 4 classes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = [i % 4 for i in range(n)]
        path = root / f"shd_{split}.h5"
        write_shd(path, [shd_sample(rng, c) for c in labels], labels)
        if compress == "zip":
            with zipfile.ZipFile(f"{path}.zip", "w") as zf:
                zf.write(path, path.name)
            path.unlink()
        elif compress == "gz":
            Path(f"{path}.gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return root


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST's 40-bit events (x, y, p, t): x, y, p<<7 | t[22:16], t[15:8], t[7:0]."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def nmnist_sample(rng: np.random.Generator, label: int) -> bytes:
    """A fake recording: digit c lights rows 3c..3c+2 of the sensor."""
    n = 30
    xs, ys = rng.integers(0, 34, n), 3 * label + rng.integers(0, 3, n)
    ts = np.sort(rng.integers(0, 290_000, n))
    return nmnist_bytes([(int(x), int(y), int(x) % 2, int(t)) for x, y, t in zip(xs, ys, ts)])


def make_nmnist(root: Path, n: int = 12, zipped: bool = False) -> Path:
    """Train/<digit>/<k>.bin and Test/... (or Train.zip, Test.zip holding them), 4 digits."""
    rng = np.random.default_rng(1)
    for folder in ("Train", "Test"):
        files = {f"{folder}/{i % 4}/{i:05d}.bin": nmnist_sample(rng, i % 4) for i in range(n)}
        if zipped:
            root.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(root / f"{folder}.zip", "w") as zf:
                for name, raw in files.items():
                    zf.writestr(name, raw)
        for name, raw in files.items() if not zipped else ():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(raw)
    return root


def gesture_sample(rng: np.random.Generator, label: int) -> np.ndarray:
    """(x, y, p, t [ms]) rows: gesture c lights a 16-pixel-wide column band of the sensor."""
    n = 60
    x = 10 * label + rng.integers(0, 16, n)
    return np.stack([x, rng.integers(0, 128, n), rng.integers(0, 2, n),
                     np.sort(rng.integers(0, 5900, n))], axis=1).astype(np.int64)  # fmt: skip


def make_gesture(root: Path, n: int = 12, tar: bool = False) -> Path:
    """ibmGestureTrain/user<NN>_<lighting>/<label>.npy and ...Test (or their .tar.gz)."""
    rng = np.random.default_rng(2)
    for name in ("ibmGestureTrain", "ibmGestureTest"):
        for i in range(n):
            path = root / name / f"user{i // 4 + 1:02d}_fluorescent" / f"{i % 4}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, gesture_sample(rng, i % 4))
        if tar:
            with tarfile.open(root / f"{name}.tar.gz", "w:gz") as tf:
                tf.add(root / name, arcname=name)
            for p in sorted((root / name).rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            (root / name).rmdir()
    return root


def cfg(name: str, root: Path, tmp: Path, **kw: object) -> DataConfig:
    return DataConfig(name=name, root=str(root), cache_dir=str(tmp / "cache"), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- frames = hand computation


def test_shd_frames_equal_a_hand_count(tmp_path: Path) -> None:
    times = np.array([0.0, 0.05, 0.15, 0.95, 1.2], np.float16)  # 1.2 s is past the window
    units = np.array([0, 3, 3, 699, 5], np.uint16)
    for split in ("train", "test"):
        write_shd(tmp_path / f"shd_{split}.h5", [(times, units)], [2])
    data = load_dataset(cfg("shd", tmp_path, tmp_path, window=1000.0), steps=4)
    want = torch.zeros(4, 700)
    want[0, 0], want[0, 3], want[3, 699] = 1, 2, 1  # 250 ms bins: 0, 50, 150 ms | 950 ms
    assert data.frames and data.x_train.shape == (1, 4, 700) and data.n_classes == 20
    assert torch.equal(data.x_train[0], want) and data.y_train.tolist() == [2]


def test_nmnist_frames_equal_a_hand_count_through_an_overflow_event(tmp_path: Path) -> None:
    raw = nmnist_bytes([(1, 2, 1, 10), (0, 240, 0, 0), (5, 6, 0, 100), (33, 0, 0, 200_000)])
    for folder in ("Train", "Test"):
        (tmp_path / folder / "7").mkdir(parents=True)
        (tmp_path / folder / "7" / "00001.bin").write_bytes(raw)
    data = load_dataset(cfg("nmnist", tmp_path, tmp_path, window=300.0), steps=30)
    want = torch.zeros(30, 2, 34, 34)  # 10 ms bins; the overflow adds 2**13 us: 8292 us
    want[0, 1, 2, 1], want[0, 0, 6, 5], want[20, 0, 0, 33] = 1, 1, 1
    assert data.x_train.shape == (1, 30, 2, 34, 34) and data.y_train.tolist() == [7]
    assert torch.equal(data.x_train[0], want) and data.n_classes == 10


def test_gesture_frames_are_downsampled_counts(tmp_path: Path) -> None:
    rows = np.array([[5, 9, 1, 0], [6, 10, 1, 100], [127, 0, 0, 5999]])  # x, y, p, t [ms]
    for name in ("ibmGestureTrain", "ibmGestureTest"):
        (tmp_path / name / "user01_led").mkdir(parents=True)
        np.save(tmp_path / name / "user01_led" / "3.npy", rows)
    data = load_dataset(cfg("dvsgesture", tmp_path, tmp_path), steps=2)
    want = torch.zeros(2, 2, 32, 32)  # 3 s bins over 6 s, 4x4 pixels per frame pixel
    want[0, 1, 2, 1], want[1, 0, 0, 31] = 2, 1
    assert torch.equal(data.x_train[0], want) and data.n_classes == 11


def aedat31(events: list[tuple[int, int, int, int, int]], overflow: int = 0) -> bytes:
    """An AEDAT 3.1 file: a text header, one polarity packet of (x, y, p, t [us], valid)
    events and one packet of another type (skipped by readers)."""
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    body = b"".join(
        struct.pack("<Ii", x << 17 | y << 2 | p << 1 | v, t) for x, y, p, t, v in events
    )
    polarity = struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, len(events), len(events),
                           len(events)) + body  # fmt: skip
    special = struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + struct.pack("<Ii", 1, 0)
    return head + special + polarity


def test_ibm_original_release_reads_as_tonics(tmp_path: Path) -> None:
    start = 1_000_000  # the gesture's interval in the recording, us
    events = [
        (5, 9, 1, start, 1),
        (6, 10, 1, start + 100_000, 1),
        (127, 0, 0, start + 5_999_000, 1),
        (1, 1, 1, start - 10, 1),  # before the interval: not in the sample
        (2, 2, 1, start + 10, 0),  # invalid: dropped
    ]
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    (folder / "user01_led.aedat").write_bytes(aedat31(events))
    (folder / "user01_led_labels.csv").write_text(
        f"class,startTime_usec,endTime_usec\n4,{start},{start + 6_000_000}\n"
    )
    for split in ("train", "test"):
        (folder / f"trials_to_{split}.txt").write_text("user01_led.aedat\n")
    data = load_dataset(cfg("dvsgesture", tmp_path, tmp_path), steps=2)
    want = torch.zeros(2, 2, 32, 32)  # the same events as the Tonic-release test above
    want[0, 1, 2, 1], want[1, 0, 0, 31] = 2, 1
    assert torch.equal(data.x_train[0], want) and data.y_train.tolist() == [3]
    (folder / "user01_led.aedat").write_bytes(aedat31(events)[:-5])  # a cut last packet
    with pytest.raises(DataError, match=r"user01_led.aedat: truncated or damaged packet"):
        load_dataset(cfg("dvsgesture", tmp_path, tmp_path / "fresh"), steps=2)


@pytest.mark.parametrize("compress", ["", "zip", "gz"])
def test_shd_reads_plain_zipped_and_gzipped_files_alike(compress: str, tmp_path: Path) -> None:
    data = load_dataset(cfg("shd", make_shd(tmp_path / "d", 8, compress), tmp_path), steps=10)
    assert data.x_train.shape == (8, 10, 700) and data.x_train.sum() == 8 * 40
    ref = load_dataset(cfg("shd", make_shd(tmp_path / "ref", 8), tmp_path), steps=10)
    assert torch.equal(data.x_train, ref.x_train)


def test_archives_read_as_their_extracted_folders(tmp_path: Path) -> None:
    for name, make, kw in (("nmnist", make_nmnist, "zipped"), ("dvsgesture", make_gesture, "tar")):
        a = load_dataset(cfg(name, make(tmp_path / name / "a", **{kw: True}), tmp_path), steps=5)
        b = load_dataset(cfg(name, make(tmp_path / name / "b"), tmp_path), steps=5)
        assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
        assert a.x_train.sum() > 0


def test_frames_are_cached_per_binning(tmp_path: Path) -> None:
    root = make_shd(tmp_path / "d", 4)
    load_dataset(cfg("shd", root, tmp_path), steps=10)
    load_dataset(cfg("shd", root, tmp_path), steps=20)
    assert len(list((tmp_path / "cache").glob("shd-*.npz"))) == 2
    for f in root.iterdir():
        f.write_bytes(b"")  # the cache serves unchanged files only: now they are damaged
    with pytest.raises(DataError, match="damaged"):
        load_dataset(cfg("shd", root, tmp_path), steps=10)


# ---------------------------------------------------------------- missing and damaged files


@pytest.mark.parametrize(
    ("name", "files"),
    [("shd", ["shd_train.h5", "shd_test.h5", "zenkelab.org"]),
     ("nmnist", ["Train/ or Train.zip", "Test/ or Test.zip", "garrickorchard.com"]),
     ("dvsgesture", ["ibmGestureTrain/", "ibmGestureTest.tar.gz", "figshare.com"])],
)  # fmt: skip
def test_missing_files_name_each_file_and_its_url_fast(name: str, files: list[str],
                                                       tmp_path: Path) -> None:  # fmt: skip
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset(cfg(name, tmp_path, tmp_path), steps=4)
    assert time.monotonic() - start < 1.0
    assert all(f in str(err.value) for f in files)


def test_damaged_files_are_named(tmp_path: Path) -> None:
    shd = make_shd(tmp_path / "shd", 4, "zip")
    (shd / "shd_test.h5.zip").write_bytes(b"PK\x03\x04 truncated")
    nm = make_nmnist(tmp_path / "nm", 4)
    (nm / "Test" / "1" / "00001.bin").write_bytes(b"\x01\x02\x03")  # not 5-byte events
    dvs = make_gesture(tmp_path / "dvs", 4)
    bad = next((dvs / "ibmGestureTest").rglob("*.npy"))
    bad.write_bytes(b"\x93NUMPY garbage")
    for name, root, where in (("shd", shd, "shd_test.h5.zip"), ("nmnist", nm, "00001.bin"),
                              ("dvsgesture", dvs, bad.name)):  # fmt: skip
        start = time.monotonic()
        with pytest.raises(DataError, match=where):
            load_dataset(cfg(name, root, tmp_path), steps=4)
        assert time.monotonic() - start < 1.0


# ---------------------------------------------------------------- the time axis is explicit


def test_user_arrays_need_their_time_axis_said() -> None:
    x = torch.arange(2 * 10 * 5, dtype=torch.float32).reshape(2, 10, 5)  # (N, channels, bins)
    data = Dataset("mine", x, torch.zeros(2, dtype=torch.long), x, torch.zeros(2), 2, False)
    with pytest.raises(ConfigError, match="data.time_axis"):
        as_frames(data, None)
    frames = as_frames(data, -1)
    assert frames.frames and frames.input_shape == (5, 10)
    assert torch.equal(frames.x_train[1, 3], x[1, :, 3])  # step 3 is bin 3 of every channel
    with pytest.raises(ConfigError, match="time_axis"):
        as_frames(data, 2)


def test_event_data_needs_the_events_encoder(tmp_path: Path) -> None:
    root = make_shd(tmp_path / "d", 4)
    with pytest.raises(ConfigError, match="encoder.kind=events"):
        api.forward_check(api.resolve("shd-rsnn-surrogate", {
            "data.root": str(root), "encoder.kind": "repeat",
            "data.cache_dir": str(tmp_path / "c")}))  # fmt: skip


# ---------------------------------------------------------------- training on event data


def test_user_event_arrays_train_once_their_time_axis_is_said(tmp_path: Path) -> None:
    from spikeopt.builders import Builders
    from spikeopt.train.loop import train

    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    x = (torch.rand(120, 2, 8, 8, 6, generator=g) < 0.05).float()  # (N, 2, 8, 8, T), T last
    for c in range(3):  # class c: a burst on row 2c of polarity 0 in the first half of time
        x[y == c, 0, 2 * c, :, :3] = 1.0

    def data(cfg: object) -> Dataset:
        return Dataset("mine", x[:90], y[:90], x[90:], y[90:], 3, False)

    over = {"encoder.kind": "events", "model.arch": "mlp", "model.hidden": [32],
            "trainer.epochs": 3, "trainer.progress": False, "data.batch_size": 16,
            "optim.lr": 5e-3}  # fmt: skip
    cfg = api.resolve("digits-mlp-surrogate", over)
    with pytest.raises(ConfigError, match="data.time_axis=-1"):
        train(cfg, tmp_path / "unsaid", quiet=True, builders=Builders(data=data))
    assert not (tmp_path / "unsaid").exists()  # refused before anything is written
    cfg = api.resolve("digits-mlp-surrogate", {**over, "data.time_axis": -1})
    summary = train(cfg, tmp_path / "ok", quiet=True, builders=Builders(data=data))
    assert summary["test_acc"] > 0.9  # chance is 1/3


def test_shd_recipe_learns_its_fixture_well_above_chance(tmp_path: Path) -> None:
    root = make_shd(tmp_path / "d", 48, "gz")
    over = {"data.root": str(root), "data.cache_dir": str(tmp_path / "c"), "encoder.steps": 20,
            "model.hidden": [32], "trainer.epochs": 4, "trainer.progress": False,
            "data.batch_size": 16, "optim.lr": 1e-2, "model.dropout": 0.0}  # fmt: skip
    summary = api.run("shd-rsnn-surrogate", over, None, tmp_path / "run", quiet=True)
    assert summary["test_acc"] > 0.8  # 4 classes: chance is 0.25


def test_cli_missing_event_files_exit_2_naming_them_and_write_nothing(tmp_path: Path) -> None:
    from tests.test_cli import spikeopt

    (tmp_path / "shd").mkdir()
    (tmp_path / "shd" / "shd_train.h5").write_bytes(b"")  # only the test file is missing
    r = spikeopt("run", "shd-rsnn-surrogate", f"data.root={tmp_path / 'shd'}",
                 f"data.cache_dir={tmp_path / 'c'}", "--out", str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "shd_test.h5[.zip|.gz] (https://zenkelab.org/datasets/shd_test.h5.zip)" in r.stderr
    assert not (tmp_path / "run").exists()


def test_tonic_classes_read_the_root_and_never_download(tmp_path: Path) -> None:
    from tonic.datasets import NMNIST

    from spikeopt.tasks.readers.events import offline

    make_nmnist(tmp_path, 4)
    ds = offline(NMNIST, tmp_path, "hint", train=False)  # Tonic alone wants 10000 files, or fetches
    assert len(ds) == 4 and ds.location_on_system == str(tmp_path)
    with pytest.raises(DataError, match="NMNIST files missing; hint"):
        ds.download()
