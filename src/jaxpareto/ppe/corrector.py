"""Correctors: from a predicted point back to the Pareto set.

**Newton on the KKT system** (``method="kkt"``, the default of :func:`~jaxpareto.ppe.trace`).
The unknowns are ``z = (θ, α)``; the equations are

    F(θ, α) = Σ_i α_i ∇l_i(θ) = 0   (n),     1ᵀα = 1   (1),     c(θ, α) = 0   (m − 1),   (K)

where the ``m − 1`` conditions ``c`` pin the point on the ``(m−1)``-dimensional Pareto set
(Hillermeier 2001; Martín & Schütze 2018 use the same bordered system in "Pareto Tracer"):

* ``constraint="loss"``: ``c = Qᵀ(l(θ) − l̂)`` with ``Q`` an orthonormal basis of ``n^⊥``:
  the corrected losses differ from the prediction ``l̂`` only along the direction ``n``
  (``n = α̂``, the front's normal, for a free step: the correction is normal to the
  front; ``n = 1/r`` lands on the ray of a preference; ``n = α̂`` with a floored task's
  entry zeroed keeps that task at its floor);
* ``constraint="alpha"``: ``c = Pᵀ(α − α̂)``: the KKT weights are fixed, i.e. Newton on
  the weighted sum's stationarity ``Σ α̂_i ∇l_i = 0`` (used where a step ends on the
  boundary of the simplex, the end of the front).

One Newton step solves the linearisation of (K),

    H_α δθ + Jᵀ δα = −F,    1ᵀδα = 1 − 1ᵀα,    QᵀJ δθ = −c     (loss constraint),

by a **Schur complement in the m × m space** (our choice over GMRES on the bordered
``(n+m)``-system): ``m + 1`` matrix-free GMRES solves ``H_α u = F``, ``H_α W = Jᵀ`` with one
linearisation of ``∇(Σ α_i l_i)`` (the same Krylov machinery as the tangent; the solves
run batched), then ``δθ = −u − W δα`` with ``δα`` from the ``m × m`` system

    [QᵀS ; 1ᵀ] δα = [c − QᵀJu ; 1 − 1ᵀα],     S = J W = J H_α⁻¹ Jᵀ

(rows equilibrated, solved by a truncated SVD; with the α constraint simply
``δα = α̂ − α``). The Schur form keeps every Krylov solve symmetric and of size ``n``,
reuses the tangent's solves verbatim and gives ``S`` for free; it needs ``H_α``
invertible on the span of the right-hand sides (``damping`` regularises otherwise).

**Globalisation**: a backtracking (Armijo) line search on the scaled KKT residual

    φ(z) = ‖F‖² / G₀² + (1ᵀα − 1)² + ‖c‖² / L₀²,   G₀ = maxᵢ‖∇l_i‖,  L₀ = ‖l̂‖

(both at the corrector's start), accepting ``φ(z + tδz) ≤ (1 − 2·10⁻⁴ t) φ(z)``; the
step is also cut to the largest ``t`` keeping ``α + tδα ≥ 0``, so ``α`` never leaves
the simplex. **Convergence** is scale-free: ``‖F‖ ≤ rtol · maxᵢ‖∇l_i‖ (+ tol)`` and
``‖c‖ ≤ √rtol · L₀``; multiplying every loss by a constant leaves every Newton step
unchanged. Newton converges quadratically, so a few iterations per point suffice whatever
the conditioning (which only changes the Krylov iterations).

**First-order correctors** (options): ``"mgda"`` (min-norm common descent with Armijo on
every loss; Désidéri 2012; Sener & Koltun 2018) and ``"epo"`` (EPO search steps,
Mahapatra & Rajan 2020, eq. 24). They contract by about ``1 − 1/κ`` per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxpareto._validate import check_float, check_preference
from jaxpareto.jacobian import combine, gramian, value_and_jacobian
from jaxpareto.ppe._common import (
    COST_FORWARD,
    COST_GRADIENT,
    COST_HVP,
    Status,
    _all_finite,
    _check_eps,
    _check_int,
    _check_params,
    _check_scalar,
    _count_trace,
    _default,
    _num_tasks,
    _strong,
    _tree_norm,
    _with_batches,
)
from jaxpareto.ppe.krylov import _hessian_solves
from jaxpareto.ppe.tangent import _check_preconditioner
from jaxpareto.weighting.epo import epo_weights
from jaxpareto.weighting.min_norm import min_norm_weights

_CORRECTOR_METHODS = ("kkt", "mgda", "epo")
_CONSTRAINTS = ("loss", "alpha")
#: Default number of Newton iterations of the ``"kkt"`` corrector.
KKT_STEPS = 12


class CorrectorResult(NamedTuple):
    """Result of :func:`corrector`.

    Attributes:
      params: pytree, the last finite iterate.
      losses: ``[m]`` at ``params``.
      alpha: ``[m]`` KKT weights at ``params`` (Newton's ``α`` for ``"kkt"``; the
        min-norm weights for ``"mgda"``/``"epo"``), in the simplex.
      stationarity: ``[]`` ``‖Σ_i α_i ∇l_i‖₂`` (0 exactly at a Pareto-critical point;
        an upper bound of the min-norm value).
      steps: int32 ``[]`` corrector steps (Newton iterations) taken.
      converged: bool ``[]`` the method's tolerance was reached.
      degenerate: bool ``[]`` a non-finite value appeared; the iteration stopped at the
        last finite iterate (or the input, if that is not finite: then ``converged`` is
        False).
      cost: ``[]`` gradient-evaluation equivalents.
      status: int32 ``[]`` a :class:`Status`: ``CONVERGED``, ``NON_FINITE``,
        ``CORRECTOR_FAILED`` or ``GMRES_NOT_CONVERGED``.
      relative_stationarity: ``[]`` ``stationarity / maxᵢ‖∇l_i‖`` (scale-free).
      gmres_converged: bool ``[]`` every Krylov solve of the last Newton step reached
        its tolerance (True for the first-order methods).
      hvps: int32 ``[]`` Hessian-vector products used.
    """

    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    steps: jax.Array
    converged: jax.Array
    degenerate: jax.Array
    cost: jax.Array
    status: jax.Array
    relative_stationarity: jax.Array
    gmres_converged: jax.Array
    hvps: jax.Array


def _status(converged, degenerate, gmres_ok) -> jax.Array:
    return jnp.where(
        converged,
        Status.CONVERGED,
        jnp.where(
            degenerate,
            Status.NON_FINITE,
            jnp.where(gmres_ok, Status.CORRECTOR_FAILED, Status.GMRES_NOT_CONVERGED),
        ),
    ).astype(jnp.int32)


def _safe_ratio(a, b):
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1), jnp.where(a > 0, jnp.inf, 0))


# ----------------------------------------------------------------- first-order (MGDA, EPO)


class _CorrectorConfig(NamedTuple):
    method: str
    steps: int
    line_search: bool
    max_backtracks: int
    eps: float  # EPO's balance threshold (a static float for epo_weights)


class _Eval(NamedTuple):
    params: Any
    losses: jax.Array
    alpha: jax.Array
    direction: Any  # Σ β_i ∇l_i, like params
    slopes: jax.Array  # [m] ∇l_iᵀ direction = (Cβ)_i
    dnorm: jax.Array  # ‖direction‖
    stationarity: jax.Array  # ‖Σ α_i ∇l_i‖
    gscale: jax.Array  # maxᵢ ‖∇l_i‖
    finite: jax.Array


def _evaluate(loss_fn, params, args, method: str, preference, eps) -> _Eval:
    losses, jac = value_and_jacobian(loss_fn)(params, *args)
    dtype = losses.dtype
    gram = gramian(jac).astype(dtype)
    finite = _all_finite(losses, gram)
    safe_gram = jnp.where(finite, gram, 0)
    alpha = min_norm_weights(safe_gram).weights.astype(dtype)
    if method == "mgda":
        beta = alpha
    else:
        beta = epo_weights(safe_gram, jnp.where(finite, losses, 1), preference, eps=eps)
        beta = beta.weights.astype(dtype)
    slopes = safe_gram @ beta
    direction = combine(jac, beta)
    # Norms of the combined vectors, not sqrt(βᵀCβ): the Gramian form cancels
    # catastrophically near stationarity (its floor is about sqrt(eps)·‖∇l‖).
    dnorm = _tree_norm(direction)
    stat = dnorm if method == "mgda" else _tree_norm(combine(jac, alpha))
    gscale = jnp.sqrt(jnp.max(jnp.diagonal(safe_gram)))
    return _Eval(params, losses, alpha, direction, slopes, dnorm, stat, gscale, finite)


def _corrector_impl(
    loss_fn, params, args, preference, lr, tol, config: _CorrectorConfig, rtol=0.0, max_steps=None
) -> CorrectorResult:
    """MGDA / EPO steps; stops at ``‖Σβ_i∇l_i‖ ≤ max(tol, rtol · maxᵢ‖∇l_i‖)`` or after
    ``max_steps`` (traced, ≤ ``config.steps``) steps."""
    evaluate = functools.partial(
        _evaluate, loss_fn, args=args, method=config.method, preference=preference, eps=config.eps
    )
    e0 = evaluate(params)
    m = e0.losses.shape[0]
    dtype = e0.losses.dtype
    lr = jnp.asarray(lr, dtype)
    tol = jnp.asarray(tol, dtype)
    rtol = jnp.asarray(rtol, dtype)
    limit = jnp.asarray(config.steps if max_steps is None else max_steps, jnp.int32)
    armijo = 1e-4

    def thresh(e):
        return jnp.maximum(tol, rtol * e.gscale)

    def shifted(p, t, direction):
        def leaf(x, g):
            dt = jnp.result_type(x)
            return x - t.astype(dt) * g.astype(dt)

        return jax.tree_util.tree_map(leaf, p, direction)

    def backtrack(e):
        # Armijo on every loss: l_i(θ − t d) ≤ l_i(θ) − c t ∇l_iᵀd (d is a common descent
        # direction for the min-norm weights, so a small enough t always passes). Near
        # stationarity the decrease t ∇l_iᵀd ≈ t‖d‖² falls below the rounding of l_i
        # (‖d‖ ≲ sqrt(eps |l_i|)); without the slack the test would then fail at random.
        slack = 8 * jnp.finfo(dtype).eps * (jnp.abs(e.losses) + 1)

        def cond(c):
            t, j, ok = c
            return ~ok & (j < config.max_backtracks)

        def body(c):
            t, j, _ = c
            trial = loss_fn(shifted(e.params, t, e.direction), *args)
            ok = jnp.all(trial <= e.losses - armijo * t * e.slopes + slack)
            ok = ok & jnp.all(jnp.isfinite(trial))
            return jnp.where(ok, t, t / 2), j + 1, ok

        t, j, _ = jax.lax.while_loop(cond, body, (lr, jnp.int32(0), jnp.bool_(False)))
        return t, j

    def cond(c):
        e, k, _, bad = c
        return (e.dnorm > thresh(e)) & (k < limit) & ~bad

    def body(c):
        e, k, forwards, _ = c
        if config.line_search:
            t, j = backtrack(e)
        else:
            t, j = lr, jnp.int32(0)
        new = evaluate(shifted(e.params, t, e.direction))
        keep_new = new.finite
        e = jax.tree_util.tree_map(lambda a, b: jnp.where(keep_new, a, b), new, e)
        return e, k + 1, forwards + j, ~keep_new

    e, k, forwards, bad = jax.lax.while_loop(
        cond, body, (e0, jnp.int32(0), jnp.int32(0), ~e0.finite)
    )
    cost = (m * COST_GRADIENT * (k + 1) + COST_FORWARD * forwards).astype(dtype)
    converged = (e.dnorm <= thresh(e)) & e.finite
    stat = jnp.where(e.finite, e.stationarity, jnp.inf)
    return CorrectorResult(
        params=e.params,
        losses=e.losses,
        alpha=e.alpha,
        stationarity=stat,
        steps=k,
        converged=converged,
        degenerate=bad,
        cost=cost,
        status=_status(converged, bad, jnp.bool_(True)),
        relative_stationarity=_safe_ratio(stat, e.gscale).astype(dtype),
        gmres_converged=jnp.bool_(True),
        hvps=jnp.int32(0),
    )


# --------------------------------------------------------------------------- Newton (KKT)


class _KktConfig(NamedTuple):
    steps: int  # static cap on Newton iterations
    max_backtracks: int
    restart: int | None
    gmres_tol: float | None
    batched: bool
    probes: int = 0  # Hutchinson probes of the diagonal preconditioner (0: none)


class _KktEval(NamedTuple):
    params: Any
    losses: jax.Array
    alpha: jax.Array
    rows: jax.Array  # [m, n] gradients
    F: jax.Array  # [n] Σ α_i ∇l_i
    fnorm: jax.Array
    gscale: jax.Array  # maxᵢ ‖∇l_i‖
    c: jax.Array  # [m − 1] pinning residual (loss or α form)
    finite: jax.Array


def _complement_basis(normal: jax.Array) -> jax.Array:
    """Orthonormal ``[m, m−1]`` basis of ``normal^⊥`` (QR of ``[normal, I]``)."""
    m = normal.shape[0]
    nn = jnp.linalg.norm(normal)
    n_hat = jnp.where(nn > 0, normal / jnp.where(nn > 0, nn, 1), jnp.ones_like(normal) / m)
    q, _ = jnp.linalg.qr(jnp.concatenate([n_hat[:, None], jnp.eye(m, dtype=normal.dtype)], 1))
    return q[:, 1:]


def _min_norm_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """Least-squares, minimum-norm ``a x = b`` (truncated SVD at ``eps^(2/3) σ_max``)."""
    u, sv, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = sv > jnp.finfo(a.dtype).eps ** (2 / 3) * sv[0]
    inv = jnp.where(keep, 1 / jnp.where(keep, sv, 1), 0)
    return vt.T @ (inv * (u.T @ b))


def _clip_alpha(alpha, xi):
    """Largest ``σ ≥ 0`` keeping ``α + σ ξ ≥ 0`` (inf when no weight decreases)."""
    dec = xi < 0
    ratio = alpha / jnp.where(dec, -xi, 1)
    return jnp.min(jnp.where(dec, jnp.maximum(ratio, 0), jnp.inf))


def _kkt_impl(
    loss_fn,
    params,
    args,
    alpha0,
    l_hat,
    normal,
    fix_alpha,
    rtol,
    tol,
    damping,
    gmres_maxiter,
    config: _KktConfig,
    max_steps=None,
) -> CorrectorResult:
    """Damped Newton on (K) from ``(params, alpha0)`` (module docstring)."""
    hi = jax.lax.Precision.HIGHEST
    flat0, unravel = ravel_pytree(params)
    ftype = flat0.dtype

    def ravel_rows(jac):
        return jax.vmap(lambda t: ravel_pytree(t)[0])(jac).astype(ftype)

    losses_shape = jax.eval_shape(loss_fn, params, *args)
    m = losses_shape.shape[0]
    dtype = losses_shape.dtype
    alpha0 = jnp.maximum(alpha0.astype(dtype), 0)
    alpha0 = alpha0 / jnp.where(jnp.sum(alpha0) > 0, jnp.sum(alpha0), 1)
    alpha_hat = alpha0
    l_hat = l_hat.astype(dtype)
    q = _complement_basis(normal.astype(dtype))  # [m, m-1]
    p_basis = _complement_basis(jnp.ones((m,), dtype))  # ⊥ 1, for the α constraint
    limit = jnp.asarray(config.steps if max_steps is None else max_steps, jnp.int32)
    rtol = jnp.asarray(rtol, dtype)
    tol = jnp.asarray(tol, dtype)
    tiny = jnp.finfo(dtype).tiny

    def evaluate(flat, alpha) -> _KktEval:
        p = unravel(flat)
        losses, jac = value_and_jacobian(loss_fn)(p, *args)
        rows = ravel_rows(jac)
        F = jnp.matmul(alpha.astype(ftype), rows, precision=hi)
        c_loss = q.T @ (losses - l_hat)
        c_alpha = p_basis.T @ (alpha - alpha_hat)
        c = jnp.where(fix_alpha, c_alpha, c_loss)
        finite = _all_finite(losses, rows)
        return _KktEval(
            p,
            losses,
            alpha,
            rows,
            F,
            jnp.linalg.norm(F).astype(dtype),
            jnp.max(jnp.linalg.norm(rows, axis=1)).astype(dtype),
            c,
            finite,
        )

    e0 = evaluate(flat0, alpha0)
    g0 = jnp.where(e0.gscale > 0, e0.gscale, 1)
    l0 = jnp.maximum(jnp.linalg.norm(l_hat), jnp.linalg.norm(e0.losses))
    l0 = jnp.where(l0 > tiny, l0, 1)
    # The pinning residual's own scale: losses (loss form) or 1 (α form).
    c_scale = jnp.where(fix_alpha, 1, l0)
    sqrt_rtol = jnp.sqrt(rtol)

    def merit(e):
        g = jnp.sum(e.alpha) - 1
        return (e.fnorm / g0) ** 2 + g**2 + (jnp.linalg.norm(e.c) / c_scale) ** 2

    def done(e):
        f_ok = e.fnorm <= rtol * e.gscale + tol
        c_ok = jnp.linalg.norm(e.c) <= sqrt_rtol * c_scale
        return f_ok & c_ok & e.finite

    def newton_direction(e):
        flat = ravel_pytree(e.params)[0]
        rhs = jnp.concatenate([e.F[None], e.rows], 0)
        sol, extra = _hessian_solves(
            loss_fn,
            flat,
            unravel,
            e.alpha,
            args,
            rhs,
            damping,
            gmres_maxiter,
            config.restart,
            config.gmres_tol,
            config.batched,
            config.probes,
        )
        u, w = sol.x[0], sol.x[1:]
        s_mat = jnp.matmul(e.rows, w.T, precision=hi).astype(dtype)
        ju = jnp.matmul(e.rows, u, precision=hi).astype(dtype)
        top = q.T @ s_mat
        rhs_top = e.c - q.T @ ju
        scale = jnp.linalg.norm(top, axis=1)
        scale = jnp.where(scale > 0, scale, 1)
        a_mat = jnp.concatenate([top / scale[:, None], jnp.ones((1, m), dtype)], 0)
        b_vec = jnp.concatenate([rhs_top / scale, (1 - jnp.sum(e.alpha))[None]])
        dalpha_loss = _min_norm_solve(a_mat, b_vec)
        dalpha = jnp.where(fix_alpha, alpha_hat - e.alpha, dalpha_loss)
        dtheta = -u - jnp.matmul(dalpha.astype(ftype), w, precision=hi)
        its = sol.iterations
        hv = (jnp.max(its) * (m + 1) if config.batched else jnp.sum(its)) + extra
        return dtheta, dalpha, jnp.all(sol.converged), hv

    class Carry(NamedTuple):
        e: _KktEval
        k: jax.Array
        trials: jax.Array
        hvps: jax.Array
        failed: jax.Array
        gmres_ok: jax.Array
        bad: jax.Array  # failed on non-finite values only

    def cond(c: Carry):
        return ~done(c.e) & (c.k < limit) & ~c.failed

    def body(c: Carry):
        e = c.e
        dtheta, dalpha, gmres_ok, hv = newton_direction(e)
        step_ok = _all_finite(dtheta, dalpha)
        dtheta = jnp.where(step_ok, dtheta, 0)
        dalpha = jnp.where(step_ok, dalpha, 0)
        flat = ravel_pytree(e.params)[0]
        phi0 = merit(e)
        t0 = jnp.minimum(1.0, _clip_alpha(e.alpha, dalpha)).astype(dtype)

        def ls_cond(s):
            t, j, ok, _, _ = s
            return ~ok & (j < config.max_backtracks) & step_ok

        def ls_body(s):
            t, j, _, seen_finite, best = s
            a_new = jnp.maximum(e.alpha + t * dalpha, 0)
            trial = evaluate(flat + t.astype(ftype) * dtheta, a_new)
            ok = trial.finite & (merit(trial) <= (1 - 2e-4 * t) * phi0)
            best = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), trial, best)
            return jnp.where(ok, t, t / 2), j + 1, ok, seen_finite | trial.finite, best

        init = (t0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False), e)
        _, j, ok, seen_finite, new = jax.lax.while_loop(ls_cond, ls_body, init)
        bad = ~ok & (~step_ok | ~seen_finite)
        return Carry(new, c.k + 1, c.trials + j, c.hvps + hv, ~ok, gmres_ok, bad)

    c0 = Carry(
        e0, jnp.int32(0), jnp.int32(0), jnp.int32(0), ~e0.finite, jnp.bool_(True), ~e0.finite
    )
    out = jax.lax.while_loop(cond, body, c0)
    e = out.e
    converged = done(e)
    degenerate = out.bad & ~converged
    # one Jacobian per trial point and at the start; each HVP counts 2
    cost = (m * COST_GRADIENT * (1 + out.trials) + COST_HVP * out.hvps).astype(dtype)
    # NON_FINITE when the start or every trial point of the failing step was non-finite.
    stat = jnp.where(e.finite, e.fnorm, jnp.inf)
    return CorrectorResult(
        params=e.params,
        losses=e.losses,
        alpha=e.alpha,
        stationarity=stat,
        steps=out.k,
        converged=converged,
        degenerate=degenerate,
        cost=cost,
        status=_status(converged, degenerate, out.gmres_ok),
        relative_stationarity=_safe_ratio(stat, e.gscale).astype(dtype),
        gmres_converged=out.gmres_ok,
        hvps=out.hvps,
    )


def _kkt_start(
    loss_fn,
    params,
    args,
    alpha0,
    has_alpha0,
    warm_steps,
    warm_rtol,
    rtol,
    tol,
    damping,
    gmres_maxiter,
    kcfg: _KktConfig,
    max_steps=None,
) -> CorrectorResult:
    """Correct an arbitrary start: a few MGDA steps (every loss decreasing) until the
    relative stationarity is below ``warm_rtol``, then Newton with the loss constraint
    along the KKT weights (``alpha0`` when ``has_alpha0``, else the min-norm weights)."""
    mcfg = _CorrectorConfig("mgda", 200, True, 30, 1e-4)
    warm = _corrector_impl(
        loss_fn, params, args, None, 1.0, 0.0, mcfg, rtol=warm_rtol, max_steps=warm_steps
    )
    alpha = jnp.where(has_alpha0, alpha0.astype(warm.alpha.dtype), warm.alpha)
    res = _kkt_impl(
        loss_fn,
        warm.params,
        args,
        alpha,
        warm.losses,
        alpha,
        jnp.bool_(False),
        rtol,
        tol,
        damping,
        gmres_maxiter,
        kcfg,
        max_steps,
    )
    return res._replace(
        cost=res.cost + warm.cost,
        steps=res.steps + warm.steps,
        degenerate=res.degenerate | (warm.degenerate & ~res.converged),
    )


# ------------------------------------------------------------------------------- public


def corrector(
    loss_fn: Callable[..., jax.Array],
    params,
    *args,
    method: str = "mgda",
    preference=None,
    steps: int | None = None,
    lr=None,
    tol=None,
    line_search: bool = True,
    eps: float = 1e-4,
    alpha=None,
    target=None,
    normal=None,
    constraint: str = "loss",
    rtol=None,
    damping=0.0,
    gmres_maxiter: int = 100,
    gmres_tol: float | None = None,
    gmres_restart: int | None = None,
    batched: bool = True,
    batches=None,
    preconditioner: str | None = None,
    preconditioner_probes: int = 8,
) -> CorrectorResult:
    """Bring a (predicted) point back to the Pareto set.

    ``method="kkt"``: damped Newton on the KKT system (module docstring, eq. K) from
    ``(params, alpha)``, pinned by ``constraint``: ``"loss"`` keeps the losses on the
    line ``target + t·normal`` (defaults: ``target`` = the losses at ``params``,
    ``normal`` = ``alpha``), ``"alpha"`` fixes the KKT weights at ``alpha`` (Newton on
    the weighted sum). Without ``alpha`` the start is first brought near the set by
    MGDA steps (relative stationarity ≤ 10⁻³ or ``steps`` of them) and ``alpha`` is the
    min-norm weights there. Converged when ``‖Σα_i∇l_i‖ ≤ rtol · maxᵢ‖∇l_i‖ + tol``.

    ``method="mgda"``: ``θ ← θ − t Σ_i β_i ∇l_i`` with the min-norm weights
    ``β = argmin_{β∈Δ} ‖Σ β_i ∇l_i‖`` (Désidéri 2012; Sener & Koltun 2018, eq. 3). With
    ``line_search`` (default) ``t`` starts at ``lr`` and is halved until every loss
    satisfies Armijo's condition ``l_i(θ − t d) ≤ l_i(θ) − 10⁻⁴ t ∇l_iᵀd``, so every
    loss decreases monotonically and the limit dominates the start.

    ``method="epo"``: EPO search steps (Mahapatra & Rajan 2020, eq. 24) with fixed
    ``lr``: controlled ascent towards the ray ``r ⊙ l ∝ 1`` of ``preference``, then
    descent. EPO's balance test uses ``eps`` (a KL divergence), so the ray is reached
    only to ``μ ≤ eps``.

    The loop (``jax.lax.while_loop``) stops at the tolerance or after ``steps`` steps. A
    non-finite value stops it at the last finite iterate.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree start point.
      *args: data for ``loss_fn``.
      method: ``"kkt"``, ``"mgda"`` or ``"epo"``.
      preference: ``[m]`` positive, required by ``"epo"``.
      steps: maximum number of steps (static int ≥ 0); default 12 Newton iterations
        (``"kkt"``), 200 steps otherwise.
      lr: step size (initial step of the line search); default 1.0 for ``"mgda"``
        with line search, 0.1 otherwise (first-order methods only).
      tol: absolute target of ``‖Σ β_i ∇l_i‖₂``; default ``sqrt(eps_dtype)`` (1.5e-8
        float64, 3.5e-4 float32) for the first-order methods, 0 for ``"kkt"``.
      line_search: Armijo backtracking (``"mgda"`` only; EPO is not a descent method).
      eps: EPO's non-uniformity threshold.
      alpha, target, normal, constraint: ``"kkt"`` only (above).
      rtol: ``"kkt"``: relative tolerance (default 1e-10 float64, 1e-4 float32).
      damping, gmres_maxiter, gmres_tol, gmres_restart: ``"kkt"``: the Krylov solves,
        as in :func:`~jaxpareto.ppe.tangent`.
      batched, preconditioner, preconditioner_probes: ``"kkt"``: as in
        :func:`~jaxpareto.ppe.tangent`.
      batches: optional chunked data (every method), as in :func:`~jaxpareto.ppe.tangent`:
        every loss, gradient and HVP is the mean over the chunks.

    Returns:
      :class:`CorrectorResult`. Cost: MGDA/EPO one Jacobian per step plus one, and 0.5
      per line-search trial; Newton one Jacobian per trial point plus 2 per HVP. The
      computation is jitted (one compilation per ``loss_fn``, static options and shapes,
      so repeated eager calls do not recompile).
    """
    loss_fn, args = _with_batches(loss_fn, args, batches)
    params = _strong(params)
    args = _strong(args)
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    if method not in _CORRECTOR_METHODS:
        raise ValueError(f"`method` must be one of {_CORRECTOR_METHODS}, got {method!r}.")
    if method == "epo":
        preference = check_preference(preference, m).astype(dtype)
    steps = (KKT_STEPS if method == "kkt" else 200) if steps is None else steps
    steps = _check_int(steps, "steps", 0)
    if not isinstance(line_search, bool):
        raise TypeError(f"`line_search` must be a bool, got {type(line_search).__name__}.")
    _check_eps(eps)
    if method == "kkt":
        if constraint not in _CONSTRAINTS:
            raise ValueError(f"`constraint` must be one of {_CONSTRAINTS}, got {constraint!r}.")
        rtol = _default(rtol, dtype, 1e-10, 1e-4)
        _check_scalar(rtol, "rtol", nonnegative=True)
        tol = 0.0 if tol is None else tol
        _check_scalar(tol, "tol", nonnegative=True)
        _check_scalar(damping, "damping", nonnegative=True)
        _check_int(gmres_maxiter, "gmres_maxiter", 1)
        if gmres_restart is not None:
            _check_int(gmres_restart, "gmres_restart", 1)
        kcfg = _KktConfig(
            steps,
            30,
            gmres_restart,
            gmres_tol,
            batched,
            _check_preconditioner(preconditioner, preconditioner_probes),
        )
        if alpha is None:
            if target is not None or normal is not None or constraint != "loss":
                raise ValueError("`target`, `normal` and constraint='alpha' need `alpha`.")
            return _kkt_start_jit(
                loss_fn,
                params,
                args,
                jnp.zeros((m,), dtype),
                jnp.bool_(False),
                steps,
                1e-3,
                rtol,
                tol,
                damping,
                gmres_maxiter,
                kcfg=kcfg,
            )
        alpha = check_float(alpha, "alpha")
        if alpha.shape != (m,):
            raise ValueError(
                f"`alpha` must have shape ({m},) to match m={m} tasks, got {alpha.shape}."
            )
        if target is None:
            target = loss_fn(params, *args)
        target = check_float(target, "target")
        normal = alpha if normal is None else check_float(normal, "normal")
        for name, x in (("target", target), ("normal", normal)):
            if x.shape != (m,):
                raise ValueError(f"`{name}` must have shape ({m},), got {x.shape}.")
        return _kkt_jit(
            loss_fn,
            params,
            args,
            alpha,
            target.astype(dtype),
            normal.astype(dtype),
            jnp.asarray(constraint == "alpha"),
            rtol,
            tol,
            damping,
            gmres_maxiter,
            config=kcfg,
        )
    line_search = line_search and method == "mgda"
    lr = (1.0 if line_search else 0.1) if lr is None else lr
    _check_scalar(lr, "lr", positive=True)
    tol = _default(
        tol,
        dtype,
        float(np.sqrt(np.finfo(np.float64).eps)),
        float(np.sqrt(np.finfo(np.float32).eps)),
    )
    _check_scalar(tol, "tol", nonnegative=True)
    config = _CorrectorConfig(method, steps, line_search, 30, float(eps))
    return _first_order_jit(loss_fn, params, args, preference, lr, tol, config=config)


# Jitted entry points of :func:`corrector`, compiled once per (loss_fn, static options,
# shapes); the Python bodies run only while JAX traces them (``TRACE_COUNTS``).


def _kkt_entry(
    loss_fn,
    params,
    args,
    alpha0,
    l_hat,
    normal,
    fix_alpha,
    rtol,
    tol,
    damping,
    gmres_maxiter,
    config,
):
    _count_trace("corrector")
    return _kkt_impl(
        loss_fn,
        params,
        args,
        alpha0,
        l_hat,
        normal,
        fix_alpha,
        rtol,
        tol,
        damping,
        gmres_maxiter,
        config,
    )


def _kkt_start_entry(
    loss_fn,
    params,
    args,
    alpha0,
    has_alpha0,
    warm_steps,
    warm_rtol,
    rtol,
    tol,
    damping,
    gmres_maxiter,
    kcfg,
):
    _count_trace("corrector")
    return _kkt_start(
        loss_fn,
        params,
        args,
        alpha0,
        has_alpha0,
        warm_steps,
        warm_rtol,
        rtol,
        tol,
        damping,
        gmres_maxiter,
        kcfg,
    )


def _first_order_entry(loss_fn, params, args, preference, lr, tol, config):
    _count_trace("corrector")
    return _corrector_impl(loss_fn, params, args, preference, lr, tol, config)


_kkt_jit = jax.jit(_kkt_entry, static_argnames=("loss_fn", "config"))
_kkt_start_jit = jax.jit(_kkt_start_entry, static_argnames=("loss_fn", "kcfg"))
_first_order_jit = jax.jit(_first_order_entry, static_argnames=("loss_fn", "config"))
