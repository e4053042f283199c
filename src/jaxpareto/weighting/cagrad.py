"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021, Algorithm 1).

With the average gradient ``g_0 = (1/m) Σ_i g_i`` and ``c ≥ 0``, CAGrad takes the update

    d* = argmax_{‖d − g_0‖ ≤ c‖g_0‖}  min_i ⟨g_i, d⟩                       (eq. 4)

that maximizes the worst task's improvement in a ball around ``g_0``. Its dual (eq. 5)
is a problem over the simplex, with ``g_w = Σ_i w_i g_i`` and ``ρ = c‖g_0‖``:

    w* = argmin_{w ∈ Δ_m}  F(w) = ⟨g_w, g_0⟩ + ρ ‖g_w‖,      d* = g_0 + (ρ / ‖g_w*‖) g_w*.

So the task weights are ``1/m + (ρ / ‖g_w*‖) w*``. Everything is an inner product of the
gradients: ``⟨g_w, g_0⟩ = wᵀC1/m``, ``‖g_w‖² = wᵀCw``, ``‖g_0‖² = 1ᵀC1/m²``.

Solver. ``F`` is convex but not smooth where ``g_w = 0``. Write ``u = g_w`` in the convex
hull ``P`` of the gradients. The projection of ``−κ g_0`` onto ``P`` satisfies
``−(g_0 + u/κ) ∈ N_P(u)``, and the optimality condition of ``min_P ⟨g_0, u⟩ + ρ‖u‖`` is
``−(g_0 + ρ u/‖u‖) ∈ N_P(u)``: the solution is ``u(κ) = Proj_P(−κ g_0)`` at a root of

    ψ(κ) = ‖u(κ)‖ / ρ − κ,       κ ∈ (0, max_i ‖g_i‖ / ρ].

``u(κ)`` is the min-norm point of the translated hull ``{g_i + κ g_0}``, whose Gramian is
``M C M`` with ``M = I + (κ/m) 1 1ᵀ``: an exact min-norm solve
(:func:`jaxpareto.min_norm_weights`, active set). ``ψ(0) ≥ 0`` and ``ψ < 0`` at the
upper end, so bisection (to the dtype's precision, a static number of halvings) finds
the root; ``ψ`` has slope ≤ ``1/c − 1``, so for ``c > 1`` the root is unique. If no
positive root exists (``0 ∈ P`` and ``F ≥ 0``: a Pareto-stationary point), ``κ → 0`` and
``g_w → 0``.

Conventions (TorchJD ``CAGradWeighting`` and the authors' code). When
``‖g_w*‖ < norm_eps · Σ_i w*_i ‖g_i‖`` (``g_w*`` cancels at the level ``norm_eps`` of
the gradients it combines), or when ``d*`` itself is such a cancellation, the point is
treated as Pareto-stationary and the weights
are zero (TorchJD; the authors' code would divide by ``‖g_w‖ + 1e-8``); ``stationary``
is set. TorchJD compares ``‖g_w*‖`` with ``‖G‖_F`` of the trace-normalised Gramian
instead, which depends on the largest gradient: a task whose gradient is 1e-5 of
another's then gives a zero update although nothing conflicts; this test is scale-free.
The threshold is never below ``4 √(m ε)`` (``ε`` of the working dtype): a norm computed
from the Gramian cannot resolve a cancellation finer than that, and dividing by such a
rounding-level ``‖g_w*‖`` turned float32 noise into conflicting updates on weakly
stationary Jacobians (float64: ``4√(mε) ≈ 1e-7 · √m``, below the default ``norm_eps``).
``m = 1`` returns the weight 1 (the update is the gradient, whatever ``c``). ``rescale`` follows the
authors' code: ``0`` returns ``d*`` (the paper's Algorithm 1 and TorchJD), ``1``
divides by ``1 + c²`` (the authors' default), ``2`` by ``1 + c``.

Properties (``tests/test_weighting_properties.py``): permutation invariant; weights
unchanged when every gradient is multiplied by one positive factor; non-conflicting for
``c ≥ 1`` (then ``min_i ⟨g_i, d*⟩ = F(w*) ≥ ⟨g_w, g_0⟩ + ‖g_0‖‖g_w‖ ≥ 0``); ``c = 0`` is
the mean. Degeneracy: a non-finite Gramian gives ``1/m`` with ``status =
NONFINITE_INPUT``, a zero one ``1/m`` with ``status = DEGENERATE``; both set
``degenerate`` (and ``converged = False``). ``iterations`` counts the bisection halvings
(a static number; 0 when no search was needed).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, working_dtype
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    core_fields,
    full_precision,
    pick_status,
    single_task,
    state_from_result,
    weighting_factory,
)
from jaxpareto.weighting.min_norm import min_norm_weights

__all__ = ["CagradResult", "CagradState", "cagrad", "cagrad_weights"]


class CagradResult(NamedTuple):
    """Result of :func:`cagrad_weights`.

    Attributes:
      weights: ``[m]`` task weights of ``d*`` (after ``rescale``).
      status: int32 ``[]`` a :class:`jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT`` (non-finite Gramian) or ``DEGENERATE`` (zero Gramian).
      converged: bool ``[]`` ``status == SUCCESSFUL``.
      iterations: int32 ``[]`` bisection halvings on ``κ`` (0 when none were needed).
      dual_weights: ``[m]`` ``w*`` on the simplex (eq. 5).
      objective: ``[]`` ``F(w*) = min_i ⟨g_i, d*⟩`` before rescaling (strong duality).
      stationary: bool ``[]`` ``‖g_w*‖ < norm_eps ‖G‖_F``: zero weights returned.
      degenerate: bool ``[]`` non-finite or zero Gramian (weights ``1/m``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    dual_weights: jax.Array
    objective: jax.Array
    stationary: jax.Array
    degenerate: jax.Array


def _check_options(c, rescale, norm_eps):
    if isinstance(c, bool) or not isinstance(c, numbers.Real) or not (0 <= float(c) < math.inf):
        raise ValueError(f"`c` must be a finite float >= 0, got {c!r}.")
    if rescale not in (0, 1, 2) or isinstance(rescale, bool):
        raise ValueError(f"`rescale` must be 0, 1 or 2, got {rescale!r}.")
    if (
        isinstance(norm_eps, bool)
        or not isinstance(norm_eps, numbers.Real)
        or not float(norm_eps) >= 0
    ):
        raise ValueError(f"`norm_eps` must be a float >= 0, got {norm_eps!r}.")
    return float(c), int(rescale), float(norm_eps)


def _projection_weights(c: jax.Array, kappa: jax.Array, init: jax.Array) -> jax.Array:
    """Weights of ``Proj_P(−κ g_0)``: min-norm point of ``{g_i + κ g_0}``, warm-started
    from ``init`` (the previous κ's weights: neighbouring κ share their support)."""
    m = c.shape[0]
    shift = jnp.eye(m, dtype=c.dtype) + (kappa / m) * jnp.ones((m, m), c.dtype)
    return min_norm_weights(shift @ c @ shift, init=init).weights


@full_precision
def cagrad_weights(
    gram: jax.Array,
    c: float = 0.5,
    *,
    rescale: int = 0,
    norm_eps: float = 1e-4,
) -> CagradResult:
    """CAGrad weights (Liu et al. 2021, eq. 4–5) from the Gramian.

    Args:
      gram: ``[m, m]`` task Gramian, ``m ≥ 2``.
      c: radius factor ``c ≥ 0`` of the ball ``‖d − g_0‖ ≤ c‖g_0‖`` (a Python float,
        passed to the compiled solver as data: changing it does not recompile).
      rescale: ``0`` (paper, TorchJD), ``1`` (÷(1+c²), authors' default), ``2`` (÷(1+c)).
      norm_eps: stationarity threshold on ``‖g_w*‖ / ‖G‖_F`` (TorchJD's ``norm_eps``).

    Returns:
      :class:`CagradResult`; float fields in the dtype of ``gram``.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    c, rescale, norm_eps = _check_options(c, rescale, norm_eps)
    divisor = (1.0, 1.0 + c * c, 1.0 + c)[rescale]
    dtype = working_dtype(gram)
    options = jnp.asarray([c, divisor, norm_eps], dtype)
    return _cagrad(jax.lax.stop_gradient(gram), options)


# Jitted so that eager calls reuse one compiled program per shape; the options are data
# (c, rescale divisor, norm_eps), so changing them does not recompile.
@jax.jit
@full_precision
def _cagrad(gram, options) -> CagradResult:
    c, divisor, norm_eps = options[0], options[1], options[2]
    m = gram.shape[0]
    out_dtype = gram.dtype
    dtype = working_dtype(gram)
    if m == 1:
        w1, finite1 = single_task(gram, dtype)
        obj = jnp.where(finite1, gram[0, 0].astype(dtype), 0)
        status1 = pick_status(nonfinite=~finite1)
        return CagradResult(
            weights=w1.astype(out_dtype),
            status=status1,
            converged=finite1,
            iterations=jnp.zeros((), jnp.int32),
            dual_weights=w1.astype(out_dtype),
            objective=obj.astype(out_dtype),
            stationary=jnp.asarray(False),
            degenerate=~finite1,
        )
    cm = gram.astype(dtype)
    cm = 0.5 * (cm + cm.T)
    finite = jnp.all(jnp.isfinite(cm))
    tiny = jnp.finfo(dtype).tiny
    scale = jnp.max(jnp.diagonal(jnp.where(finite, cm, 0)))
    usable = finite & (scale > tiny)
    # Weights are invariant to a common scale of the gradients: work with max ‖g_i‖ = 1.
    cs = jnp.where(usable, cm / jnp.where(usable, scale, 1), jnp.eye(m, dtype=dtype))
    mean = jnp.full((m,), 1.0 / m, dtype)
    g0_norm = jnp.sqrt(jnp.maximum(mean @ cs @ mean, 0))
    rho = c * g0_norm
    active = usable & (rho > jnp.sqrt(tiny))
    safe_rho = jnp.where(active, rho, 1)

    def halve(_, carry):
        lo, hi, prev = carry
        mid = 0.5 * (lo + hi)
        w = _projection_weights(cs, mid, prev)
        pos = jnp.sqrt(jnp.maximum(w @ cs @ w, 0)) > safe_rho * mid
        return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid), w

    # max_i ‖g_i‖ = 1 here, so ψ(1/ρ) ≤ 0. Enough halvings to reach the dtype's precision.
    steps = int(math.ceil(-math.log2(float(jnp.finfo(dtype).eps)))) + 2
    _, hi, last = jax.lax.fori_loop(0, steps, halve, (jnp.zeros((), dtype), 1 / safe_rho, mean))
    w = jnp.where(active, _projection_weights(cs, hi, last), mean)
    gw_norm = jnp.sqrt(jnp.maximum(w @ cs @ w, 0))
    # Scale-free stationarity: g_w is a cancellation at the level norm_eps of the
    # gradients it combines (‖g_w‖ ≤ Σ w_i ‖g_i‖ always), not merely short next to the
    # largest gradient.
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(cs), 0))
    # A norm computed from the Gramian, √(wᵀCw), cannot resolve a cancellation below
    # √(m ε) Σ |w_i| ‖g_i‖ (the rounding of the quadratic form is m ε (Σ|w_i|‖g_i‖)²):
    # below that, λ = ρ/‖g_w‖ would magnify rounding noise into a conflicting update
    # (float32 on weakly stationary Jacobians). The threshold is never below that floor.
    eps_floor = 4.0 * math.sqrt(m * float(jnp.finfo(dtype).eps))
    norm_eps = jnp.maximum(norm_eps, eps_floor)
    lam = safe_rho / jnp.where(gw_norm > 0, gw_norm, 1)
    weights = jnp.where(active, mean + lam * w, mean)
    # The same test on the update d* itself: at a stationary point where the ball
    # touches 0 (e.g. c = 1 with collinear opposed gradients) every root of ψ gives
    # d* = g_0 − g_0, a cancellation left as rounding noise magnified by λ.
    d_norm = jnp.sqrt(jnp.maximum(weights @ cs @ weights, 0))
    stationary = active & (
        (gw_norm < norm_eps * (w @ norms)) | (d_norm < norm_eps * (jnp.abs(weights) @ norms))
    )
    weights = jnp.where(stationary, 0, weights)
    # At a stationary point the zero update attains the optimal value F* = F(0) = 0.
    objective = jnp.where(active, w @ cs @ mean + rho * gw_norm, mean @ cs @ mean) * scale
    objective = jnp.where(stationary, 0, objective)
    weights = weights / divisor
    ok = usable & jnp.all(jnp.isfinite(weights))
    weights = jnp.where(ok, weights, mean)
    status = pick_status(nonfinite=~finite, degenerate=~ok)
    return CagradResult(
        weights=weights.astype(out_dtype),
        status=status,
        converged=ok,
        iterations=jnp.where(active & ok, steps, 0).astype(jnp.int32),
        dual_weights=jnp.where(ok, w, mean).astype(out_dtype),
        objective=jnp.where(ok, objective, 0).astype(out_dtype),
        stationary=stationary & ok,
        degenerate=~ok,
    )


class CagradState(NamedTuple):
    """State of :func:`cagrad`.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``).
      status: int32 ``[]`` status of the last update (:class:`CagradResult`).
      converged: bool ``[]`` the last update succeeded.
      iterations: int32 ``[]`` bisection halvings of the last update.
      objective: ``[]`` ``F(w*)`` of the last update.
      stationary: bool ``[]`` the last update was a Pareto-stationary point.
      degenerate: bool ``[]`` the last Gramian was non-finite or zero.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    objective: jax.Array
    stationary: jax.Array
    degenerate: jax.Array


@weighting_factory
def cagrad(c: float = 0.5, *, rescale: int = 0, norm_eps: float = 1e-4) -> Weighting:
    """CAGrad as a weighting (see :func:`cagrad_weights`); ``losses`` and ``preference``
    are ignored by ``update``."""
    c, rescale, norm_eps = _check_options(c, rescale, norm_eps)

    def init(num_tasks: int, dtype=jnp.float32) -> CagradState:
        num_tasks = check_num_tasks(num_tasks)
        return CagradState(
            **core_fields(num_tasks, dtype),
            objective=jnp.zeros((), dtype),
            stationary=jnp.asarray(False),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        res = cagrad_weights(gram, c, rescale=rescale, norm_eps=norm_eps)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(CagradState, res, state)

    return Weighting(init, update)
