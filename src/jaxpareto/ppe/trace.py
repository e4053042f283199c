"""Predictor–corrector continuation along the Pareto set (:func:`trace`).

At each point: :func:`~jaxpareto.ppe.tangent` with the request ``d`` gives ``(v, ξ, δl)``;
the predictor ``θ̂ = θ + σ v``, ``α̂ = α + σ ξ``, ``l̂ = l + σ δl`` is corrected back
(:func:`~jaxpareto.ppe.corrector`, Newton on the KKT system by default) and accepted or
shortened.

**Step control** (scale-free). The predictor length ``σ`` is the smallest of

* the trust length ``s / ‖δl‖``: a predicted loss change of Euclidean length ``s``;
  ``s ≤ step_size`` when given (loss units), else ``s ≤ rel_step · ‖l‖`` (relative);
* the dimensionless trust ``‖σ ξ‖∞ ≤ alpha_step`` on the change of the KKT weights;
* the end of the front: ``α + σξ`` must stay in the simplex (a weight reaching 0 is the
  boundary of the Pareto set; that step is corrected with the weights fixed, so it
  lands on the boundary);
* the target: the floor of :meth:`Navigator.improve` (that task's predicted loss must
  not go below it; the Newton corrector then keeps it there) or, towards a preference,
  the point of the predicted line closest to the ray (corrected along the ray).

After an accepted step the next trust length follows the classic continuation rule on
the predictor–corrector discrepancy ``e = ‖l − l̂‖ / (σ‖δl‖)`` (``O(σ)`` on a smooth
front): ``s ← σ‖δl‖ · clip(e*/e, ½, 2)`` with ``e* = 0.05`` (and at most ``×1``, halved,
when the corrector needed more than half its budget). A rejected attempt (the corrector
did not converge, a non-finite value, or the realised change of the targeted task has
the wrong sign) halves the ``σ‖δl‖`` actually taken, not the nominal ``s``. The trace
stops at the end of the front, when ``d`` has no component along the front, at the
target, after ``max_shrinks + 1`` rejections, or after ``num_points`` points, each with
a named :class:`~jaxpareto.ppe.Status`.

Point 0 of a trace is the start corrected onto the Pareto set (``correct_start=True``)
or the start as given (``correct_start=False`` with its ``alpha``: the Navigator's moves
start exactly where the last one ended).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_float, check_preference
from jaxpareto.ppe._common import (
    COST_FORWARD,
    Status,
    _check_eps,
    _check_int,
    _check_params,
    _check_scalar,
    _count_trace,
    _default,
    _num_tasks,
    _strong,
    _with_batches,
)
from jaxpareto.ppe.corrector import (
    _CORRECTOR_METHODS,
    KKT_STEPS,
    CorrectorResult,
    _clip_alpha,
    _corrector_impl,
    _CorrectorConfig,
    _kkt_impl,
    _kkt_start,
    _KktConfig,
)
from jaxpareto.ppe.directions import _ray_sine, _toward
from jaxpareto.ppe.tangent import (
    _check_preconditioner,
    _tangent_impl,
    _TangentConfig,
    predictor,
)

# Trace.status values (per point).
_STATUS_FREE, _STATUS_ALPHA_CLIP, _STATUS_TARGET_CLIP = 0, 1, 2
_DISCREPANCY_TARGET = 0.05


class Trace(NamedTuple):
    """Result of :func:`trace`: ``K = num_points`` slots, the first ``length`` valid.

    Point 0 is the (corrected) start. Slots past ``length`` repeat the last valid point
    (``valid`` is False there), so every array is finite and shapes are static.

    Attributes:
      params: pytree like ``params`` with a leading axis ``K``.
      losses: ``[K, m]``.
      alpha: ``[K, m]`` KKT weights (Newton's for ``"kkt"``, min-norm otherwise).
      stationarity: ``[K]`` ``‖Σ α_i ∇l_i‖₂`` at each point.
      step: ``[K]`` predicted loss-space length ``σ ‖δl‖`` of the step that reached the
        point (0 for point 0).
      predicted_losses: ``[K, m]`` the predictor's first-order losses ``l + σ δl`` for
        that step (point 0: the corrected start's losses), to compare with ``losses``.
      predicted_alpha: ``[K, m]`` the predictor's KKT weights ``α + σ ξ``.
      gmres_iterations: int32 ``[K, m]`` HVPs of each tangent solve of that step.
      gmres_residual: ``[K, m]`` relative residuals of those solves.
      corrector_steps: int32 ``[K]`` (Newton iterations for ``"kkt"``).
      rejected: int32 ``[K]`` attempts rejected (and shrunk) before acceptance.
      status: int32 ``[K]`` 0: free step; 1: shortened to the end of the front (a
        predicted KKT weight reached 0); 2: shortened to the target.
      cost: ``[K]`` gradient-evaluation equivalents spent to reach each point (tangent,
        every attempt's corrector; point 0: the initial correction).
      valid: bool ``[K]``.
      length: int32 ``[]`` number of valid points.
      stop_reason: int32 ``[]`` a :class:`Status`: ``MAX_POINTS`` (alias ``BUDGET``),
        ``END_OF_FRONT``, ``TARGET_REACHED``, ``NO_PROGRESS``, ``STEP_TOO_SMALL``,
        ``NON_FINITE`` or ``CORRECTOR_FAILED`` (the start could not be corrected).
      cost_gradient_evals: ``[]`` total cost, including tangents computed at the last
        point to decide to stop.
      converged: bool ``[K]`` the corrector reached its tolerance at that point.
      relative_stationarity: ``[K]`` ``stationarity / maxᵢ‖∇l_i‖``.
      gmres_converged: bool ``[K]`` every tangent solve of that step converged.
      failure: int32 ``[]`` the :class:`Status` of the last rejected attempt
        (``NON_FINITE``, ``CORRECTOR_FAILED``, ``GMRES_NOT_CONVERGED``, ``NO_PROGRESS``
        for a realised change against the request), ``NONE`` if none was rejected.
    """

    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    step: jax.Array
    predicted_losses: jax.Array
    predicted_alpha: jax.Array
    gmres_iterations: jax.Array
    gmres_residual: jax.Array
    corrector_steps: jax.Array
    rejected: jax.Array
    status: jax.Array
    cost: jax.Array
    valid: jax.Array
    length: jax.Array
    stop_reason: jax.Array
    cost_gradient_evals: jax.Array
    converged: jax.Array
    relative_stationarity: jax.Array
    gmres_converged: jax.Array
    failure: jax.Array

    @property
    def reason(self) -> Status:
        """``stop_reason`` as a :class:`Status` (concrete traces only)."""
        return Status(int(self.stop_reason))

    def summary(self) -> str:
        """One line: points, stop reason, unconverged points, cost."""
        k = int(self.length)
        bad = int(np.sum(~np.asarray(self.converged)[:k]))
        fail = Status(int(self.failure))
        extra = "" if fail == Status.NONE else f", last rejection: {fail!r}"
        return (
            f"{k} points, stop {self.reason!r} ({self.reason.message}), "
            f"{bad} not converged{extra}, cost {float(self.cost_gradient_evals):.0f}"
        )


class _TraceStatic(NamedTuple):
    num_points: int
    mode: str  # "array" (a fixed request or "toward", chosen by a traced flag) or "callable"
    direction_fn: Callable | None
    tangent: _TangentConfig
    corrector: _CorrectorConfig
    kkt: _KktConfig
    max_shrinks: int


class _TraceNumeric(NamedTuple):
    toward: jax.Array  # bool: the request is toward_direction(l, preference, α)
    step_size: jax.Array  # absolute trust cap (loss units), or -1: relative
    rel_step: jax.Array
    alpha_step: jax.Array
    damping: jax.Array
    maxiter: jax.Array
    lr: jax.Array
    corrector_tol: jax.Array
    corrector_rtol: jax.Array
    alpha_tol: jax.Array
    target_tol: jax.Array
    end_tol: jax.Array
    correct_start: jax.Array
    alpha0: jax.Array
    has_alpha0: jax.Array


class _Buffers(NamedTuple):
    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    step: jax.Array
    predicted_losses: jax.Array
    predicted_alpha: jax.Array
    gmres_iterations: jax.Array
    gmres_residual: jax.Array
    corrector_steps: jax.Array
    rejected: jax.Array
    status: jax.Array
    cost: jax.Array
    converged: jax.Array
    relative_stationarity: jax.Array
    gmres_converged: jax.Array


def _clip_floor(losses, delta, floor):
    """Largest ``σ`` keeping ``l + σ δl ≥ floor`` on decreasing, floored tasks."""
    dec = (delta < 0) & jnp.isfinite(floor)
    ratio = (losses - floor) / jnp.where(dec, -delta, 1)
    return jnp.min(jnp.where(dec, jnp.maximum(ratio, 0), jnp.inf))


def _clip_ray(losses, delta, preference):
    """``σ`` minimising the distance of ``l + σ δl`` to the line of ``u = 1/r``."""
    u = 1 / preference
    uh = u / jnp.linalg.norm(u)
    pl = losses - (losses @ uh) * uh
    pd = delta - (delta @ uh) * uh
    pp = pd @ pd
    sigma = -(pl @ pd) / jnp.where(pp > 0, pp, 1)
    return jnp.where((pp > 0) & (sigma > 0), sigma, jnp.inf)


def _zeros_like_shape(tree):
    return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


def _trace_core(params, args, d_fixed, preference, floor, num, static: _TraceStatic, loss_fn):
    """The trace as one ``while_loop``. Iteration 0 corrects the start (zero tangent,
    ``σ = 0``) through the same code path as every later point, so the corrector and
    the tangent are each compiled once."""
    dtype = jnp.result_type(d_fixed)
    k_max = static.num_points
    ccfg = static.corrector
    kkt = ccfg.method == "kkt"
    m = d_fixed.shape[0]
    budget = static.kkt.steps if kkt else ccfg.steps

    def correct(p, pref, alpha_hat, l_hat, normal, fix_alpha, start):
        if kkt:
            limit = jnp.where(start & ~num.correct_start, 0, budget)

            def at_start():
                warm = jnp.where(num.correct_start & ~num.has_alpha0, 200, 0)
                return _kkt_start(
                    loss_fn,
                    p,
                    args,
                    num.alpha0,
                    num.has_alpha0,
                    warm,
                    1e-3,
                    num.corrector_rtol,
                    num.corrector_tol,
                    num.damping,
                    num.maxiter,
                    static.kkt,
                    limit,
                )

            def later():
                return _kkt_impl(
                    loss_fn,
                    p,
                    args,
                    alpha_hat,
                    l_hat,
                    normal,
                    fix_alpha,
                    num.corrector_rtol,
                    num.corrector_tol,
                    num.damping,
                    num.maxiter,
                    static.kkt,
                    limit,
                )

            return jax.lax.cond(start, at_start, later)
        limit = jnp.where(start & ~num.correct_start, 0, budget)
        return _corrector_impl(
            loss_fn, p, args, pref, num.lr, num.corrector_tol, ccfg, max_steps=limit
        )

    def compute_tangent(p, alpha, d):
        return _tangent_impl(loss_fn, p, alpha, d, args, num.damping, num.maxiter, static.tangent)

    def direction_at(losses, alpha):
        if static.mode == "callable":
            assert static.direction_fn is not None  # set together with mode "callable"
            return jnp.asarray(static.direction_fn(losses), dtype)
        # "toward" is a traced switch, so fixed requests and preference moves share
        # one executable (e.g. every Navigator move).
        return jnp.where(num.toward, _toward(losses, preference, alpha), d_fixed)

    def target_reached(losses):
        tol = num.target_tol
        slack = tol * (jnp.abs(floor) + jnp.linalg.norm(losses))
        hit_floor = jnp.any(jnp.isfinite(floor) & (losses <= floor + slack))
        return hit_floor | (num.toward & (_ray_sine(losses, preference) <= tol))

    def ray_pref(losses):
        # EPO corrector: the ray through the given (predicted) losses, r = 1/l.
        return 1 / jnp.maximum(losses, jnp.sqrt(jnp.finfo(dtype).tiny))

    def trust_cap(losses):
        return jnp.where(num.step_size > 0, num.step_size, num.rel_step * jnp.linalg.norm(losses))

    zeros_m = jnp.zeros((m,), dtype)
    tangent_shape = jax.eval_shape(compute_tangent, params, zeros_m, zeros_m)
    pref_shape = zeros_m if ccfg.method == "epo" else None
    result_shape = jax.eval_shape(
        lambda p, pr: correct(p, pr, zeros_m, zeros_m, zeros_m, jnp.bool_(False), jnp.bool_(True)),
        params,
        pref_shape,
    )

    buf = _Buffers(
        params=jax.tree_util.tree_map(
            lambda x: jnp.zeros((k_max,) + x.shape, x.dtype), result_shape.params
        ),
        losses=jnp.zeros((k_max, m), dtype),
        alpha=jnp.zeros((k_max, m), dtype),
        stationarity=jnp.zeros((k_max,), dtype),
        step=jnp.zeros((k_max,), dtype),
        predicted_losses=jnp.zeros((k_max, m), dtype),
        predicted_alpha=jnp.zeros((k_max, m), dtype),
        gmres_iterations=jnp.zeros((k_max, m), jnp.int32),
        gmres_residual=jnp.zeros((k_max, m), dtype),
        corrector_steps=jnp.zeros((k_max,), jnp.int32),
        rejected=jnp.zeros((k_max,), jnp.int32),
        status=jnp.zeros((k_max,), jnp.int32),
        cost=jnp.zeros((k_max,), dtype),
        converged=jnp.zeros((k_max,), bool),
        relative_stationarity=jnp.zeros((k_max,), dtype),
        gmres_converged=jnp.zeros((k_max,), bool),
    )

    class Carry(NamedTuple):
        k: jax.Array
        done: jax.Array
        reason: jax.Array
        failure: jax.Array
        s: jax.Array
        params: Any
        losses: jax.Array
        alpha: jax.Array
        buf: _Buffers
        total: jax.Array

    class Attempt(NamedTuple):
        tries: jax.Array
        accepted: jax.Array
        s_try: jax.Array
        sigma: jax.Array
        result: CorrectorResult
        cost: jax.Array
        failure: jax.Array

    def point_body(c: Carry):
        start = c.k == 0
        d = direction_at(c.losses, c.alpha)
        tan = jax.lax.cond(
            start,
            lambda: _zeros_like_shape(tangent_shape),
            lambda: compute_tangent(c.params, c.alpha, d),
        )
        delta = tan.delta_losses
        dn = jnp.linalg.norm(delta)
        reached = target_reached(c.losses)
        no_move = dn <= num.end_tol * jnp.linalg.norm(d)
        # The boundary of the Pareto set is where a KKT weight vanishes: stop there if
        # the tangent would push that weight below zero, or cannot move at all.
        low = c.alpha <= num.alpha_tol
        at_end = jnp.any(low & (tan.xi < 0)) | (no_move & jnp.any(low))
        bad = ~tan.finite
        stop_now = ~start & (bad | reached | at_end | no_move)
        reason_now = jnp.where(
            bad,
            Status.NON_FINITE,
            jnp.where(
                reached,
                Status.TARGET_REACHED,
                jnp.where(at_end, Status.END_OF_FRONT, Status.NO_PROGRESS),
            ),
        ).astype(jnp.int32)

        sig_alpha = _clip_alpha(c.alpha, tan.xi)
        sig_floor = _clip_floor(c.losses, delta, floor)
        sig_ray = jnp.where(num.toward, _clip_ray(c.losses, delta, preference), jnp.inf)
        sig_target = jnp.minimum(sig_floor, sig_ray)
        sig_clip = jnp.minimum(sig_alpha, sig_target)
        xi_inf = jnp.max(jnp.abs(tan.xi))
        sig_trust_alpha = jnp.where(
            xi_inf > 0, num.alpha_step / jnp.where(xi_inf > 0, xi_inf, 1), jnp.inf
        )
        kk = jnp.argmax(jnp.abs(d))
        safe_dn = jnp.where(dn > 0, dn, 1)
        # Where the corrector is pinned (Newton): the normal of the loss constraint.
        floored = jnp.isfinite(floor)
        u_ray = 1 / preference

        def attempt_cond(a: Attempt):
            return ~a.accepted & (a.tries <= static.max_shrinks) & ~stop_now

        def attempt_body(a: Attempt):
            sigma_free = jnp.minimum(a.s_try / safe_dn, sig_trust_alpha)
            sigma = jnp.where(start, 0, jnp.minimum(sigma_free, sig_clip))
            clipped = sigma >= sig_clip
            pred = predictor(c.params, tan, sigma)
            alpha_hat = jnp.maximum(c.alpha + sigma * tan.xi, 0)
            alpha_hat = alpha_hat / jnp.where(jnp.sum(alpha_hat) > 0, jnp.sum(alpha_hat), 1)
            l_hat = c.losses + sigma * delta
            end_clip = clipped & (sig_alpha <= sig_target)
            floor_clip = clipped & ~end_clip & (sig_floor <= sig_ray)
            ray_clip = clipped & ~end_clip & ~floor_clip
            n_floor = jnp.where(floored, 0, alpha_hat)
            n_floor = jnp.where(jnp.sum(n_floor) > 0, n_floor, alpha_hat)
            normal = jnp.where(ray_clip, u_ray, jnp.where(floor_clip, n_floor, alpha_hat))
            extra = jnp.zeros((), dtype)
            if ccfg.method == "epo":
                pref = jnp.where(
                    start & num.toward,
                    preference,
                    ray_pref(jnp.where(start, loss_fn(c.params, *args), l_hat)),
                )
                extra = jnp.where(start, COST_FORWARD, 0).astype(dtype)
            else:
                pref = None
            res = correct(pred, pref, alpha_hat, l_hat, normal, end_clip, start)
            realised = res.losses - c.losses
            sign_ok = ~(realised[kk] * d[kk] < 0) | ~(delta[kk] * d[kk] > 0)
            good = res.converged & ~res.degenerate
            # The start is recorded whatever happens; a failure there ends the trace.
            ok = start | (good & sign_ok)
            failure = jnp.where(good, Status.NO_PROGRESS, res.status).astype(jnp.int32)
            s_taken = jnp.where(start, a.s_try, sigma * dn)
            return Attempt(
                a.tries + 1,
                ok,
                jnp.where(ok, a.s_try, s_taken / 2),
                sigma,
                res,
                a.cost + res.cost + extra,
                jnp.where(ok, a.failure, failure),
            )

        a0 = Attempt(
            jnp.int32(0),
            jnp.bool_(False),
            c.s,
            jnp.zeros((), dtype),
            _zeros_like_shape(result_shape),
            jnp.zeros((), dtype),
            c.failure,
        )
        a = jax.lax.while_loop(attempt_cond, attempt_body, a0)
        accepted = a.accepted & ~stop_now
        res = a.result
        point_cost = tan.cost + a.cost
        status = jnp.where(
            ~start & (a.sigma >= sig_clip),
            jnp.where(sig_alpha <= sig_target, _STATUS_ALPHA_CLIP, _STATUS_TARGET_CLIP),
            _STATUS_FREE,
        ).astype(jnp.int32)
        new_buf = _Buffers(
            params=jax.tree_util.tree_map(lambda b, x: b.at[c.k].set(x), c.buf.params, res.params),
            losses=c.buf.losses.at[c.k].set(res.losses),
            alpha=c.buf.alpha.at[c.k].set(res.alpha),
            stationarity=c.buf.stationarity.at[c.k].set(res.stationarity),
            step=c.buf.step.at[c.k].set(a.sigma * dn),
            predicted_losses=c.buf.predicted_losses.at[c.k].set(
                jnp.where(start, res.losses, c.losses + a.sigma * delta)
            ),
            predicted_alpha=c.buf.predicted_alpha.at[c.k].set(
                jnp.where(start, res.alpha, c.alpha + a.sigma * tan.xi)
            ),
            gmres_iterations=c.buf.gmres_iterations.at[c.k].set(tan.iterations),
            gmres_residual=c.buf.gmres_residual.at[c.k].set(tan.residuals),
            corrector_steps=c.buf.corrector_steps.at[c.k].set(res.steps),
            rejected=c.buf.rejected.at[c.k].set(a.tries - 1),
            status=c.buf.status.at[c.k].set(status),
            cost=c.buf.cost.at[c.k].set(point_cost),
            converged=c.buf.converged.at[c.k].set(res.converged),
            relative_stationarity=c.buf.relative_stationarity.at[c.k].set(
                res.relative_stationarity
            ),
            gmres_converged=c.buf.gmres_converged.at[c.k].set(start | jnp.all(tan.converged)),
        )
        pick = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda x, y: jnp.where(accepted, x, y), new, old
        )
        # Step control for the next point: the predictor–corrector discrepancy.
        taken = a.sigma * dn
        disc = jnp.linalg.norm(res.losses - (c.losses + a.sigma * delta))
        e_rel = disc / jnp.where(taken > 0, taken, 1)
        factor = jnp.clip(_DISCREPANCY_TARGET / jnp.where(e_rel > 0, e_rel, 1e-30), 0.5, 2.0)
        struggled = res.steps > budget // 2
        factor = jnp.where(struggled, 0.5, factor)
        cap_next = trust_cap(res.losses)
        s_next = jnp.where(
            start,
            trust_cap(res.losses),
            jnp.minimum(cap_next, jnp.where(taken > 0, taken, a.s_try) * factor),
        )
        k = c.k + accepted.astype(jnp.int32)
        start_failed = start & (res.degenerate | ~res.converged)
        # Landing on the target ends the move without another tangent.
        reached_after = accepted & target_reached(res.losses)
        reason = jnp.where(
            stop_now,
            reason_now,
            jnp.where(
                start_failed,
                jnp.where(res.degenerate, Status.NON_FINITE, Status.CORRECTOR_FAILED),
                jnp.where(
                    ~accepted,
                    Status.STEP_TOO_SMALL,
                    jnp.where(reached_after, Status.TARGET_REACHED, Status.MAX_POINTS),
                ),
            ),
        ).astype(jnp.int32)
        done = stop_now | ~accepted | start_failed | reached_after | (k >= k_max)
        return Carry(
            k=k,
            done=done,
            reason=reason,
            failure=jnp.where(start_failed, res.status, a.failure).astype(jnp.int32),
            s=jnp.where(accepted, s_next, c.s),
            params=pick(res.params, c.params),
            losses=pick(res.losses, c.losses),
            alpha=pick(res.alpha, c.alpha),
            buf=pick(new_buf, c.buf),
            total=c.total + point_cost,
        )

    carry0 = Carry(
        k=jnp.int32(0),
        done=jnp.bool_(False),
        reason=jnp.int32(Status.MAX_POINTS),
        failure=jnp.int32(Status.NONE),
        s=jnp.asarray(1.0, dtype),
        params=params,
        losses=zeros_m,
        alpha=jnp.full((m,), 1 / m, dtype),
        buf=buf,
        total=jnp.zeros((), dtype),
    )
    out = jax.lax.while_loop(lambda c: ~c.done, point_body, carry0)
    length = out.k
    idx = jnp.minimum(jnp.arange(k_max), length - 1)
    b = jax.tree_util.tree_map(lambda x: x[idx], out.buf)
    return Trace(
        params=b.params,
        losses=b.losses,
        alpha=b.alpha,
        stationarity=b.stationarity,
        step=b.step,
        predicted_losses=b.predicted_losses,
        predicted_alpha=b.predicted_alpha,
        gmres_iterations=b.gmres_iterations,
        gmres_residual=b.gmres_residual,
        corrector_steps=b.corrector_steps,
        rejected=b.rejected,
        status=b.status,
        cost=b.cost,
        valid=jnp.arange(k_max) < length,
        length=length,
        stop_reason=out.reason,
        cost_gradient_evals=out.total,
        converged=b.converged,
        relative_stationarity=b.relative_stationarity,
        gmres_converged=b.gmres_converged,
        failure=out.failure,
    )


# Compiled once per (loss_fn, static configuration, shapes): repeated traces and every
# Navigator move on the same problem reuse the executable.
def _trace_entry(params, args, d_fixed, preference, floor, num, static, loss_fn):
    _count_trace("trace")
    return _trace_core(params, args, d_fixed, preference, floor, num, static, loss_fn)


_trace_jit = jax.jit(_trace_entry, static_argnames=("static", "loss_fn"))


def trace(
    loss_fn: Callable[..., jax.Array],
    params,
    direction,
    num_points: int,
    *args,
    preference=None,
    floor=None,
    step_size=None,
    corrector: str = "kkt",
    corrector_steps: int | None = None,
    corrector_lr=None,
    corrector_tol=None,
    corrector_rtol=None,
    rel_step=0.25,
    alpha_step=0.1,
    alpha=None,
    correct_start: bool = True,
    damping=0.0,
    gmres_maxiter: int = 100,
    gmres_tol: float | None = None,
    gmres_restart: int | None = None,
    batched: bool = True,
    max_shrinks: int = 6,
    alpha_tol=1e-4,
    target_tol=None,
    eps: float = 1e-4,
    batches=None,
    preconditioner: str | None = None,
    preconditioner_probes: int = 8,
) -> Trace:
    """Trace the Pareto set from ``params`` following a loss-space preference.

    The start is first corrected onto the Pareto set (:func:`corrector`). Then, at each
    point, :func:`tangent` with the request ``d`` gives ``(v, ξ, δl)``; the predictor
    ``θ + σ v`` is corrected back (Newton on the KKT system by default) and accepted or
    shrunk (module docstring: step control); the loop stops at the end of the front, at the target, or after
    ``num_points`` points. The whole loop is one ``jax.lax.while_loop``, compiled once
    per ``loss_fn``, static options and argument types (so repeated calls are cheap:
    a fixed request and ``"toward"`` share one executable; a weakly typed argument, e.g.
    ``jnp.asarray(1.0)``, and a strongly typed one compile separately) and usable under
    ``jax.jit`` and ``jax.vmap``.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree start (need not be Pareto-critical).
      direction: the request ``d``: an array ``[m]`` (fixed, only its direction matters,
        e.g. :func:`improve_direction`), a callable ``direction(losses) -> [m]``
        re-evaluated at each point (static: a new function object recompiles), or the
        string ``"toward"``: :func:`toward_direction` with ``preference``, re-evaluated at
        each point, with steps shortened to land on the ray and a stop on it.
      num_points: number of points to record, start included (static int ≥ 1).
      *args: data for ``loss_fn`` (arrays).
      preference: ``[m]`` positive; required by ``"toward"``.
      floor: ``[m]`` optional lower bounds on the predicted losses (``-inf`` = none);
        reaching one stops the trace with ``TARGET_REACHED``.
      step_size: largest predicted loss change per step, Euclidean, in loss units
        (``> 0``); default None: ``rel_step · ‖l‖`` at each point (scale-free).
      corrector: ``"kkt"`` (default: Newton on the KKT system, :func:`corrector`),
        ``"mgda"`` (first order, every loss decreasing) or ``"epo"`` (EPO steps
        towards the ray through the predicted losses).
      corrector_steps, corrector_lr, corrector_tol, corrector_rtol: see
        :func:`corrector` (``steps``, ``lr``, ``tol``, ``rtol``; ``"kkt"``: 12 Newton
        iterations, relative tolerance 1e-10 float64 / 1e-4 float32, ``tol`` 0).
      rel_step: the relative trust cap when ``step_size`` is None.
      alpha_step: cap on ``‖Δα‖∞`` per predictor step (dimensionless).
      alpha: ``[m]`` KKT weights of ``params``, if known (a Navigator's current point).
      correct_start: False: record ``params`` as point 0 without correcting it
        (with ``alpha``; the Navigator's moves).
      damping, gmres_maxiter, gmres_tol, gmres_restart, batched: see :func:`tangent`.
      max_shrinks: rejected attempts per point before ``STEP_TOO_SMALL``.
      alpha_tol: a KKT weight at or below it that the tangent would lower ends the front.
      target_tol: tolerance of the target tests (ray: ``sin∠(l, 1/r)``; floor: relative);
        default ``sqrt(eps_dtype)``.
      eps: EPO's non-uniformity threshold for ``corrector="epo"``.
      batches: optional chunked data for mini-batch navigation over the whole data set:
        a tuple of arrays with a common leading axis of ``B`` chunks (or an iterable of
        chunks, e.g. a data iterator, read to the end and stacked). Every loss, gradient,
        Jacobian and HVP of the trace is then the mean over the chunks of
        ``loss_fn(params, *args, *chunk)``, computed chunk by chunk (``lax.map`` with
        ``jax.checkpoint``, one chunk's activations live at a time); with per-sample mean
        losses and equal chunks this is exactly the full-batch trace.
      preconditioner, preconditioner_probes: diagonal (Hutchinson) preconditioning of
        every GMRES solve, tangent and Newton (:func:`tangent`).

    Returns:
      :class:`Trace`.
    """
    loss_fn, args = _with_batches(loss_fn, args, batches)
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    num_points = _check_int(num_points, "num_points", 1)
    fn = None
    if isinstance(direction, str):
        if direction != "toward":
            raise ValueError(f"`direction` string must be 'toward', got {direction!r}.")
        mode, toward = "array", True
        preference = check_preference(preference, m).astype(dtype)
        d_fixed = jnp.zeros((m,), dtype)
    elif callable(direction):
        mode, fn, toward = "callable", direction, False
        d_fixed = jnp.zeros((m,), dtype)
    else:
        mode, toward = "array", False
        d_fixed = check_float(direction, "direction")
        if d_fixed.shape != (m,):
            raise ValueError(
                f"`direction` must have shape ({m},) to match m={m} tasks, got {d_fixed.shape}."
            )
        d_fixed = d_fixed.astype(dtype)
    if not toward:
        preference = (
            jnp.ones((m,), dtype)
            if preference is None
            else check_preference(preference, m).astype(dtype)
        )
    if floor is None:
        floor = jnp.full((m,), -jnp.inf, dtype)
    else:
        floor = jnp.asarray(floor)
        if floor.shape != (m,):
            raise ValueError(
                f"`floor` must have shape ({m},) to match m={m} tasks, got {floor.shape}."
            )
        floor = check_float(floor, "floor").astype(dtype)
    if alpha is None:
        alpha0, has_alpha0 = jnp.full((m,), 1 / m, dtype), False
    else:
        alpha0 = check_float(alpha, "alpha").astype(dtype)
        if alpha0.shape != (m,):
            raise ValueError(
                f"`alpha` must have shape ({m},) to match m={m} tasks, got {alpha0.shape}."
            )
        has_alpha0 = True
    if not isinstance(correct_start, bool):
        raise TypeError(f"`correct_start` must be a bool, got {type(correct_start).__name__}.")
    if corrector not in _CORRECTOR_METHODS:
        raise ValueError(f"`corrector` must be one of {_CORRECTOR_METHODS}, got {corrector!r}.")
    if step_size is not None:
        _check_scalar(step_size, "step_size", positive=True)
    _check_scalar(rel_step, "rel_step", positive=True)
    _check_scalar(alpha_step, "alpha_step", positive=True)
    _check_scalar(damping, "damping", nonnegative=True)
    _check_scalar(alpha_tol, "alpha_tol", nonnegative=True)
    _check_eps(eps)
    if corrector_steps is None:
        corrector_steps = KKT_STEPS if corrector == "kkt" else 200
    corrector_steps = _check_int(corrector_steps, "corrector_steps", 1)
    max_shrinks = _check_int(max_shrinks, "max_shrinks", 0)
    _check_int(gmres_maxiter, "gmres_maxiter", 1)
    if gmres_restart is not None:
        _check_int(gmres_restart, "gmres_restart", 1)
    if not isinstance(batched, bool):
        raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
    line_search = corrector == "mgda"
    lr = (1.0 if line_search else 0.1) if corrector_lr is None else corrector_lr
    _check_scalar(lr, "corrector_lr", positive=True)
    root_eps = float(np.sqrt(np.finfo(np.float64).eps)), float(np.sqrt(np.finfo(np.float32).eps))
    ctol = (
        (0.0 if corrector_tol is None else corrector_tol)
        if corrector == "kkt"
        else _default(corrector_tol, dtype, *root_eps)
    )
    crtol = _default(corrector_rtol, dtype, 1e-10, 1e-4)
    _check_scalar(crtol, "corrector_rtol", nonnegative=True)
    ttol = _default(target_tol, dtype, *root_eps)
    _check_scalar(ctol, "corrector_tol", nonnegative=True)
    _check_scalar(ttol, "target_tol", nonnegative=True)
    probes = _check_preconditioner(preconditioner, preconditioner_probes)
    static = _TraceStatic(
        num_points=num_points,
        mode=mode,
        direction_fn=fn,
        tangent=_TangentConfig(gmres_restart, gmres_tol, batched, probes),
        corrector=_CorrectorConfig(corrector, corrector_steps, line_search, 30, float(eps)),
        kkt=_KktConfig(corrector_steps, 30, gmres_restart, gmres_tol, batched, probes),
        max_shrinks=max_shrinks,
    )
    as_dtype = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    numeric = _TraceNumeric(
        toward=jnp.asarray(toward),
        step_size=as_dtype(-1.0 if step_size is None else step_size),
        rel_step=as_dtype(rel_step),
        alpha_step=as_dtype(alpha_step),
        damping=as_dtype(damping),
        maxiter=jnp.asarray(gmres_maxiter, jnp.int32),
        lr=as_dtype(lr),
        corrector_tol=as_dtype(ctol),
        corrector_rtol=as_dtype(crtol),
        alpha_tol=as_dtype(alpha_tol),
        target_tol=as_dtype(ttol),
        end_tol=as_dtype(ttol),
        correct_start=jnp.asarray(correct_start),
        alpha0=alpha0,
        has_alpha0=jnp.asarray(has_alpha0),
    )
    # Weakly typed leaves (e.g. jnp.full(n, 0.5)) would otherwise recompile.
    params = _strong(params)
    return _trace_jit(
        params, _strong(args), d_fixed, preference, floor, numeric, static=static, loss_fn=loss_fn
    )
