"""Save and restore pytrees (parameters, optax / weighting states) as one ``.npz`` file.

A long training run checkpoints ``(params, opt_state)`` and resumes from it; the
states of the jaxpareto transforms are NamedTuples of arrays (weights, diagnostics,
counters), so the whole carry is a pytree of arrays and a resumed run continues
bit for bit. This module needs only numpy (no orbax):

* every leaf is stored as its own array, bit-exact: dtypes numpy cannot store
  natively (``bfloat16`` and the other ``ml_dtypes`` types) are stored as unsigned
  integers of the same width and viewed back on restore; typed PRNG keys are stored as
  their key data and re-wrapped;
* the tree structure is stored as text (``str(treedef)``) and *checked* on restore
  against a template, never unpickled: loading runs no code from the file
  (``allow_pickle=False``);
* the file is written to a temporary name and renamed, so a crash while saving leaves
  the previous checkpoint intact.

::

    checkpoint.save("run/step_50000.npz", (params, opt_state))
    like = (params0, tx.init(params0))          # any pytree of the same structure
    params, opt_state = checkpoint.restore("run/step_50000.npz", like)

``like`` may hold arrays or :class:`jax.ShapeDtypeStruct` (e.g. from
``jax.eval_shape(tx.init, params)``); only its structure, shapes and dtypes are read.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save", "restore"]

_FORMAT = "jaxpareto-checkpoint-1"


def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _encode(leaf) -> tuple[np.ndarray, str]:
    """``(storable array, dtype tag)`` for one leaf, losslessly."""
    if _is_key(leaf):
        impl = str(jax.random.key_impl(leaf))
        return np.asarray(jax.random.key_data(leaf)), f"key:{impl}"
    arr = np.asarray(leaf)
    if arr.dtype.kind not in "biufc":
        # ml_dtypes (bfloat16, float8_*, ...): numpy's npz cannot describe them;
        # store their bits.
        bits = np.dtype(f"u{arr.dtype.itemsize}")
        return arr.view(bits), f"bits:{jnp.dtype(arr.dtype).name}"
    return arr, arr.dtype.name


def _decode(arr: np.ndarray, tag: str):
    if tag.startswith("key:"):
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=tag[4:])
    if tag.startswith("bits:"):
        return jnp.asarray(arr.view(jnp.dtype(tag[5:])))
    return jnp.asarray(arr)


def _spec(leaf) -> tuple[tuple[int, ...], str]:
    """(shape, dtype tag) of a template leaf (array, ShapeDtypeStruct or scalar)."""
    if _is_key(leaf):
        return tuple(leaf.shape), "key:"  # any implementation; its data shape differs
    dtype = jnp.dtype(getattr(leaf, "dtype", None) or jnp.result_type(leaf))
    tag = dtype.name if dtype.kind in "biufc" else f"bits:{dtype.name}"
    return tuple(np.shape(leaf)), tag


def save(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` (a pytree of arrays / scalars) to ``path`` (a ``.npz`` file).

    Args:
      path: destination file; written atomically (temporary file, then rename).
      tree: any pytree; its leaves are fetched to the host.

    Raises:
      TypeError: a leaf is not an array or a Python / numpy scalar.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    payload: dict[str, np.ndarray] = {
        "__format__": np.asarray(_FORMAT),
        "__treedef__": np.asarray(str(treedef)),
    }
    tags = []
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool, complex))):
            raise TypeError(
                f"`tree` leaf {i} has type {type(leaf).__name__}; only arrays and scalars "
                "can be checkpointed."
            )
        arr, tag = _encode(leaf)
        payload[f"leaf_{i}"] = arr
        tags.append(tag)
    payload["__dtypes__"] = np.asarray(tags, dtype=str) if tags else np.zeros((0,), "U1")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Read a pytree written by :func:`save`, with the structure of ``like``.

    Args:
      path: a file written by :func:`save`.
      like: template pytree (arrays, scalars or ``jax.ShapeDtypeStruct``) with the
        structure, leaf shapes and dtypes the checkpoint must have, e.g. a freshly
        initialised ``(params, tx.init(params))``.

    Returns:
      A pytree with ``like``'s structure whose leaves are ``jax.Array`` holding the
      saved values bit for bit.

    Raises:
      ValueError: the file is not a jaxpareto checkpoint, or its tree structure, a leaf
        shape or a leaf dtype differs from ``like`` (the message names ``like`` and the
        first mismatch).
    """
    leaves_like, treedef = jax.tree_util.tree_flatten(like)
    with np.load(os.fspath(path), allow_pickle=False) as data:
        if "__format__" not in data or str(data["__format__"]) != _FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not a jaxpareto checkpoint.")
        saved_def = str(data["__treedef__"])
        if saved_def != str(treedef):
            raise ValueError(
                "`like` has a different pytree structure than the checkpoint:\n"
                f"  checkpoint: {saved_def}\n  like:       {treedef}"
            )
        tags = [str(t) for t in data["__dtypes__"]]
        out = []
        for i, (leaf, tag) in enumerate(zip(leaves_like, tags)):
            arr = data[f"leaf_{i}"]
            shape, want = _spec(leaf)
            is_key = want == "key:" and tag.startswith("key:")
            # Key data has trailing implementation axes after the key array's shape.
            got_shape = arr.shape[: len(shape)] if is_key else arr.shape
            if not (is_key or tag == want) or tuple(got_shape) != shape:
                raise ValueError(
                    f"`like` leaf {i} is {want}{list(shape)} but the checkpoint holds "
                    f"{tag}{list(arr.shape)}."
                )
            out.append(_decode(arr, tag))
    return jax.tree_util.tree_unflatten(treedef, out)
