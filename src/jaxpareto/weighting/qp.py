"""A jittable, vmappable, differentiable dense QP solver for bound and simplex constraints.

Solves, for a symmetric positive semi-definite ``Q`` (``[m, m]``, possibly singular),

    min_x  ½ xᵀQx + cᵀx   s.t.  lower ≤ x ≤ upper,   (optionally)  1ᵀx = total,

with ``lower_i ∈ [−∞, ∞)`` and ``upper_i ∈ (−∞, ∞]``: non-negativity (``lower = 0``),
lower bounds (``x ≥ u``: the dual-cone projections of UPGrad / DualProj), boxes, and the
simplex (``lower = 0, total = 1``: the min-norm problem). All shapes are static and
nothing is decided on the host, so a batch of QPs is one ``jax.vmap`` (e.g. all ``m``
rows of UPGrad: :func:`project_dual_cone`).

KKT conditions (``g = Qx + c + y 1``, ``y`` the multiplier of the equality):
``lower ≤ x ≤ upper``, ``1ᵀx = total``; ``g_i ≥ 0`` where only the lower bound is finite,
``g_i ≤ 0`` where only the upper bound is, ``g_i = 0`` where neither is; and
``g_i (x_i − lower_i) = 0`` for ``g_i > 0``, ``g_i (upper_i − x_i) = 0`` for ``g_i < 0``.
The multipliers are ``dual_lower = (g)_+``, ``dual_upper = (−g)_+`` on bounded entries.

Method (two stages, both in one jitted program):

1. A primal-dual interior-point method (Mehrotra predictor-corrector) on the scaled
   problem ``Q / s, c / s`` with ``s = max(max_i Q_ii, ‖c‖_∞)``: each iteration factors
   ``Q + diag(z_l / (x − l) + z_u / (u − x)) + δI`` (Cholesky, ``δ = 64 m ε``, which
   keeps singular ``Q`` factorizable) and eliminates the equality by a Schur complement.
   It needs 10–30 iterations whatever the active set, so batches of QPs finish together
   (an active-set method would take up to ``m`` pivots on its slowest member).
2. Polishing by a primal-dual active-set (semismooth Newton; Hintermüller, Ito &
   Kunisch 2003) iteration started from the interior point: the active set
   ``{i : g_i > x_i − l_i}`` (lower) / ``{i : −g_i > u_i − x_i}`` (upper) is fixed at the
   bounds and the equality-constrained QP on the free set is solved exactly (regularised
   Cholesky with two steps of iterative refinement against the unregularised matrix, so
   singular free blocks — rank-deficient Gramians — still give an exact minimiser). It
   stops once the KKT residual is below ``tol`` and keeps the best point seen. From a
   near-optimal point it needs one or two steps.

KKT residual (scale-free; :func:`qp_kkt_residual`): with ``s`` as above, ``ĝ = g / s``
and ``X = max(1, ‖x‖_∞)``::

    kkt = max( max_i dual-sign violation of ĝ_i,                 # dual feasibility
               max_i min((ĝ_i)_+, |x_i − l_i| / X),                 # complementarity
               max_i min((−ĝ_i)_+, |u_i − x_i| / X),                #   (the min-map)
               bound violation / X,  |1ᵀx − total| / X )          # primal feasibility

Degenerate input (never an exception at run time, never NaN): non-finite ``Q`` or ``c``
→ a feasible fallback point (``clip(0, lower, upper)``, shifted towards ``1ᵀx = total``)
with ``status = NUMERICAL_ERROR``; infeasible bounds (``lower > upper`` or ``total``
outside ``[Σ lower, Σ upper]``) → the same point with ``INFEASIBLE``; ``Q = 0, c = 0``
→ that point, ``OPTIMAL`` (every feasible point is optimal). ``degenerate`` flags all of
these and a negative diagonal entry of ``Q`` (not PSD: solved anyway). A problem that is
unbounded below (``c`` with a component along a free direction of ``Q``) cannot converge
and ends with ``MAX_ITER``; the problems of this library never are.

Differentiation: ``x`` carries the implicit derivative of the KKT system on the final
active set (:mod:`jaxpareto.weighting.implicit`) w.r.t. ``quad``, ``linear``, ``lower``,
``upper`` and ``total``: with ``F`` the free set, fixed entries follow their bound and
``[Q_FF 1_F; 1_Fᵀ 0] [dx_F; dy] = −[dQ_F· x + dc_F + Q_FA dx_A; 1_Aᵀdx_A − d total]``.
Where ``Q_FF`` is singular (non-unique minimiser) this is the minimum-norm generalised
derivative; at a weakly active bound (``x_i = l_i`` and ``g_i = 0``) it is one-sided.
``objective`` is differentiable through ``x``; the other fields are constants.
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_float, is_concrete, working_dtype
from jaxpareto.weighting.base import full_precision
from jaxpareto.weighting.implicit import attach
from jaxpareto.weighting.lp import INFEASIBLE, MAX_ITER, NUMERICAL_ERROR, OPTIMAL

__all__ = [
    "QPResult",
    "solve_qp",
    "project_dual_cone",
    "qp_kkt_residual",
    "OPTIMAL",
    "INFEASIBLE",
    "MAX_ITER",
    "NUMERICAL_ERROR",
]


class QPResult(NamedTuple):
    """Result of :func:`solve_qp` (batched under ``vmap``: a leading axis on every field).

    Attributes:
      x: ``[m]`` the minimiser (differentiable, see the module docstring).
      dual_lower: ``[m]`` multipliers of ``x ≥ lower`` (≥ 0; 0 where unbounded).
      dual_upper: ``[m]`` multipliers of ``x ≤ upper``.
      dual_eq: ``[]`` multiplier ``y`` of ``1ᵀx = total`` (0 without the equality).
      objective: ``[]`` ``½ xᵀQx + cᵀx``.
      iterations: int32 ``[]`` interior-point iterations.
      polish_iterations: int32 ``[]`` active-set polishing steps.
      status: int32 ``[]`` ``OPTIMAL`` (KKT residual ≤ tol), ``INFEASIBLE``,
        ``MAX_ITER`` (not converged), ``NUMERICAL_ERROR`` (non-finite input).
      converged: bool ``[]`` ``status == OPTIMAL``.
      kkt_residual: ``[]`` the scale-free KKT residual (module docstring).
      degenerate: bool ``[]`` non-finite, infeasible or non-PSD-diagonal input, or a
        zero problem.
    """

    x: jax.Array
    dual_lower: jax.Array
    dual_upper: jax.Array
    dual_eq: jax.Array
    objective: jax.Array
    iterations: jax.Array
    polish_iterations: jax.Array
    status: jax.Array
    converged: jax.Array
    kkt_residual: jax.Array
    degenerate: jax.Array


# ------------------------------------------------------------------------- validation


def _check_bound(bound, m, name, dtype, fill):
    if bound is None:
        return jnp.full((m,), fill, dtype)
    b = jnp.asarray(bound)
    if jnp.issubdtype(b.dtype, jnp.bool_) or not (
        jnp.issubdtype(b.dtype, jnp.floating) or jnp.issubdtype(b.dtype, jnp.integer)
    ):
        raise TypeError(f"`{name}` must be a float vector, got dtype {b.dtype}.")
    if b.ndim == 0:
        b = jnp.broadcast_to(b, (m,))
    if b.shape != (m,):
        raise ValueError(f"`{name}` must have shape ({m},) (or be a scalar), got {b.shape}.")
    if is_concrete(b) and np.any(np.isnan(np.asarray(b, dtype=float))):
        raise ValueError(f"`{name}` must not contain NaN.")
    return b.astype(dtype)


def _check_options(max_iter, tol, polish_iter):
    for name, val in (("max_iter", max_iter), ("polish_iter", polish_iter)):
        if val is not None and (
            isinstance(val, bool)
            or not isinstance(val, numbers.Integral)
            or val < 0
            or (name == "max_iter" and val < 1)
        ):
            raise ValueError(
                f"`{name}` must be a static int (>= 1 for max_iter, >= 0 for "
                f"polish_iter), got {val!r}."
            )
    if tol is not None and (
        isinstance(tol, bool)
        or not isinstance(tol, numbers.Real)
        or not 0 < float(tol) < float("inf")
    ):
        raise ValueError(f"`tol` must be a static positive finite float, got {tol!r}.")


def _validate(quad, linear, lower, upper, total):
    quad = check_float(quad, "quad")
    if quad.ndim != 2 or quad.shape[0] != quad.shape[1] or quad.shape[0] < 1:
        raise ValueError(f"`quad` must be a square [m, m] matrix with m >= 1, got {quad.shape}.")
    m = quad.shape[0]
    if linear is None:
        linear = jnp.zeros((m,), quad.dtype)
    linear = check_float(linear, "linear")
    if linear.shape != (m,):
        raise ValueError(f"`linear` must have shape ({m},) to match `quad`, got {linear.shape}.")
    # The data (quad, linear) set the dtype; bounds are cast to it.
    dtype = jnp.result_type(quad, linear)
    lower = _check_bound(lower, m, "lower", dtype, -jnp.inf)
    upper = _check_bound(upper, m, "upper", dtype, jnp.inf)
    if is_concrete(lower) and is_concrete(upper):
        lo, hi = np.asarray(lower, float), np.asarray(upper, float)
        if np.any(lo > hi):
            raise ValueError(f"`lower` must be <= `upper` entrywise, got {lo} > {hi}.")
        if np.any(lo == np.inf) or np.any(hi == -np.inf):
            raise ValueError("`lower` must be < +inf and `upper` > -inf.")
    if total is not None:
        t = jnp.asarray(total)
        if (
            t.ndim != 0
            or not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer))
            or jnp.issubdtype(t.dtype, jnp.bool_)
        ):
            raise TypeError(f"`total` must be a real scalar or None, got {total!r}.")
        if is_concrete(t) and not np.isfinite(float(t)):
            raise ValueError(f"`total` must be finite, got {total!r}.")
        total = t.astype(dtype)
    return quad, linear, lower, upper, total


# ------------------------------------------------------------------------- core solver


def _defaults(dtype, m, max_iter, tol, polish_iter):
    eps = float(jnp.finfo(dtype).eps)
    if max_iter is None:
        max_iter = 60
    if polish_iter is None:
        polish_iter = 6
    if tol is None:
        # float64: 1.5e-9 (the KKT target 1e-8 with margin); float32: 3.5e-5.
        tol = 0.1 * eps**0.5
    return max_iter, tol, polish_iter


def _kkt(qs, cs, x, y, lo, hi, hl, hu, b, has_eq):
    """Scale-free KKT residual on the scaled problem (module docstring)."""
    e = jnp.ones_like(x) if has_eq else jnp.zeros_like(x)
    g = qs @ x + cs + y * e
    l0 = jnp.where(hl, lo, 0)
    u0 = jnp.where(hu, hi, 0)
    xs = jnp.maximum(1, jnp.max(jnp.abs(x)))
    dual = jnp.where(
        hl & hu, 0, jnp.where(hl, jnp.maximum(-g, 0), jnp.where(hu, jnp.maximum(g, 0), jnp.abs(g)))
    )
    # Complementarity as the min-map min(ĝ₊, |x − l|/X): unlike the product ĝ₊·|x − l|,
    # it bounds the distance to the active face linearly, so a point whose inactive
    # coordinate sits 1e-3 off its bound with a 1e-3 multiplier is not "converged".
    comp = jnp.maximum(
        jnp.where(hl, jnp.minimum(jnp.maximum(g, 0), jnp.abs(x - l0) / xs), 0),
        jnp.where(hu, jnp.minimum(jnp.maximum(-g, 0), jnp.abs(u0 - x) / xs), 0),
    )
    primal = jnp.maximum(jnp.max(jnp.where(hl, l0 - x, 0)), jnp.max(jnp.where(hu, x - u0, 0)))
    primal = jnp.maximum(primal, 0)
    if has_eq:
        primal = jnp.maximum(primal, jnp.abs(jnp.sum(x) - b))
    return jnp.maximum(jnp.maximum(jnp.max(dual), jnp.max(comp)), primal / xs)


class _IpmCarry(NamedTuple):
    x: jax.Array
    zl: jax.Array
    zu: jax.Array
    y: jax.Array
    it: jax.Array
    done: jax.Array
    failed: jax.Array


def _interior_point(qs, cs, lo, hi, hl, hu, b, has_eq, max_iter, tol):
    m = qs.shape[0]
    dtype = qs.dtype
    eps = jnp.finfo(dtype).eps
    delta = 64 * m * eps
    e = jnp.ones((m,), dtype) if has_eq else jnp.zeros((m,), dtype)
    l0 = jnp.where(hl, lo, 0)
    u0 = jnp.where(hu, hi, 0)
    nb = jnp.maximum(jnp.sum(hl) + jnp.sum(hu), 1).astype(dtype)
    eye = jnp.eye(m, dtype=dtype)

    x0 = jnp.where(hl & hu, 0.5 * (l0 + u0), jnp.where(hl, l0 + 1, jnp.where(hu, u0 - 1, 0)))
    if has_eq:
        # Simplex-like sets (lower bounds only): start at a strictly interior feasible point.
        slack = b - jnp.sum(l0)
        simplex_like = jnp.all(hl) & ~jnp.any(hu) & (slack > 0)
        x0 = jnp.where(simplex_like, l0 + slack / m, x0)
    one = jnp.ones((m,), dtype)
    carry0 = _IpmCarry(
        x0,
        jnp.where(hl, one, 0),
        jnp.where(hu, one, 0),
        jnp.zeros((), dtype),
        jnp.zeros((), jnp.int32),
        jnp.asarray(False),
        jnp.asarray(False),
    )

    def max_step(v, dv, mask):
        ratio = jnp.where(mask & (dv < 0), -v / jnp.where(dv < 0, dv, -1), jnp.inf)
        return jnp.minimum(1, jnp.min(ratio))

    def body(c: _IpmCarry) -> _IpmCarry:
        sl = jnp.where(hl, c.x - l0, 1)
        su = jnp.where(hu, u0 - c.x, 1)
        g = qs @ c.x + cs + c.y * e
        rd = g - c.zl + c.zu
        re = jnp.sum(c.x) - b if has_eq else jnp.zeros((), dtype)
        mu = (jnp.sum(jnp.where(hl, sl * c.zl, 0)) + jnp.sum(jnp.where(hu, su * c.zu, 0))) / nb
        d = jnp.where(hl, c.zl / sl, 0) + jnp.where(hu, c.zu / su, 0)
        chol = jnp.linalg.cholesky(qs + jnp.diag(d) + delta * eye)

        def cho(r):
            return jax.scipy.linalg.cho_solve((chol, True), r)

        def rhs(cl, cu):
            return -rd + jnp.where(hl, cl / sl, 0) - jnp.where(hu, cu / su, 0)

        def newton(t, te, cl, cu):
            # H dx + e dy = r1, eᵀdx = −re, with t = H⁻¹r1 and te = H⁻¹e (Schur complement).
            den = e @ te
            dy = jnp.where(den > 0, (e @ t + re) / jnp.where(den > 0, den, 1), 0)
            dx = t - dy * te
            dzl = jnp.where(hl, (cl - c.zl * dx) / sl, 0)
            dzu = jnp.where(hu, (cu + c.zu * dx) / su, 0)
            return dx, dy, dzl, dzu

        def step_len(dx, dzl, dzu):
            ap = jnp.minimum(max_step(sl, dx, hl), max_step(su, -dx, hu))
            ad = jnp.minimum(max_step(c.zl, dzl, hl), max_step(c.zu, dzu, hu))
            return jnp.minimum(ap, ad)

        # Predictor (affine scaling) and Mehrotra's centring parameter.
        cla, cua = jnp.where(hl, -sl * c.zl, 0), jnp.where(hu, -su * c.zu, 0)
        # One triangular solve pair for both right-hand sides (batched solves are costly).
        sol = cho(jnp.stack([rhs(cla, cua), e], axis=1))
        te = sol[:, 1]
        dxa, _, dzla, dzua = newton(sol[:, 0], te, cla, cua)
        aa = step_len(dxa, dzla, dzua)
        mu_aff = (
            jnp.sum(jnp.where(hl, (sl + aa * dxa) * (c.zl + aa * dzla), 0))
            + jnp.sum(jnp.where(hu, (su - aa * dxa) * (c.zu + aa * dzua), 0))
        ) / nb
        sigma = jnp.clip(jnp.where(mu > 0, mu_aff / jnp.where(mu > 0, mu, 1), 0) ** 3, 0, 1)
        # Corrector: centring plus the second-order term of the complementarity products.
        cl = jnp.where(hl, sigma * mu - sl * c.zl - dxa * dzla, 0)
        cu = jnp.where(hu, sigma * mu - su * c.zu + dxa * dzua, 0)
        dx, dy, dzl, dzu = newton(cho(rhs(cl, cu)), te, cl, cu)
        alpha = jnp.minimum(1, 0.99 * step_len(dx, dzl, dzu))

        x = c.x + alpha * dx
        zl = c.zl + alpha * dzl
        zu = c.zu + alpha * dzu
        y = c.y + alpha * dy
        finite = (
            jnp.all(jnp.isfinite(x))
            & jnp.all(jnp.isfinite(zl))
            & jnp.all(jnp.isfinite(zu))
            & jnp.isfinite(y)
        )
        # Convergence of the new point: residuals and complementarity at noise level.
        sl_n = jnp.where(hl, x - l0, 1)
        su_n = jnp.where(hu, u0 - x, 1)
        rd_n = qs @ x + cs + y * e - zl + zu
        re_n = jnp.abs(jnp.sum(x) - b) if has_eq else jnp.zeros((), dtype)
        mu_n = (jnp.sum(jnp.where(hl, sl_n * zl, 0)) + jnp.sum(jnp.where(hu, su_n * zu, 0))) / nb
        small = (jnp.max(jnp.abs(rd_n)) <= tol) & (re_n <= tol) & (mu_n <= tol * tol)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        return _IpmCarry(
            keep(x, c.x),
            keep(zl, c.zl),
            keep(zu, c.zu),
            keep(y, c.y),
            c.it + 1,
            small | ~finite,
            ~finite,
        )

    def cond(c):
        return ~c.done & (c.it < max_iter)

    out = jax.lax.while_loop(cond, body, carry0)
    return out.x, out.y, out.it


class _PolishCarry(NamedTuple):
    x: jax.Array
    y: jax.Array
    best_x: jax.Array
    best_y: jax.Array
    best_kkt: jax.Array
    it: jax.Array


def _polish(qs, cs, lo, hi, hl, hu, b, has_eq, x, y, polish_iter, tol):
    """Primal-dual active-set steps from ``(x, y)``; returns the best point seen."""
    m = qs.shape[0]
    dtype = qs.dtype
    eps = jnp.finfo(dtype).eps
    delta = 64 * m * eps
    e = jnp.ones((m,), dtype) if has_eq else jnp.zeros((m,), dtype)
    l0 = jnp.where(hl, lo, 0)
    u0 = jnp.where(hu, hi, 0)
    eye = jnp.eye(m, dtype=dtype)
    kkt = functools.partial(_kkt, qs, cs, lo=lo, hi=hi, hl=hl, hu=hu, b=b, has_eq=has_eq)

    def step(x, y):
        g = qs @ x + cs + y * e
        act_l = hl & (g > x - l0)
        act_u = hu & (-g > u0 - x) & ~act_l
        free = ~(act_l | act_u)
        xf = jnp.where(act_l, l0, jnp.where(act_u, u0, x))
        ff = free.astype(dtype)
        mat = ff[:, None] * ff[None, :] * qs + jnp.diag(1 - ff)
        ef = ff * e
        r1 = jnp.where(free, -(qs @ xf + cs + y * e), 0)
        r2 = b - jnp.sum(xf) if has_eq else jnp.zeros((), dtype)
        chol = jnp.linalg.cholesky(mat + delta * eye)

        def cho(r):
            return jax.scipy.linalg.cho_solve((chol, True), r)

        sol = cho(jnp.stack([r1, ef], axis=1))
        te = sol[:, 1]
        den = ef @ te

        def bordered(r1, r2, t=None):
            t = cho(r1) if t is None else t
            dy = jnp.where(den > 0, (ef @ t - r2) / jnp.where(den > 0, den, 1), 0)
            return t - dy * te, dy

        dx, dy = bordered(r1, r2, sol[:, 0])
        for _ in range(2):  # iterative refinement against the unregularised system
            ddx, ddy = bordered(r1 - mat @ dx - dy * ef, r2 - ef @ dx)
            dx, dy = dx + ddx, dy + ddy
        return xf + dx, y + dy

    def body(c: _PolishCarry) -> _PolishCarry:
        x, y = step(c.x, c.y)
        ok = jnp.all(jnp.isfinite(x)) & jnp.isfinite(y)
        k = jnp.where(ok, kkt(x, y), jnp.inf)
        better = k < c.best_kkt
        return _PolishCarry(
            jnp.where(ok, x, c.x),
            jnp.where(ok, y, c.y),
            jnp.where(better, x, c.best_x),
            jnp.where(better, y, c.best_y),
            jnp.minimum(k, c.best_kkt),
            c.it + 1,
        )

    def cond(c):
        return (c.best_kkt > tol) & (c.it < polish_iter)

    k0 = kkt(x, y)
    k0 = jnp.where(jnp.isfinite(k0), k0, jnp.inf)
    out = jax.lax.while_loop(cond, body, _PolishCarry(x, y, x, y, k0, jnp.zeros((), jnp.int32)))
    return out.best_x, out.best_y, out.best_kkt, out.it


def _fallback_point(lo, hi, hl, hu, b, has_eq):
    x = jnp.clip(jnp.zeros_like(lo), jnp.where(hl, lo, -jnp.inf), jnp.where(hu, hi, jnp.inf))
    if has_eq:
        x = x + (b - jnp.sum(x)) / x.shape[0]
        x = jnp.clip(x, jnp.where(hl, lo, -jnp.inf), jnp.where(hu, hi, jnp.inf))
    return jnp.where(jnp.isfinite(x), x, 0)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _core(q, c, lo, hi, b, has_eq, max_iter, tol, polish_iter, method, start):
    """Solve on working-dtype arrays.

    Returns ``(x, y_scaled, scale, it, pit, status, kkt, degenerate)``. Jitted so that
    eager calls reuse one compiled program per shape and configuration; inside a user's
    jit it is inlined.
    """
    m = q.shape[0]
    dtype = q.dtype
    tiny = jnp.finfo(dtype).tiny
    q = 0.5 * (q + q.T)
    hl = lo > -jnp.inf
    hu = hi < jnp.inf
    finite = jnp.all(jnp.isfinite(q)) & jnp.all(jnp.isfinite(c))
    bounds_ok = (
        jnp.all(~(hl & hu) | (lo <= hi))
        & ~jnp.any(jnp.isnan(lo))
        & ~jnp.any(jnp.isnan(hi))
        & ~jnp.any(lo == jnp.inf)
        & ~jnp.any(hi == -jnp.inf)
    )
    if has_eq:
        bounds_ok = (
            bounds_ok
            & jnp.isfinite(b)
            & (jnp.sum(jnp.where(hl, lo, -jnp.inf)) <= b)
            & (b <= jnp.sum(jnp.where(hu, hi, jnp.inf)))
        )
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.diagonal(q))), jnp.max(jnp.abs(c)))
    zero = finite & (scale <= tiny)
    usable = finite & bounds_ok & ~zero
    not_psd = jnp.any(jnp.diagonal(q) < 0)
    s = jnp.where(usable, scale, 1)
    qs = jnp.where(usable, q / s, jnp.eye(m, dtype=dtype))
    cs = jnp.where(usable, c / s, 0)
    # Infeasible bounds are replaced by the simplex (its result is discarded) so that the
    # loops see no NaN or empty set.
    lo_s = jnp.where(bounds_ok, lo, 0)
    hi_s = jnp.where(bounds_ok, hi, jnp.inf)
    b_s = jnp.where(bounds_ok, b, 1) if has_eq else b
    hl_s, hu_s = lo_s > -jnp.inf, hi_s < jnp.inf

    if method == "interior_point":
        x0, y0, it = _interior_point(qs, cs, lo_s, hi_s, hl_s, hu_s, b_s, has_eq, max_iter, tol)
    else:
        # The active-set method alone: its steps from the start (default: 0 pushed into
        # the bounds), no interior point. Each step fixes every entry whose multiplier
        # says so at its bound and solves the rest exactly.
        x0 = _fallback_point(lo_s, hi_s, hl_s, hu_s, b_s, has_eq)
        if start is not None:
            x0 = jnp.where(jnp.isfinite(start), start, x0)
        y0, it = jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
        polish_iter = max_iter
    x, y, kkt, pit = _polish(qs, cs, lo_s, hi_s, hl_s, hu_s, b_s, has_eq, x0, y0, polish_iter, tol)

    x_fb = _fallback_point(lo, hi, hl, hu, b, has_eq)
    x = jnp.where(usable, x, x_fb)
    y = jnp.where(usable, y, 0)
    kkt_fb = _kkt(
        jnp.zeros_like(q), jnp.zeros_like(c), x_fb, jnp.zeros((), dtype), lo, hi, hl, hu, b, has_eq
    )
    kkt = jnp.where(usable, kkt, jnp.where(zero & bounds_ok, kkt_fb, jnp.inf))
    status = jnp.where(
        ~finite,
        NUMERICAL_ERROR,
        jnp.where(~bounds_ok, INFEASIBLE, jnp.where(kkt <= tol, OPTIMAL, MAX_ITER)),
    ).astype(jnp.int32)
    degenerate = ~finite | ~bounds_ok | zero | not_psd
    return x, y, s, it, pit, status, kkt, degenerate


def _residual(has_eq, z, params, aux):
    """KKT residual on the final active set, for :func:`jaxpareto.weighting.implicit.attach`."""
    q, c, lo, hi, b = params
    act_l, act_u, scale = aux
    m = q.shape[0]
    x = z[:m]
    y = z[m] if has_eq else 0
    qsym = 0.5 * (q + q.T)
    g = (qsym @ x + c) / scale + y
    lo0 = jnp.where(act_l, lo, 0)
    hi0 = jnp.where(act_u, hi, 0)
    rows = jnp.where(act_l, x - lo0, jnp.where(act_u, x - hi0, g))
    if has_eq:
        rows = jnp.concatenate([rows, (jnp.sum(x) - b)[None]])
    return rows


@full_precision
def solve_qp(
    quad: jax.Array,
    linear: jax.Array | None = None,
    *,
    lower: jax.Array | None = None,
    upper: jax.Array | None = None,
    total: jax.Array | float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    polish_iter: int | None = None,
    method: str = "interior_point",
    start: jax.Array | None = None,
) -> QPResult:
    """Minimise ``½ xᵀQx + cᵀx`` s.t. ``lower ≤ x ≤ upper`` (and ``1ᵀx = total``).

    Interior point + active-set polishing; see the module docstring for the method, the
    KKT residual, the degenerate cases and the derivative.

    Args:
      quad: ``[m, m]`` symmetric PSD ``Q`` (symmetrised internally; may be singular).
      linear: ``[m]`` ``c`` (default zeros).
      lower: ``[m]`` lower bounds, ``-inf`` for none (default: none). A scalar broadcasts.
      upper: ``[m]`` upper bounds, ``+inf`` for none (default: none).
      total: scalar: adds ``1ᵀx = total`` (``lower=0, total=1``: the simplex).
      max_iter: interior-point iteration cap (static, default 60).
      tol: KKT residual for ``converged`` and to stop polishing (static; default
        ``0.1 √ε``: 1.5e-9 in float64, 3.5e-5 in float32).
      polish_iter: cap on active-set polishing steps (static, default 6).
      method: ``"interior_point"`` (default: the two stages of the module docstring)
        or ``"active_set"``: the second stage alone, from ``start`` (default ``0``
        clipped into the bounds), for at most ``max_iter`` steps (default 60). It
        needs a handful of factorisations where the interior point needs 10–30, but it
        can cycle on hard problems: check ``converged`` and fall back to
        ``"interior_point"`` (UPGrad and DualProj do). ``iterations`` is then 0 and
        ``polish_iterations`` counts its steps.
      start: ``[m]`` the active-set method's first point (a warm start, e.g. the
        previous solution; non-finite entries are replaced by the default). Its
        gradient picks the first active set: ``x_i`` at a bound stays there while its
        multiplier has the bound's sign.

    Returns:
      :class:`QPResult`; floating fields follow the dtype of ``quad``/``linear`` (bounds
      are cast to it; half precision is solved in float32 and cast back).

    Raises:
      ValueError: at trace time, naming the argument: a non-square ``quad``, wrongly
        shaped ``linear``/``lower``/``upper``, concrete bounds with NaN or
        ``lower > upper``, a non-finite ``total``, or bad options (``max_iter``, ``tol``,
        ``polish_iter``).
      TypeError: a non-floating ``quad``, ``linear``, ``lower`` or ``upper``, or a
        ``total`` that is not a real scalar.

    Example (DualProj: the mean gradient projected onto the dual cone)::

        res = solve_qp(gram, lower=jnp.full((m,), 1 / m))
        direction = jp.combine(jac, res.x)
    """
    _check_options(max_iter, tol, polish_iter)
    if method not in ("interior_point", "active_set"):
        raise ValueError(f"`method` must be 'interior_point' or 'active_set', got {method!r}.")
    quad, linear, lower, upper, total = _validate(quad, linear, lower, upper, total)
    m = quad.shape[0]
    out_dtype = jnp.result_type(quad, linear)
    dtype = working_dtype(quad, linear)
    max_iter, tol, polish_iter = _defaults(dtype, m, max_iter, tol, polish_iter)
    has_eq = total is not None
    q, c, lo, hi = (a.astype(dtype) for a in (quad, linear, lower, upper))
    b = total.astype(dtype) if has_eq else jnp.zeros((), dtype)

    sg = jax.lax.stop_gradient
    if start is not None:
        if method != "active_set":
            raise ValueError("`start` is used only by method='active_set'.")
        start = check_float(start, "start")
        if start.shape != (m,):
            raise ValueError(f"`start` must have shape ({m},), got {start.shape}.")
        start = sg(start.astype(dtype))
    x, y, s, it, pit, status, kkt, degenerate = _core(
        sg(q), sg(c), sg(lo), sg(hi), sg(b), has_eq, max_iter, tol, polish_iter, method, start
    )

    # Duals from the final gradient (scaled back to the problem's units).
    qsym = 0.5 * (sg(q) + sg(q).T)
    hl, hu = lo > -jnp.inf, hi < jnp.inf
    g_s = jnp.where(jnp.isfinite(s), (qsym @ x + sg(c)) / s, 0) + (y if has_eq else 0)
    g_s = jnp.where(jnp.isfinite(g_s), g_s, 0)
    dual_lower = jnp.where(hl & (g_s > 0), g_s, 0) * s
    dual_upper = jnp.where(hu & (g_s < 0), -g_s, 0) * s

    # Implicit derivative on the final active set; only where the solve succeeded.
    act_l = hl & (g_s > jnp.where(hl, x - jnp.where(hl, sg(lo), 0), 0))
    act_u = hu & (-g_s > jnp.where(hu, jnp.where(hu, sg(hi), 0) - x, 0)) & ~act_l
    z = jnp.concatenate([x, y[None]]) if has_eq else x
    z = attach(functools.partial(_residual, has_eq), (q, c, lo, hi, b), (act_l, act_u, sg(s)), z)
    x_d = jnp.where(status == OPTIMAL, z[:m], sg(z[:m]))
    objective = 0.5 * x_d @ (0.5 * (q + q.T)) @ x_d + c @ x_d
    return QPResult(
        x=x_d.astype(out_dtype),
        dual_lower=dual_lower.astype(out_dtype),
        dual_upper=dual_upper.astype(out_dtype),
        dual_eq=(y * s if has_eq else jnp.zeros((), dtype)).astype(out_dtype),
        objective=objective.astype(out_dtype),
        iterations=it.astype(jnp.int32),
        polish_iterations=pit.astype(jnp.int32),
        status=status,
        converged=status == OPTIMAL,
        kkt_residual=kkt.astype(out_dtype),
        degenerate=degenerate,
    )


def qp_kkt_residual(
    quad: jax.Array,
    linear: jax.Array | None,
    x: jax.Array,
    *,
    lower: jax.Array | None = None,
    upper: jax.Array | None = None,
    total: jax.Array | float | None = None,
    dual_eq: jax.Array | float = 0.0,
) -> jax.Array:
    """The scale-free KKT residual of :func:`solve_qp`'s problem at ``(x, dual_eq)``.

    Any point can be checked (e.g. another solver's answer). Without ``total`` the
    ``dual_eq`` argument is ignored; with it, pass the equality multiplier ``y`` (in the
    problem's units, as :attr:`QPResult.dual_eq`).

    Returns:
      Scalar residual in the working dtype of ``quad`` and ``linear``, on the problem
      divided by ``s = max(maxᵢ |Qᵢᵢ|, ‖c‖∞)``: ``max(dual, comp, primal /
      max(1, ‖x‖∞))`` with the dual-feasibility (sign of the gradient), the min-map
      complementarity ``min(ĝ₊, |x − l| / max(1, ‖x‖∞))`` and bound/equality violations.

    Raises:
      ValueError, TypeError: as :func:`solve_qp` for the problem data.
    """
    quad, linear, lower, upper, total = _validate(quad, linear, lower, upper, total)
    dtype = working_dtype(quad, linear)
    q = quad.astype(dtype)
    q = 0.5 * (q + q.T)
    c = linear.astype(dtype)
    s = jnp.maximum(
        jnp.maximum(jnp.max(jnp.abs(jnp.diagonal(q))), jnp.max(jnp.abs(c))), jnp.finfo(dtype).tiny
    )
    has_eq = total is not None
    b = total.astype(dtype) if has_eq else jnp.zeros((), dtype)
    lo, hi = lower.astype(dtype), upper.astype(dtype)
    return _kkt(
        q / s,
        c / s,
        jnp.asarray(x, dtype),
        jnp.asarray(dual_eq, dtype) / s,
        lo,
        hi,
        lo > -jnp.inf,
        hi < jnp.inf,
        b,
        has_eq,
    )


def project_dual_cone(
    gram: jax.Array,
    bounds: jax.Array,
    *,
    max_iter: int | None = None,
    tol: float | None = None,
) -> QPResult:
    """Weights of the projection of ``Jᵀu`` onto the dual cone ``{d : J d ≥ 0}``.

    Quinton & Rey (2024), "Jacobian descent for multi-objective optimization", Prop. 1:
    with the Gramian ``G = J Jᵀ``, the projection is ``Jᵀv`` with

        v = argmin_{v ≥ u}  ½ vᵀ G v.

    Args:
      gram: ``[m, m]`` PSD Gramian.
      bounds: ``[m]`` one ``u``, or ``[k, m]`` a batch (all solved at once by ``vmap``;
        UPGrad passes the ``m`` rows ``u = p_i e_i``).

    Returns:
      :class:`QPResult` with ``x = v`` (``[m]`` or ``[k, m]``, every field batched).
      ``G v ≥ 0`` (the projected direction conflicts with no task) up to ``tol``.

    Raises:
      ValueError: ``bounds`` of rank other than 1 or 2, or the errors of
        :func:`solve_qp`.
      TypeError: a non-floating ``gram`` or ``bounds``.
    """
    bounds = jnp.asarray(bounds)
    if bounds.ndim == 1:
        return solve_qp(gram, None, lower=bounds, max_iter=max_iter, tol=tol)
    if bounds.ndim != 2:
        raise ValueError(f"`bounds` must be [m] or [k, m], got shape {bounds.shape}.")
    gram = check_float(gram, "gram")
    return jax.vmap(lambda u: solve_qp(gram, None, lower=u, max_iter=max_iter, tol=tol))(bounds)
