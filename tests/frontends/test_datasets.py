"""Datasets: the fixed digits split, .npz, MNIST IDX and CIFAR-10 binary parsing, event data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from compiler.errors import DatasetError
from frontends.datasets import (
    CIFAR_RECORD,
    binarize_events,
    calibration_arrays,
    load_dataset,
    synthetic_events,
)


# --- digits ------------------------------------------------------------------------------------
def test_digits_fixed_split():
    tr, te, al = (load_dataset("digits", s) for s in ("train", "test", "all"))
    assert (len(tr), len(te), len(al)) == (1437, 360, 1797)
    for d in (tr, te, al):
        assert d.x.dtype == np.float32 and d.y.dtype == np.int64
        assert d.x.shape[1:] == (1, 8, 8) and d.shape == (1, 8, 8)
        assert d.x.min() == 0.0 and d.x.max() == 1.0 and d.classes == 10
    assert np.all(np.bincount(te.y, minlength=10) >= 35)      # stratified
    again = load_dataset("digits", "test")
    np.testing.assert_array_equal(again.x, te.x)              # deterministic
    np.testing.assert_array_equal(again.y, te.y)
    # values are multiples of 1/16
    np.testing.assert_array_equal(te.x * 16, np.round(te.x * 16))
    assert len(load_dataset("digits", "test", limit=10)) == 10
    np.testing.assert_array_equal(load_dataset("digits", "test", limit=10).y, te.y[:10])


def test_calibration_uses_train_split(tmp_path):
    cal = calibration_arrays("digits", limit=50)
    np.testing.assert_array_equal(cal, load_dataset("digits", "train").x[:50])
    p = tmp_path / "calib.npz"
    np.savez(p, x=np.zeros((3, 2, 2), np.uint8))             # labels not needed
    assert calibration_arrays(str(p)).shape == (3, 1, 2, 2)


@pytest.mark.parametrize("spec,split", [("nope", "test"), ("digits", "validation"),
                                        ("npz:", "test"), ("mnist", "test")])
def test_bad_spec(spec, split):
    with pytest.raises(DatasetError):
        load_dataset(spec, split)


# --- npz ---------------------------------------------------------------------------------------
def test_npz_round_trip_shapes_and_scaling(tmp_path):
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "a.npz", x=x8, y=y)
    d = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert d.x.shape == (5, 1, 6, 7) and d.classes == 3
    np.testing.assert_array_equal(d.x, (x8.astype(np.float32) / 255.0)[:, None])
    np.testing.assert_array_equal(d.y, y)
    xf = rng.random((4, 3, 2, 2)).astype(np.float32)
    np.savez_compressed(tmp_path / "b.npz", x=xf, y=np.arange(4))
    d = load_dataset(str(tmp_path / "b.npz"), "all")            # a bare .npz path works too
    np.testing.assert_array_equal(d.x, xf)
    np.savez(tmp_path / "c.npz", x=rng.random((3, 10)), y=np.zeros(3, np.int32))
    assert load_dataset(f"npz:{tmp_path / 'c.npz'}").x.shape == (3, 1, 1, 10)


def test_npz_train_test_keys(tmp_path):
    np.savez(tmp_path / "s.npz", x_train=np.zeros((6, 2, 2), np.uint8), y_train=np.arange(6),
             x_test=np.full((2, 2, 2), 255, np.uint8), y_test=np.array([1, 2]))
    spec = f"npz:{tmp_path / 's.npz'}"
    assert len(load_dataset(spec, "train")) == 6
    te = load_dataset(spec, "test")
    assert len(te) == 2 and te.x.min() == 1.0
    assert len(load_dataset(spec, "all")) == 8


@pytest.mark.parametrize("arrays,match", [
    (dict(x=np.zeros((2, 3, 3))), "no array 'y'"),
    (dict(y=np.zeros(2)), "no array 'x'"),
    (dict(x=np.full((2, 3, 3), 2.0), y=np.zeros(2, int)), r"expected \[0, 1\]"),
    (dict(x=np.zeros((2, 3, 3)), y=np.zeros(3, int)), "expected"),
    (dict(x=np.zeros((2, 1, 1, 3, 3)), y=np.zeros(2, int)), "shape"),
    (dict(x=np.full((2, 3), 300), y=np.zeros(2, int)), "0..255"),
    (dict(x=np.zeros((2, 3)), y=np.array([0.5, 1.0])), "integer"),
])
def test_npz_errors(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(f"npz:{p}")
    assert "bad.npz" in str(e.value)


def test_npz_refuses_pickles_and_garbage(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, int))
    with pytest.raises(DatasetError, match="obj.npz") as e:
        load_dataset(f"npz:{p}")
    assert "pickle" in e.value.hint
    g = tmp_path / "garbage.npz"
    g.write_bytes(b"not a zip file at all")
    with pytest.raises(DatasetError, match="garbage.npz"):
        load_dataset(f"npz:{g}")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# --- MNIST IDX ---------------------------------------------------------------------------------
def _idx(magic: int, arr: np.ndarray) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(root, n_train=5, n_test=3, gz=False, hw=(4, 3)):
    rng = np.random.default_rng(0)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, magic, arr, idx in (("images", 0x803, x, "idx3"), ("labels", 0x801, y, "idx1")):
            name = f"{prefix}-{kind}-{idx}-ubyte"
            raw = _idx(magic, arr)
            if gz:
                with gzip.open(root / (name + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (root / name).write_bytes(raw)
        data[prefix] = (x, y)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    data = _write_mnist(tmp_path, gz=gz)
    tr = load_dataset(f"mnist:{tmp_path}", "train")
    assert tr.x.shape == (5, 1, 4, 3) and tr.classes == 10
    np.testing.assert_array_equal(tr.x[:, 0], data["train"][0] / np.float32(255.0))
    np.testing.assert_array_equal(tr.y, data["train"][1])
    te = load_dataset(f"mnist:{tmp_path}", "test", limit=2)
    np.testing.assert_array_equal(te.y, data["t10k"][1][:2])
    assert len(load_dataset(f"mnist:{tmp_path}", "all")) == 8


def test_mnist_errors(tmp_path):
    _write_mnist(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(b"\x00\x00\x08\x01" + good[4:])           # labels magic on an images file
    with pytest.raises(DatasetError, match="magic") as e:
        load_dataset(f"mnist:{tmp_path}", "train")
    assert "train-images-idx3-ubyte" in str(e.value)
    img.write_bytes(good[:-5])                                  # truncated
    with pytest.raises(DatasetError, match="truncated|expected"):
        load_dataset(f"mnist:{tmp_path}", "train")
    img.write_bytes(good[:6])
    with pytest.raises(DatasetError, match="too short"):
        load_dataset(f"mnist:{tmp_path}", "train")
    img.unlink()
    with pytest.raises(DatasetError, match="train-images"):
        load_dataset(f"mnist:{tmp_path}", "train")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"mnist:{tmp_path / 'nowhere'}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(0x801, np.zeros(2)))
    with pytest.raises(DatasetError, match="3 images but"):
        load_dataset(f"mnist:{tmp_path}", "test")
    bad_gz = tmp_path / "gz"
    bad_gz.mkdir()
    _write_mnist(bad_gz, gz=True)
    p = bad_gz / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DatasetError, match="t10k-images"):
        load_dataset(f"mnist:{bad_gz}", "test")


# --- CIFAR-10 binary ---------------------------------------------------------------------------
def _write_cifar(root, per_batch=2, n_test=3):
    rng = np.random.default_rng(0)
    recs = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        n = n_test if name == "test_batch.bin" else per_batch
        r = rng.integers(0, 256, (n, CIFAR_RECORD), dtype=np.uint8)
        r[:, 0] = rng.integers(0, 10, n)
        (root / name).write_bytes(r.tobytes())
        recs[name] = r
    return recs


def test_cifar10_binary(tmp_path):
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    recs = _write_cifar(sub)
    te = load_dataset(f"cifar10:{tmp_path}", "test")
    r = recs["test_batch.bin"]
    assert te.x.shape == (3, 3, 32, 32) and te.classes == 10
    np.testing.assert_array_equal(te.y, r[:, 0])
    # R plane first, row-major 32x32
    np.testing.assert_array_equal(te.x[1, 0, 0, :5], r[1, 1:6] / np.float32(255.0))
    np.testing.assert_array_equal(te.x[2, 2, 31, 31], r[2, 3072] / np.float32(255.0))
    tr = load_dataset(f"cifar10:{tmp_path}", "train")
    assert len(tr) == 10
    np.testing.assert_array_equal(tr.y[2:4], recs["data_batch_2.bin"][:, 0])
    assert len(load_dataset(f"cifar10:{sub}", "train", limit=3)) == 3
    assert len(load_dataset(f"cifar10:{sub}", "all")) == 13


def test_cifar10_errors(tmp_path):
    _write_cifar(tmp_path)
    p = tmp_path / "test_batch.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="test_batch.bin") as e:
        load_dataset(f"cifar10:{tmp_path}", "test")
    assert "binary" in e.value.hint
    r = np.zeros((1, CIFAR_RECORD), np.uint8)
    r[0, 0] = 42
    p.write_bytes(r.tobytes())
    with pytest.raises(DatasetError, match="label 42"):
        load_dataset(f"cifar10:{tmp_path}", "test")
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError, match="data_batch_3.bin"):
        load_dataset(f"cifar10:{tmp_path}", "train")


# --- event data --------------------------------------------------------------------------------
def test_synthetic_events_shape_and_determinism():
    a = synthetic_events(16, 10, seed=3)
    b = synthetic_events(16, 10, seed=3)
    c = synthetic_events(16, 10, seed=4)
    assert a.x.shape == (16, 10, 2, 16, 16) and a.x.dtype == np.uint8
    assert set(np.unique(a.x)) <= {0, 1} and a.timesteps == 10 and a.shape == (2, 16, 16)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert np.bincount(a.y).tolist() == [4, 4, 4, 4]


def test_synthetic_events_separable_by_motion():
    d = synthetic_events(40, 8, shape=(2, 16, 16), classes=4, seed=0, noise=0.01)
    on = d.x[:, :, 0].astype(np.float64)                     # [N, T, H, W]
    rows, cols = np.arange(16)[:, None], np.arange(16)[None, :]
    mass = on.sum(axis=(2, 3)) + 1e-9
    cy = (on * rows).sum(axis=(2, 3)) / mass
    cx = (on * cols).sum(axis=(2, 3)) / mass
    t = np.arange(8) - 3.5
    vy, vx = (cy * t).sum(1), (cx * t).sum(1)                 # centroid velocity sign
    pred = np.where(np.abs(vx) > np.abs(vy), np.where(vx > 0, 0, 1), np.where(vy > 0, 2, 3))
    assert np.mean(pred == d.y) >= 0.9


def test_binarize_events():
    ds = load_dataset("digits", "test", limit=50)
    ev = binarize_events(ds, T=40, seed=1)
    assert ev.x.shape == (50, 40, 1, 8, 8) and ev.x.dtype == np.uint8
    np.testing.assert_array_equal(ev.y, ds.y)
    assert abs(ev.x.mean(axis=1).mean() - ds.x.mean()) < 0.01
    assert np.all(ev.x[:, :, ds.x[0] == 0][0] == 0)           # zero intensity never fires
    np.testing.assert_array_equal(binarize_events(ds, 40, seed=1).x, ev.x)


def test_event_errors():
    with pytest.raises(DatasetError):
        synthetic_events(4, 5, classes=9)
    with pytest.raises(DatasetError):
        synthetic_events(4, 5, shape=(3, 16, 16))
