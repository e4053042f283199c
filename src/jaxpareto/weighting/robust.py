"""Byzantine-robust aggregators: Krum / Multi-Krum and the coordinate-wise trimmed mean.

These are TorchJD's ``Krum`` and ``TrimmedMean``, from federated learning with
adversarial workers; in multi-task learning they treat the task gradients as votes.

Krum (Blanchard et al., NeurIPS 2017, "Machine learning with adversaries: Byzantine
tolerant gradient descent", Sec. 4). With ``f`` Byzantine rows among ``m``, the score of
row ``i`` is the sum of its distances to its ``m − f − 2`` nearest other rows,

    s(i) = Σ_{j ∈ N_i} ‖g_i − g_j‖,      ‖g_i − g_j‖² = C_ii + C_jj − 2 C_ij,

(TorchJD sums the distances themselves, not their squares as in the paper's eq.; we
follow TorchJD so that its implementation is an exact oracle; the selection is the
same whenever the ranking agrees and ``score="squared"`` gives the paper's form).
Multi-Krum selects the ``k`` rows of smallest score and averages them:
``w = (1/k) Σ_{i ∈ S} e_i``. Only the Gramian is needed. Ties are broken towards the
smaller index. It needs ``m ≥ f + 3`` (a ``ValueError`` otherwise, except ``m = 1``:
weight 1).

TrimmedMean (Yin et al., ICML 2018, "Byzantine-robust distributed learning: towards
optimal statistical rates", Definition 2). Every coordinate ``k`` of the update is the
mean of the task values ``g_{1k} … g_{mk}`` after removing the ``t`` largest and ``t``
smallest: this acts on coordinates, so it is a *Jacobian weighting*
(``Weighting.needs == "jacobian"``, see :mod:`jaxpareto.weighting.base`); its
``state.weights`` holds the effective weights ``w_i = (#coordinates where row i was kept)
/ (n (m − 2t))`` (they sum to 1). It needs ``m ≥ 2t + 1`` (``m = 1``: the gradient).

Properties: both are permutation invariant (up to ties) and scale free (the ranking
and the sorting commute with a common positive factor); neither is non-conflicting nor
linear under task scaling.

Bad input: a Gramian (Krum) or Jacobian (TrimmedMean) with a non-finite entry gives
uniform weights ``1/m`` (Krum) or a zero direction (TrimmedMean) with
``status = NONFINITE_INPUT``.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, working_dtype
from jaxpareto.weighting._field import (
    FieldState,
    check_nonneg_int,
    check_positive_int,
    field_state,
    pick_status,
)
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    weighting_factory,
)

__all__ = ["KrumResult", "krum", "krum_weights", "trimmed_mean", "trimmed_mean_direction"]

_SCORES = ("distance", "squared")


class KrumResult(NamedTuple):
    """Result of :func:`krum_weights`.

    Attributes:
      weights: ``[m]`` ``1/k`` on the selected rows, 0 elsewhere.
      status: int32 ``[]`` ``SUCCESSFUL`` or ``NONFINITE_INPUT`` (uniform fallback).
      converged: bool ``[]`` True unless the Gramian was non-finite.
      iterations: int32 ``[]`` 0 (closed form).
      scores: ``[m]`` the Krum scores ``s(i)``.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    scores: jax.Array


def _check_krum(m, n_byzantine, n_selected):
    if m > 1 and m < n_byzantine + 3:
        raise ValueError(
            f"Krum needs m >= n_byzantine + 3 = {n_byzantine + 3} tasks, got m={m} "
            "(`gram` is too small)."
        )
    if m > 1 and n_selected > m:
        raise ValueError(f"`n_selected`={n_selected} exceeds m={m} (`gram` rows).")


def krum_weights(
    gram: jax.Array, n_byzantine: int = 1, *, n_selected: int = 1, score: str = "distance"
) -> KrumResult:
    """(Multi-)Krum weights from the Gramian (Blanchard et al. 2017).

    Args:
      gram: ``[m, m]`` Gramian, ``m ≥ n_byzantine + 3`` (or ``m = 1``).
      n_byzantine: ``f ≥ 0``, the number of rows that may be adversarial.
      n_selected: ``k ≥ 1`` rows averaged (Multi-Krum; ``1`` = Krum).
      score: ``"distance"`` (TorchJD: sum of distances) or ``"squared"`` (the paper:
        sum of squared distances).
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    n_byzantine = check_nonneg_int(n_byzantine, "n_byzantine")
    n_selected = check_positive_int(n_selected, "n_selected")
    if score not in _SCORES:
        raise ValueError(f"`score` must be one of {_SCORES}, got {score!r}.")
    _check_krum(gram.shape[0], n_byzantine, n_selected)
    return _krum(jax.lax.stop_gradient(gram), n_byzantine, n_selected, score)


@functools.partial(jax.jit, static_argnames=("f", "k", "score"))
def _krum(gram, f, k, score) -> KrumResult:
    m = gram.shape[0]
    out = gram.dtype
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    finite = jnp.all(jnp.isfinite(c))
    c = jnp.where(finite, 0.5 * (c + c.T), jnp.eye(m, dtype=dtype))
    if m == 1:
        w = jnp.ones((1,), dtype)
        scores = jnp.zeros((1,), dtype)
    else:
        diag = jnp.diagonal(c)
        sq = jnp.maximum(diag[:, None] + diag[None, :] - 2 * c, 0)
        dist = jnp.sqrt(sq) if score == "distance" else sq
        # Exclude the row itself (distance 0 up to rounding) by sending it to +inf.
        dist = jnp.where(jnp.eye(m, dtype=bool), jnp.inf, dist)
        nearest = jnp.sort(dist, axis=1)[:, : m - f - 2]
        scores = jnp.sum(nearest, axis=1)
        order = jnp.argsort(scores, stable=True)
        w = jnp.zeros((m,), dtype).at[order[:k]].set(1.0 / k)
        w = jnp.where(finite, w, 1.0 / m)
    return KrumResult(
        weights=w.astype(out),
        status=pick_status(~finite, jnp.asarray(False)),
        converged=finite,
        iterations=jnp.zeros((), jnp.int32),
        scores=scores.astype(out),
    )


@weighting_factory
def krum(
    n_byzantine: int = 1,
    *,
    num_tasks: int | None = None,
    n_selected: int = 1,
    score: Literal["distance", "squared"] = "distance",
) -> Weighting:
    """Krum / Multi-Krum as a weighting (see the module docstring, :func:`krum_weights`).

    Args:
      n_byzantine: ``f``, the number of possibly adversarial task gradients.
      num_tasks: optional fixed ``m``.
      n_selected: ``k`` (Multi-Krum averages the ``k`` best rows).
      score: ``"distance"`` (TorchJD) or ``"squared"`` (paper).
    """
    n_byzantine = check_nonneg_int(n_byzantine, "n_byzantine")
    n_selected = check_positive_int(n_selected, "n_selected")
    if score not in _SCORES:
        raise ValueError(f"`score` must be one of {_SCORES}, got {score!r}.")

    def init(num_tasks: int, dtype=jnp.float32) -> FieldState:
        num_tasks = check_num_tasks(num_tasks)
        _check_krum(num_tasks, n_byzantine, n_selected)
        return field_state(jnp.full((num_tasks,), 1.0 / num_tasks, dtype))

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        res = krum_weights(gram, n_byzantine, n_selected=n_selected, score=score)
        w = res.weights.astype(state.weights.dtype)
        return w, FieldState(w, res.status, res.converged, res.iterations)

    return Weighting(init, update, num_tasks)


# ----------------------------------------------------------------------- trimmed mean


def _rows(jac):
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("`jac` must be a Jacobian pytree whose leaves have a leading axis m.")
    return leaves[0].shape[0]


def trimmed_mean_direction(jac, trim_number: int = 1):
    """Coordinate-wise trimmed mean of the task gradients (Yin et al. 2018).

    Args:
      jac: Jacobian pytree (every leaf ``[m, ...]``) or an ``[m, n]`` matrix.
      trim_number: ``t ≥ 0``, the values removed at each end of every coordinate
        (``m ≥ 2t + 1``; ``m = 1`` returns the gradient).

    Returns:
      ``(direction, weights, finite)``: the gradient-shaped direction, the effective
      per-task weights ``[m]`` (fraction of coordinates kept per row ``/ (m − 2t)``),
      and whether the Jacobian was finite (else the direction is zero, weights ``1/m``).
    """
    t = check_nonneg_int(trim_number, "trim_number")
    m = _rows(jac)
    if m > 1 and m < 2 * t + 1:
        raise ValueError(f"TrimmedMean needs m >= 2*trim_number + 1 = {2 * t + 1}, got m={m}.")
    if m == 1:
        t = 0
    return _trimmed_mean(jac, t)


@functools.partial(jax.jit, static_argnames=("t",))
def _trimmed_mean(jac, t):
    m = _rows(jac)
    leaves, treedef = jax.tree_util.tree_flatten(jac)
    finite = functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.asarray(True)
    )
    wdtype = working_dtype(*leaves)
    keep = m - 2 * t
    outs, counts, total = [], jnp.zeros((m,), wdtype), 0
    for x in leaves:
        xs = jnp.where(finite, x, 0)
        order = jnp.argsort(xs, axis=0, stable=True)
        srt = jnp.take_along_axis(xs, order, axis=0)
        outs.append(jnp.mean(srt[t : m - t], axis=0).astype(x.dtype))
        ranks = jnp.argsort(order, axis=0)
        kept = ((ranks >= t) & (ranks < m - t)).reshape(m, -1)
        counts = counts + jnp.sum(kept, axis=1).astype(wdtype)
        total += int(x[0].size)
    weights = counts / (max(total, 1) * keep)
    weights = jnp.where(finite, weights, 1.0 / m)
    return jax.tree_util.tree_unflatten(treedef, outs), weights, finite


@weighting_factory
def trimmed_mean(trim_number: int = 1, *, num_tasks: int | None = None) -> Weighting:
    """TrimmedMean as a Jacobian weighting (``needs="jacobian"``; TorchJD ``TrimmedMean``).

    ``update(jac, state, *, losses=None, preference=None, gram=None) -> (direction, state)``;
    ``state.weights`` are the effective weights (see :func:`trimmed_mean_direction`).

    Args:
      trim_number: ``t``, values removed at each end of every coordinate.
      num_tasks: optional fixed ``m``.
    """
    t = check_nonneg_int(trim_number, "trim_number")

    def init(num_tasks: int, dtype=jnp.float32, *, params=None) -> FieldState:
        del params  # not needed (the protocol passes it to Jacobian weightings)
        num_tasks = check_num_tasks(num_tasks)
        if num_tasks > 1 and num_tasks < 2 * t + 1:
            raise ValueError(
                f"TrimmedMean needs num_tasks >= 2*trim_number + 1 = {2 * t + 1}, got {num_tasks}."
            )
        return field_state(jnp.full((num_tasks,), 1.0 / num_tasks, dtype))

    def update(jac, state, *, losses=None, preference=None, gram=None):
        del losses, preference, gram
        if _rows(jac) != state.weights.shape[0]:
            raise ValueError(
                f"`jac` has m={_rows(jac)} rows but the state holds {state.weights.shape[0]}."
            )
        d, w, finite = trimmed_mean_direction(jac, t)
        w = w.astype(state.weights.dtype)
        return d, FieldState(w, pick_status(~finite, jnp.asarray(False)), finite, state.iterations)

    return Weighting(init, update, num_tasks, needs="jacobian")
