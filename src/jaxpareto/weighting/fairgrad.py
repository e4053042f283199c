"""FairGrad: α-fair resource allocation in multi-task learning (Ban & Ji, ICML 2024,
"Fair resource allocation in multi-task learning", Sec. 3, eq. 4 and Algorithm 1).

Treating the tasks' improvements ``⟨g_i, d⟩`` as utilities and maximising their α-fair
sum over a ball gives the update ``d = Gᵀ w`` whose weights ``w > 0`` solve

    C w = w^{−1/α}     (elementwise; ``C = G Gᵀ``),

i.e. ``⟨g_i, d⟩ = w_i^{−1/α}``. ``α = 1`` is Nash-MTL's bargaining system, ``α → ∞``
approaches the max–min fair (MGDA-like) solution, and ``α = 0`` is defined as the
uniform weights ``1/m`` (linear scalarization, Sec. 3).

Solver. The system is the stationarity condition of the strictly convex potential

    h(w) = ½ wᵀ C w − Σ_i φ(w_i),   φ'(w) = w^{−1/α}
           (φ = log for α = 1, else φ(w) = w^{1−1/α} / (1 − 1/α)),

with ``∇²h = C + diag(w^{−1/α−1}/α) ≻ 0`` on ``w > 0``. Newton steps with a
fraction-to-the-boundary rule (``w`` stays positive) and Armijo backtracking on ``h``
solve it; the Gramian is divided by its Frobenius norm first and the weights mapped
back (``w = s^{−α/(α+1)} w̃``), so the result is for the given gradients. ``max_iter``
caps the iterations (``jax.lax.while_loop``); ``converged`` means the scale-free
residual ``max_i |w_i^{1/α} (C w)_i − 1|`` is at most ``tol`` (default ``√ε``).

Peer: TorchJD 0.18 ``FairGrad`` (after the authors' code) solves the same system with
``scipy.optimize.least_squares`` from the uniform point, bounds ``w ≥ 0``; both give
the unique root when ``C`` is non-singular.

No root exists when some ``w ≥ 0, w ≠ 0`` has ``Gᵀw = 0`` and ``α ≥ 1`` (``h`` is then
unbounded below, as for Nash-MTL): ``converged`` is False, ``status = MAX_ITER`` and the
last finite iterate is returned. A non-finite or zero Gramian gives ``1/m`` with
``NONFINITE_INPUT`` / ``DEGENERATE``. One task (``m = 1``) gives the weight 1 (the update
is the gradient; ``residual`` 0, no system is solved), not the one-task root
``C^{−α/(α+1)}``.

Properties: permutation invariant; ``J → sJ`` gives ``w → s^{−2α/(α+1)} w`` (scale
degree ``−2α/(α+1)``; −1 at α = 1); non-conflicting at the root
(``⟨g_i, d⟩ = w_i^{−1/α} > 0``); not linear under task scaling.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_gram, working_dtype
from jaxpareto.weighting._field import FieldState, field_state, status_array
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    full_precision,
    pick_status,
    single_task,
    weighting_factory,
)

__all__ = ["FairGradResult", "fairgrad", "fairgrad_weights"]


class FairGradResult(NamedTuple):
    """Result of :func:`fairgrad_weights`.

    Attributes:
      weights: ``[m]`` ``w``.
      status: int32 ``[]`` ``SUCCESSFUL``, ``MAX_ITER`` (no root reached),
        ``DEGENERATE`` (zero Gramian) or ``NONFINITE_INPUT``.
      converged: bool ``[]`` residual ``≤ tol``.
      iterations: int32 ``[]`` Newton iterations.
      residual: ``[]`` ``max_i |w_i^{1/α} (C w)_i − 1|`` (0 when ``m = 1``: weight 1).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    residual: jax.Array


def _check(alpha, max_iter, tol):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not float(alpha) >= 0:
        raise ValueError(f"`alpha` must be a float >= 0, got {alpha!r}.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an int >= 1, got {max_iter!r}.")
    if tol is not None and not tol > 0:
        raise ValueError(f"`tol` must be positive, got {tol!r}.")
    return float(alpha), int(max_iter), tol


def fairgrad_weights(
    gram: jax.Array, alpha: float = 1.0, *, max_iter: int = 50, tol: float | None = None
) -> FairGradResult:
    """FairGrad weights: the root of ``C w = w^{−1/α}`` (Ban & Ji 2024, eq. 4).

    Args:
      gram: ``[m, m]`` Gramian (``m = 1``: the weight is 1).
      alpha: ``α ≥ 0`` (0: uniform weights).
      max_iter: Newton iteration cap.
      tol: residual tolerance (default ``√ε`` of the working dtype).
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    alpha, max_iter, tol = _check(alpha, max_iter, tol)
    return _fairgrad(jax.lax.stop_gradient(gram), alpha, max_iter, tol)


@functools.partial(jax.jit, static_argnames=("alpha", "max_iter", "tol"))
@full_precision
def _fairgrad(gram, alpha, max_iter, tol) -> FairGradResult:
    m = gram.shape[0]
    out = gram.dtype
    dtype = working_dtype(gram)
    c = gram.astype(dtype)
    finite = jnp.all(jnp.isfinite(c))
    c = jnp.where(finite, 0.5 * (c + c.T), jnp.eye(m, dtype=dtype))
    uniform = jnp.full((m,), 1.0 / m, dtype)
    if m == 1:
        # One task: the weight is 1, the update the gradient (not the root
        # C^{-α/(α+1)} of the one-task system, a positive multiple of it).
        ones, _ = single_task(c, dtype)
        return FairGradResult(
            weights=ones.astype(out),
            status=pick_status(nonfinite=~finite),
            converged=finite,
            iterations=jnp.zeros((), jnp.int32),
            residual=jnp.zeros((), out),
        )
    if alpha == 0:
        return FairGradResult(
            weights=uniform.astype(out),
            status=jnp.where(finite, status_array("SUCCESSFUL"), status_array("NONFINITE_INPUT")),
            converged=finite,
            iterations=jnp.zeros((), jnp.int32),
            residual=jnp.zeros((), out),
        )
    tol = float(np.sqrt(np.finfo(dtype).eps)) if tol is None else tol
    scale = jnp.sqrt(jnp.sum(c * c))
    zero = ~(jnp.max(jnp.diagonal(c)) > jnp.finfo(dtype).tiny)
    ct = c / jnp.where(zero, 1, scale)
    q = 1.0 / alpha

    def phi(w):
        return jnp.log(w) if alpha == 1 else w ** (1 - q) / (1 - q)

    def h(w):
        return 0.5 * w @ ct @ w - jnp.sum(phi(w))

    def residual(w):
        return jnp.max(jnp.abs(w**q * (ct @ w) - 1))

    # Start on the ray 1: (1ᵀC̃1/m) t = t^{−1/α}.
    row = jnp.sum(ct) / m
    t0 = jnp.where(row > 0, jnp.maximum(row, jnp.finfo(dtype).tiny) ** (-alpha / (alpha + 1)), 1)
    w0 = jnp.full((m,), 1.0, dtype) * t0
    ladder = 0.5 ** jnp.arange(30, dtype=dtype)

    def cond(k):
        w, it, done = k
        return ~done & (it < max_iter)

    def body(k):
        w, it, _ = k
        grad = ct @ w - w ** (-q)
        hess = ct + jnp.diag(q * w ** (-q - 1))
        step = jnp.linalg.solve(hess, grad)
        # fraction to the boundary: w − t·step > 0
        ratio = jnp.where(step > 0, w / jnp.where(step > 0, step, 1), jnp.inf)
        tmax = jnp.minimum(1.0, 0.99 * jnp.min(ratio))
        h0, slope = h(w), grad @ step
        trials = w[None, :] - (tmax * ladder)[:, None] * step[None, :]
        vals = jax.vmap(h)(jnp.maximum(trials, jnp.finfo(dtype).tiny))
        ok = (vals <= h0 - 1e-4 * tmax * ladder * slope) & jnp.all(trials > 0, axis=1)
        first = jnp.argmax(ok)
        new = jnp.where(jnp.any(ok), trials[first], w)
        new = jnp.where(jnp.all(jnp.isfinite(new)), new, w)
        done = (residual(new) <= tol) | ~jnp.any(ok)
        return new, it + 1, done

    w, it, _ = jax.lax.while_loop(cond, body, (w0, jnp.zeros((), jnp.int32), residual(w0) <= tol))
    res = residual(w)
    conv = finite & ~zero & (res <= tol)
    w = w * jnp.where(zero, 1, scale) ** (-alpha / (alpha + 1))
    bad = ~finite | zero | ~jnp.all(jnp.isfinite(w))
    w = jnp.where(bad, uniform, w)
    status = jnp.where(
        ~finite,
        status_array("NONFINITE_INPUT"),
        jnp.where(
            zero,
            status_array("DEGENERATE"),
            jnp.where(conv, status_array("SUCCESSFUL"), status_array("MAX_ITER")),
        ),
    )
    return FairGradResult(
        weights=w.astype(out),
        status=status,
        converged=conv,
        iterations=it,
        residual=res.astype(out),
    )


@weighting_factory
def fairgrad(
    alpha: float = 1.0,
    *,
    num_tasks: int | None = None,
    max_iter: int = 50,
    tol: float | None = None,
) -> Weighting:
    """FairGrad as a weighting (see the module docstring and :func:`fairgrad_weights`).

    Args:
      alpha: the fairness parameter ``α ≥ 0`` (the method's defining parameter; TorchJD
        requires it, the paper's experiments use values in ``[0.5, 10]``; default 1).
      num_tasks: optional fixed ``m``.
      max_iter: Newton iteration cap.
      tol: residual tolerance (default ``√ε``).
    """
    alpha, max_iter, tol = _check(alpha, max_iter, tol)

    def init(num_tasks: int, dtype=jnp.float32) -> FieldState:
        num_tasks = check_num_tasks(num_tasks)
        return field_state(jnp.full((num_tasks,), 1.0 / num_tasks, dtype))

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        res = fairgrad_weights(gram, alpha, max_iter=max_iter, tol=tol)
        w = res.weights.astype(state.weights.dtype)
        return w, FieldState(
            weights=w, status=res.status, converged=res.converged, iterations=res.iterations
        )

    return Weighting(init, update, num_tasks)
