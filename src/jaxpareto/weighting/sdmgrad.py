"""SDMGrad: stochastic direction-oriented multi-objective gradient descent (Xiao et al.,
NeurIPS 2023, "Direction-oriented multi-objective learning: simple and provable
stochastic algorithms", Algorithm 1, eq. 7).

The weights solve, approximately and warm-started from the previous step, the
direction-oriented problem over the simplex ``Δ``

    min_{w ∈ Δ}  ½ ‖Gᵀ(w + λ w̃)‖²,

by ``T`` projected SGD steps with momentum ``μ`` on the gradient ``A (w + λ w̃)``
(``A = C / s²``, ``s`` the mean gradient norm ``mean_i √C_ii``, as in the authors'
code); the update is ``d = Gᵀ (w + λ w̃) / (1 + λ)``. ``w̃`` is the preference (default
``1/m``: the target direction is the average gradient); ``λ = 0`` is a few steps of
MGDA, ``λ → ∞`` the linear scalarization.

The paper's stochastic form feeds ``A = J_ξ J_ξ'ᵀ`` from two independent batches (not
symmetric); :func:`sdmgrad_weights` accepts any square ``A`` for that use, and the
weighting uses the Gramian of one batch (the deterministic variant).

Peer: TorchJD 0.18 ``SDMGradWeighting`` (defaults ``lr = 10``, ``momentum = 0.5``,
``n_iter = 20``, ``λ = 0.3``, from the authors' experiments and LibMTL); the simplex
iterate ``w`` lives in the state. Euclidean projection onto the simplex by sorting
(Held et al. 1974; Duchi et al. 2008).

Properties: permutation invariant; scale free up to the ``1e-8`` added to ``s²`` (as in
TorchJD and the authors' code); not non-conflicting, not linear under task scaling.

Bad input: a non-finite matrix gives ``(1/m + λ w̃)/(1 + λ)`` with
``status = NONFINITE_INPUT`` and leaves the iterate unchanged; a zero one keeps the
iterate (``A = 0``: no gradient), ``DEGENERATE``.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_preference, working_dtype
from jaxpareto.weighting._field import pick_status
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    factory_preference,
    full_precision,
    weighting_factory,
)

__all__ = ["SdmGradResult", "SdmGradState", "project_simplex", "sdmgrad", "sdmgrad_weights"]


def project_simplex(y: jax.Array) -> jax.Array:
    """Euclidean projection of ``y`` ``[m]`` onto the probability simplex (sort based)."""
    m = y.shape[0]
    u = jnp.sort(y)[::-1]
    css = jnp.cumsum(u)
    k = jnp.arange(1, m + 1, dtype=y.dtype)
    cond = u - (css - 1) / k > 0
    rho = jnp.max(jnp.where(cond, jnp.arange(m), 0))
    theta = (css[rho] - 1) / (rho + 1).astype(y.dtype)
    return jnp.maximum(y - theta, 0)


class SdmGradResult(NamedTuple):
    """Result of :func:`sdmgrad_weights`.

    Attributes:
      weights: ``[m]`` ``(w + λ w̃) / (1 + λ)``.
      status: int32 ``[]`` ``SUCCESSFUL``, ``DEGENERATE`` or ``NONFINITE_INPUT``.
      converged: bool ``[]`` the input was usable (a fixed number of steps is run).
      iterations: int32 ``[]`` inner SGD steps.
      iterate: ``[m]`` the simplex iterate ``w`` (warm start of the next call).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    iterate: jax.Array


def _check(lam, lr, momentum, max_iter):
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not float(lam) >= 0:
        raise ValueError(f"`lam` must be a float >= 0, got {lam!r}.")
    if not lr > 0:
        raise ValueError(f"`lr` must be positive, got {lr!r}.")
    if not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an int >= 1, got {max_iter!r}.")
    return float(lam), float(lr), float(momentum), int(max_iter)


def sdmgrad_weights(
    matrix: jax.Array,
    iterate: jax.Array | None = None,
    preference: jax.Array | None = None,
    *,
    lam: float = 0.3,
    lr: float = 10.0,
    momentum: float = 0.5,
    max_iter: int = 20,
) -> SdmGradResult:
    """One SDMGrad weight update (Xiao et al. 2023, Alg. 1).

    Args:
      matrix: ``[m, m]`` the Gramian (or ``J_ξ J_ξ'ᵀ`` of two independent batches).
      iterate: ``[m]`` the previous simplex iterate (default ``1/m``).
      preference: ``[m]`` positive ``w̃`` (normalised to the simplex; default ``1/m``).
      lam: ``λ ≥ 0``; lr, momentum, max_iter: the inner SGD (TorchJD's defaults).
    """
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"`gram` (matrix) must be square [m, m], got shape {matrix.shape}.")
    if not jnp.issubdtype(matrix.dtype, jnp.floating):
        raise TypeError(f"`gram` (matrix) must have a floating dtype, got {matrix.dtype}.")
    m = matrix.shape[0]
    lam, lr, momentum, max_iter = _check(lam, lr, momentum, max_iter)
    if iterate is None:
        iterate = jnp.full((m,), 1.0 / m, matrix.dtype)
    if preference is None:
        wt = jnp.full((m,), 1.0 / m, matrix.dtype)
    else:
        wt = check_preference(preference, m).astype(matrix.dtype)
        wt = wt / jnp.sum(wt)
    return _sdmgrad(jax.lax.stop_gradient(matrix), iterate, wt, lam, lr, momentum, max_iter)


@functools.partial(jax.jit, static_argnames=("max_iter",))
@full_precision
def _sdmgrad(a, w0, wt, lam, lr, momentum, max_iter) -> SdmGradResult:
    m = a.shape[0]
    out = a.dtype
    dtype = working_dtype(a)
    a = a.astype(dtype)
    wt = wt.astype(dtype)
    w_in = w0.astype(dtype)
    finite = jnp.all(jnp.isfinite(a)) & jnp.all(jnp.isfinite(w_in)) & jnp.all(jnp.isfinite(wt))
    a = jnp.where(finite, a, 0)
    w_start = jnp.where(finite, w_in, 1.0 / m)
    scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(a), 0)))
    zero = ~(scale > 0)
    an = a / (scale**2 + 1e-8)

    def step(k, carry):
        w, v = carry
        grad = an @ (w + lam * wt)
        v = jnp.where(k == 0, grad, momentum * v + grad)
        return project_simplex(w - lr * v), v

    w, _ = jax.lax.fori_loop(0, max_iter, step, (w_start, jnp.zeros((m,), dtype)))
    w = jnp.where(finite, w, w_start)
    weights = (w + lam * wt) / (1 + lam)
    return SdmGradResult(
        weights=weights.astype(out),
        status=pick_status(~finite, zero & finite),
        converged=finite,
        iterations=jnp.asarray(max_iter, jnp.int32),
        iterate=jnp.where(finite, w, w_in).astype(out),
    )


class SdmGradState(NamedTuple):
    """State of :func:`sdmgrad`.

    Attributes:
      weights: ``[m]`` last weights ``(w + λ w̃)/(1 + λ)``.
      status: int32 ``[]`` status of the last update.
      converged: bool ``[]`` the last input was usable.
      iterations: int32 ``[]`` inner steps of the last update.
      iterate: ``[m]`` the simplex iterate ``w`` (``1/m`` after ``init``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    iterate: jax.Array


@weighting_factory
def sdmgrad(
    lam: float = 0.3,
    *,
    num_tasks: int | None = None,
    preference: jax.Array | None = None,
    lr: float = 10.0,
    momentum: float = 0.5,
    max_iter: int = 20,
) -> Weighting:
    """SDMGrad as a weighting (see the module docstring and :func:`sdmgrad_weights`).

    Args:
      lam: ``λ``, the pull towards the preference direction (TorchJD/LibMTL: 0.3).
      num_tasks: optional fixed ``m``.
      preference: ``[m]`` ``w̃`` (default ``1/m``); a run-time ``preference=`` overrides.
      lr, momentum, max_iter: the inner projected SGD.
    """
    lam, lr, momentum, max_iter = _check(lam, lr, momentum, max_iter)
    default = factory_preference(preference)
    fixed = num_tasks if default is None else default.shape[0]

    def init(num_tasks: int, dtype=jnp.float32) -> SdmGradState:
        num_tasks = check_num_tasks(num_tasks)
        u = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
        return SdmGradState(
            u,
            pick_status(jnp.asarray(False), jnp.asarray(False)),
            jnp.asarray(True),
            jnp.zeros((), jnp.int32),
            u,
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses
        check_state_matches(gram, state)
        r = default if preference is None else preference
        res = sdmgrad_weights(
            gram, state.iterate, r, lam=lam, lr=lr, momentum=momentum, max_iter=max_iter
        )
        w = res.weights.astype(state.weights.dtype)
        return w, SdmGradState(
            w, res.status, res.converged, res.iterations, res.iterate.astype(state.iterate.dtype)
        )

    return Weighting(init, update, fixed)
