"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020, "Gradient surgery
for multi-task learning", Algorithm 1).

For every task ``i`` the projected gradient starts at ``g_i^PC = g_i``; the other tasks
are visited in a random order and, whenever ``g_i^PC`` conflicts with ``g_j``
(``⟨g_i^PC, g_j⟩ < 0``), the conflicting component is removed:

    g_i^PC ← g_i^PC − (⟨g_i^PC, g_j⟩ / ‖g_j‖²) g_j.

The update is the sum ``d = Σ_i g_i^PC`` (Algorithm 1's return value; TorchJD's
``PCGrad`` also sums). ``reduction="mean"`` divides by ``m`` (the default of the popular
``Pytorch-PCGrad`` port); the direction is the same.

Gramian form. Every ``g_i^PC`` stays a linear combination of the task gradients,
``g_i^PC = Σ_k A_ik g_k``, so the algorithm only needs the Gramian ``C = G Gᵀ``:
``⟨g_i^PC, g_j⟩ = (A C)_ij`` and a projection on ``g_j`` subtracts
``(A C)_ij / C_jj`` from ``A_ij``. The weights of the update are the column sums
``w_k = Σ_i A_ik`` and ``d = Gᵀ w`` (:func:`jaxpareto.combine`).

Randomness. As in Algorithm 1 (and TorchJD) each task ``i`` draws its own visiting
order: row ``i`` of ``orders`` ``[m, m]`` is a permutation of ``0 … m−1`` (the entry
``i`` itself is skipped). :func:`pcgrad_weights` draws them from a PRNG key, or takes
them explicitly (``orders=``), or uses the identity order when neither is given; the
weighting :func:`pcgrad` keeps a key in its state and splits it at every update, so a
run is reproducible from its seed. For ``m = 2`` the order does not matter.

Properties (checked in ``tests/test_weighting_properties.py``): for a fixed set of
orders, relabelling the tasks (and the orders with them) permutes the weights; the
weights are unchanged when every gradient is multiplied by the same positive factor
(each projection coefficient is a ratio of inner products). PCGrad is *not*
non-conflicting for ``m ≥ 3`` (later projections can re-create a conflict) and it is
permutation invariant only in distribution.

Degeneracy: a zero gradient ``g_j`` (``C_jj ≤ 0``) is never projected on (its inner
products are zero); a Gramian with a non-finite entry gives the plain sum ``w = 1``
(``reduction="mean"``: ``1/m``), sets ``degenerate`` and ``status = NONFINITE_INPUT``.
The surgery is a fixed, finite procedure: ``iterations = 0`` (the number of projections
is ``projections``), ``converged`` unless the input was unusable.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_gram, is_concrete, working_dtype
from jaxpareto.weighting.base import (
    Weighting,
    check_state_matches,
    core_fields,
    full_precision,
    pick_status,
    state_from_result,
    weighting_factory,
)

__all__ = ["PcgradResult", "PcgradState", "pcgrad", "pcgrad_weights"]

_REDUCTIONS = ("sum", "mean")


class PcgradResult(NamedTuple):
    """Result of :func:`pcgrad_weights`.

    Attributes:
      weights: ``[m]`` task weights ``w`` with ``d = Gᵀ w = Σ_i g_i^PC`` (or the mean).
      status: int32 ``[]`` a :class:`jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT`` (non-finite Gramian) or ``DEGENERATE`` (the surgery
        overflowed).
      converged: bool ``[]`` ``status == SUCCESSFUL``.
      iterations: int32 ``[]`` always 0 (a fixed procedure; see ``projections``).
      coefficients: ``[m, m]`` row ``i`` holds the coefficients of ``g_i^PC`` on the task
        gradients.
      orders: int32 ``[m, m]`` the visiting orders used (row ``i`` for task ``i``).
      projections: int32 ``[]`` number of projections performed (conflicts found).
      degenerate: bool ``[]`` the Gramian had a non-finite entry (fallback weights).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    coefficients: jax.Array
    orders: jax.Array
    projections: jax.Array
    degenerate: jax.Array


def _check_reduction(reduction) -> Literal["sum", "mean"]:
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")
    return reduction


def random_orders(key: jax.Array, num_tasks: int) -> jax.Array:
    """``[m, m]`` int32: one independent random permutation of ``0 … m−1`` per task."""
    # The argsort of i.i.d. uniforms is a uniformly random permutation (ties have
    # probability ~0); it compiles much faster than m calls of jax.random.permutation.
    u = jax.random.uniform(key, (num_tasks, num_tasks), jnp.float32)
    return jnp.argsort(u, axis=1).astype(jnp.int32)


def _check_orders(orders, m: int) -> jax.Array:
    orders = jnp.asarray(orders)
    if not jnp.issubdtype(orders.dtype, jnp.integer):
        raise TypeError(f"`orders` must be an integer array, got dtype {orders.dtype}.")
    if orders.shape != (m, m):
        raise ValueError(
            f"`orders` must have shape ({m}, {m}) (one permutation per task), got {orders.shape}."
        )
    if is_concrete(orders):
        o = np.sort(np.asarray(orders), axis=1)
        if not np.array_equal(o, np.broadcast_to(np.arange(m), (m, m))):
            raise ValueError("`orders`: every row must be a permutation of 0 … m−1.")
    return orders.astype(jnp.int32)


@full_precision
def pcgrad_weights(
    gram: jax.Array,
    key: jax.Array | None = None,
    *,
    orders: jax.Array | None = None,
    reduction: str = "sum",
) -> PcgradResult:
    """PCGrad weights from the Gramian (Yu et al. 2020, Algorithm 1).

    Args:
      gram: ``[m, m]`` task Gramian ``C = G Gᵀ``, ``m ≥ 1`` (``m = 1``: nothing to
        project, the weight is 1).
      key: PRNG key for the visiting orders (one permutation per task).
      orders: ``[m, m]`` explicit visiting orders (overrides ``key``); each row a
        permutation of ``0 … m−1``. Without ``key`` and ``orders`` the identity order
        is used.
      reduction: ``"sum"`` (paper, TorchJD) or ``"mean"``.

    Returns:
      :class:`PcgradResult`; float fields in the dtype of ``gram``.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    reduction = _check_reduction(reduction)
    m = gram.shape[0]
    if orders is not None:
        orders = _check_orders(orders, m)
    elif key is not None:
        orders = random_orders(key, m)
    else:
        orders = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (m, m))
    return _pcgrad(jax.lax.stop_gradient(gram), orders, reduction)


# Jitted so that eager calls reuse one compiled program per shape and option; inside a
# user's jit it is inlined.
@functools.partial(jax.jit, static_argnames=("reduction",))
@full_precision
def _pcgrad(gram, orders, reduction) -> PcgradResult:
    m = gram.shape[0]
    out_dtype = gram.dtype
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    finite = jnp.all(jnp.isfinite(c))
    c = jnp.where(finite, c, jnp.eye(m, dtype=dtype))
    diag = jnp.diagonal(c)
    positive = diag > 0
    safe_diag = jnp.where(positive, diag, 1)

    def surgery(i, order):
        def visit(k, carry):
            a, count = carry
            j = order[k]
            inner = a @ c[:, j]
            conflict = (j != i) & positive[j] & (inner < 0)
            a = a.at[j].add(jnp.where(conflict, -inner / safe_diag[j], 0))
            return a, count + conflict.astype(jnp.int32)

        a0 = jax.nn.one_hot(i, m, dtype=dtype)
        return jax.lax.fori_loop(0, m, visit, (a0, jnp.zeros((), jnp.int32)))

    coeffs, counts = jax.vmap(surgery)(jnp.arange(m), orders)
    weights = jnp.sum(coeffs, axis=0)
    ok = finite & jnp.all(jnp.isfinite(weights))
    weights = jnp.where(ok, weights, 1)
    coeffs = jnp.where(ok, coeffs, jnp.eye(m, dtype=dtype))
    if reduction == "mean":
        weights = weights / m
    return PcgradResult(
        weights=weights.astype(out_dtype),
        status=pick_status(nonfinite=~finite, degenerate=~ok),
        converged=ok,
        iterations=jnp.zeros((), jnp.int32),
        coefficients=coeffs.astype(out_dtype),
        orders=orders,
        projections=jnp.sum(counts),
        degenerate=~ok,
    )


class PcgradState(NamedTuple):
    """State of the :func:`pcgrad` weighting.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``).
      status: int32 ``[]`` status of the last update (:class:`PcgradResult`).
      converged: bool ``[]`` the last update succeeded.
      iterations: int32 ``[]`` always 0 (see ``projections``).
      key: the PRNG key for the next update (split at every update).
      projections: int32 ``[]`` projections in the last update.
      degenerate: bool ``[]`` last Gramian was non-finite.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    key: jax.Array
    projections: jax.Array
    degenerate: jax.Array


@weighting_factory(legacy_positional=("seed",))
def pcgrad(seed: int | jax.Array = 0, *, reduction: Literal["sum", "mean"] = "sum") -> Weighting:
    """PCGrad as a weighting (see the module docstring and :func:`pcgrad_weights`).

    Args:
      seed: an int seed or a PRNG key; the state holds the key and splits it at every
        update, so runs are reproducible. ``init(..., key=k)`` overrides it (e.g. one
        key per model under ``vmap``).
      reduction: ``"sum"`` (paper, TorchJD) or ``"mean"``.

    Returns:
      ``Weighting`` with ``init(num_tasks, dtype=jnp.float32, *, key=None) -> PcgradState``
      and ``update(gram, state, *, losses=None, preference=None) -> (weights, state)``
      (``losses`` and ``preference`` are ignored).
    """
    reduction = _check_reduction(reduction)
    if isinstance(seed, (bool, float)) or not (
        isinstance(seed, (int, np.integer)) or hasattr(seed, "shape")
    ):
        raise TypeError(f"`seed` must be an int or a PRNG key, got {type(seed).__name__}.")
    default_key = jax.random.PRNGKey(int(seed)) if isinstance(seed, (int, np.integer)) else seed

    def init(num_tasks: int, dtype=jnp.float32, *, key=None) -> PcgradState:
        return PcgradState(
            **core_fields(num_tasks, dtype),
            key=default_key if key is None else key,
            projections=jnp.zeros((), jnp.int32),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        key, sub = jax.random.split(state.key)
        res = pcgrad_weights(gram, sub, reduction=reduction)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(PcgradState, res, state, key=key)

    return Weighting(init, update)
