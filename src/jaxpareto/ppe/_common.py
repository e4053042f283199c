"""Shared pieces of :mod:`jaxpareto.ppe`: the cost model, argument checks.

The status codes are those of :class:`jaxpareto.status.Status`, shared by every solver.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import is_concrete
from jaxpareto.status import Status

# Cost model, in gradient-evaluation equivalents (see the package docstring).
#: Cost of one gradient of a scalar loss (the unit; a Jacobian of ``m`` losses costs ``m``).
COST_GRADIENT = 1.0
#: Cost of one evaluation of ``loss_fn`` alone (no derivative).
COST_FORWARD = 0.5
#: Cost of one Hessian-vector product (forward-over-reverse).
COST_HVP = 2.0


BUDGET = Status.MAX_POINTS  # the name used before the enum


class PPEWarning(UserWarning):
    """Raised (as a warning) by :class:`~jaxpareto.ppe.Navigator` when a move did not do
    what was asked: a corrector or GMRES solve did not converge, or the move stalled."""


def _check_int(x, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{name}` must be a Python int, got {type(x).__name__}.")
    if x < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {x}.")
    return int(x)


def _check_scalar(x, name: str, *, positive: bool = False, nonnegative: bool = False):
    """A float scalar; where concrete, finite and of the required sign."""
    if isinstance(x, bool):
        raise TypeError(f"`{name}` must be a float scalar, got bool.")
    arr = jnp.asarray(x)
    if arr.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {arr.shape}.")
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a float scalar, got dtype {arr.dtype}.")
    if is_concrete(arr):
        v = float(arr)
        if not math.isfinite(v):
            raise ValueError(f"`{name}` must be finite, got {v}.")
        if positive and not v > 0:
            raise ValueError(f"`{name}` must be > 0, got {v}.")
        if nonnegative and not v >= 0:
            raise ValueError(f"`{name}` must be >= 0, got {v}.")
    return x


def _check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ValueError(f"`eps` must be a finite Python float >= 0, got {eps!r}.")


def _check_params(params, name: str = "params") -> None:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"`{name}` has no leaves.")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"`{name}` has a leaf of dtype {jnp.result_type(leaf)}; continuation "
                "needs floating parameters."
            )


def _num_tasks(loss_fn, params, args) -> tuple[int, Any]:
    """``m`` and the loss dtype, from the abstract evaluation of ``loss_fn``."""
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    out = jax.eval_shape(loss_fn, params, *args)
    if not hasattr(out, "shape") or len(out.shape) != 1:
        raise ValueError(
            "`loss_fn` must return a 1-D vector of m task losses, got "
            f"{getattr(out, 'shape', type(out))}."
        )
    if out.shape[0] < 2:
        raise ValueError(f"`loss_fn` returns m={out.shape[0]} losses; continuation needs m >= 2.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`loss_fn` must return floating losses, got {out.dtype}.")
    return int(out.shape[0]), out.dtype


def _check_same_tree(a, b, name_a: str, name_b: str) -> None:
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(f"`{name_b}` must have the pytree structure of `{name_a}`: {tb} vs {ta}.")
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jnp.shape(la) != jnp.shape(lb):
            raise ValueError(
                f"`{name_b}` leaf shape {jnp.shape(lb)} does not match `{name_a}` leaf shape "
                f"{jnp.shape(la)}."
            )


def _default(value, dtype, f64: float, f32: float):
    """A dtype-dependent default tolerance (``f64`` for float64, else ``f32``)."""
    if value is not None:
        return value
    return f64 if jnp.dtype(dtype) == jnp.float64 else f32


def _all_finite(*trees) -> jax.Array:
    leaves = [leaf for t in trees for leaf in jax.tree_util.tree_leaves(t)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _weighted_loss(loss_fn, alpha, args):
    def f(p):
        losses = loss_fn(p, *args)
        return jnp.dot(alpha.astype(losses.dtype), losses)

    return f


# ------------------------------------------------------------------ compilation counter

# How many times each jitted entry point (``"corrector"``, ``"tangent"``, ``"trace"``)
# has been traced, i.e. compiled: the Python body of a jitted function runs only when
# JAX traces it. Tests use it to check that repeated eager calls reuse the executable.
TRACE_COUNTS: dict[str, int] = {}


def _count_trace(name: str) -> None:
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


def _strong(tree):
    """Leaves as strongly typed arrays (a weakly typed leaf would recompile)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.result_type(x)), tree)


# --------------------------------------------------------------------- chunked data


class _Chunked:
    """``loss_fn`` averaged over chunks of data: ``_Chunked(f)(θ, *args, batches)`` is
    ``mean_b f(θ, *args, *batch_b)`` where ``batch_b`` is slice ``b`` of every leaf of the
    tuple ``batches`` (leading axis = chunks), computed with ``lax.map`` and
    ``jax.checkpoint`` per chunk, so a gradient, Jacobian or HVP holds one chunk's
    activations at a time. Equal to the full-batch loss when ``f`` returns per-sample
    means and the chunks have equal sizes. Hashable by ``f``, so ``jit`` caches reuse
    executables across calls."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def __hash__(self):
        return hash((_Chunked, self.loss_fn))

    def __eq__(self, other):
        return isinstance(other, _Chunked) and other.loss_fn == self.loss_fn

    def __repr__(self):
        return f"_Chunked({self.loss_fn!r})"

    def __call__(self, params, *args):
        *rest, batches = args
        body = jax.checkpoint(lambda p, b: self.loss_fn(p, *rest, *b))
        per_chunk = jax.lax.map(lambda b: body(params, b), batches)
        return jnp.mean(per_chunk, axis=0)


def _stack_batches(batches) -> tuple:
    """``batches`` as a tuple of arrays/pytrees with a common leading (chunk) axis.

    A tuple is taken as already stacked (element ``j`` holds the ``j``-th data argument of
    every chunk). A list or any other iterable (e.g. a data iterator) is read to the end;
    each item is one chunk (a tuple of data arguments, or a single array) and the items
    are stacked along a new leading axis.
    """
    if isinstance(batches, tuple):
        stacked = batches
    elif isinstance(batches, (jax.Array, np.ndarray)):
        stacked = (batches,)
    else:
        try:
            items = list(batches)
        except TypeError:
            raise TypeError(
                "`batches` must be a tuple of stacked arrays or an iterable of "
                f"chunks, got {type(batches).__name__}."
            ) from None
        if not items:
            raise ValueError("`batches` is empty.")
        items = [it if isinstance(it, tuple) else (it,) for it in items]
        stacked = jax.tree_util.tree_map(
            lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *items
        )
    leaves = jax.tree_util.tree_leaves(stacked)
    if not leaves:
        raise ValueError("`batches` has no arrays.")
    sizes = {int(jnp.shape(x)[0]) if jnp.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes or 0 in sizes:
        raise ValueError(
            "every array in `batches` needs the same, non-zero leading (chunk) "
            f"axis; got leading sizes {sorted(sizes)}."
        )
    return jax.tree_util.tree_map(jnp.asarray, stacked)


def _with_batches(loss_fn, args, batches):
    """``(loss_fn, args)`` for the chunked data ``batches`` (or unchanged when None)."""
    if batches is None:
        return loss_fn, tuple(args)
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    return _Chunked(loss_fn), tuple(args) + (_stack_batches(batches),)
