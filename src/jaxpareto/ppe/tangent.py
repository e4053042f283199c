"""The tangent of the Pareto set that best follows a loss-space request, and the predictor.

At a Pareto-critical ``θ`` with KKT weights ``α``, differentiating
``F(θ, α) = Σ_i α_i ∇l_i(θ) = 0``, ``1ᵀα = 1`` along the set gives
``H_α θ' + Jᵀ α' = 0``, ``1ᵀα' = 0`` (Hillermeier 2001). With ``ξ = α'`` and
``W = H_α⁻¹ Jᵀ``: ``v = θ' = −W ξ``, ``δl = J v = −S ξ``, ``S = J W`` (``m × m``); ``ξ``
minimises ``‖S ξ + d‖`` over ``1ᵀξ = 0`` for the request ``d``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxpareto._validate import check_float, is_concrete
from jaxpareto.jacobian import value_and_jacobian
from jaxpareto.ppe._common import (
    COST_GRADIENT,
    COST_HVP,
    _all_finite,
    _check_int,
    _check_params,
    _check_same_tree,
    _check_scalar,
    _count_trace,
    _num_tasks,
    _strong,
    _with_batches,
)
from jaxpareto.ppe.krylov import _hessian_solves


class Tangent(NamedTuple):
    """Result of :func:`tangent` at a Pareto-critical point.

    Attributes:
      v: pytree like ``params``: the parameter direction ``v = −W ξ`` (eq. 3), scaled so
        that the predicted loss change is ``delta_losses`` (a step ``θ + σ v`` changes
        the losses by ``σ · delta_losses`` to first order).
      xi: ``[m]`` the change of the KKT weights along ``v`` (``1ᵀξ = 0``).
      delta_losses: ``[m]`` predicted loss change ``J v = −S ξ`` (the first-order
        realisation of the request ``d``, eq. 4).
      s_matrix: ``[m, m]`` ``S = J H_α⁻¹ Jᵀ`` (``S_ij = ∇l_iᵀ w_j``).
      losses: ``[m]`` the losses at ``params``.
      residuals: ``[m]`` relative GMRES residual of each solve ``(H_α + λI) w_i = ∇l_i``.
      iterations: int32 ``[m]`` matrix-vector products (HVPs) of each solve.
      converged: bool ``[m]`` each solve reached ``tol``.
      degenerate: bool ``[]``: a non-finite value appeared (then ``v``, ``xi``,
        ``delta_losses`` are zero) or every gradient is zero (``S = 0``: no tangent
        information; zero direction).
      finite: bool ``[]``: no non-finite value appeared.
      cost: ``[]`` gradient-evaluation equivalents (module docstring).
    """

    v: Any
    xi: jax.Array
    delta_losses: jax.Array
    s_matrix: jax.Array
    losses: jax.Array
    residuals: jax.Array
    iterations: jax.Array
    converged: jax.Array
    degenerate: jax.Array
    finite: jax.Array
    cost: jax.Array


def _simplex_tangent_basis(m: int) -> np.ndarray:
    """Orthonormal basis ``[m, m−1]`` of ``{ξ : 1ᵀξ = 0}`` (Helmert contrasts)."""
    q = np.zeros((m, m - 1))
    for j in range(1, m):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= math.sqrt(j * (j + 1))
    return q


def _solve_xi(s_matrix: jax.Array, d: jax.Array) -> jax.Array:
    """``argmin_{1ᵀξ=0} ‖S ξ + d‖`` (eq. 4), minimum-norm on a rank-deficient ``S``.

    Parameterising ``ξ = Q z`` with ``Q`` orthonormal on ``1^⊥`` removes the constraint;
    the SVD cut-off ``eps^(2/3) σ_max`` ignores directions that GMRES resolves only to
    rounding level.
    """
    m = d.shape[0]
    dtype = s_matrix.dtype
    q = jnp.asarray(_simplex_tangent_basis(m), dtype)
    a = s_matrix @ q
    u, sv, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = sv > jnp.finfo(dtype).eps ** (2 / 3) * sv[0]
    inv = jnp.where(keep, 1 / jnp.where(keep, sv, 1), 0)
    z = vt.T @ (inv * (u.T @ (-d)))
    return q @ z


class _TangentConfig(NamedTuple):
    restart: int | None
    tol: float | None
    batched: bool
    probes: int = 0  # Hutchinson probes of the diagonal preconditioner (0: none)


_PRECONDITIONERS = (None, "hutchinson")


def _check_preconditioner(preconditioner, probes) -> int:
    """The static probe count for ``preconditioner`` (0: no preconditioner)."""
    if preconditioner not in _PRECONDITIONERS:
        raise ValueError(
            f"`preconditioner` must be one of {_PRECONDITIONERS}, got {preconditioner!r}."
        )
    probes = _check_int(probes, "preconditioner_probes", 1)
    return probes if preconditioner == "hutchinson" else 0


def _tangent_impl(
    loss_fn, params, alpha, d, args, damping, maxiter, config: _TangentConfig
) -> Tangent:
    losses, jac = value_and_jacobian(loss_fn)(params, *args)
    m = losses.shape[0]
    dtype = losses.dtype
    flat, unravel = ravel_pytree(params)
    rows = jax.vmap(lambda t: ravel_pytree(t)[0])(jac)  # [m, n]
    alpha = alpha.astype(dtype)
    sol, extra = _hessian_solves(
        loss_fn,
        flat,
        unravel,
        alpha,
        args,
        rows,
        damping,
        maxiter,
        config.restart,
        config.tol,
        config.batched,
        config.probes,
    )
    w = sol.x  # [m, n], row i = (H_α + λI)⁻¹ ∇l_i
    s_matrix = jnp.matmul(rows, w.T, precision=jax.lax.Precision.HIGHEST).astype(dtype)
    d = d.astype(dtype)
    xi = _solve_xi(s_matrix, d)
    v_flat = -jnp.matmul(xi.astype(w.dtype), w, precision=jax.lax.Precision.HIGHEST)
    delta = -s_matrix @ xi

    finite = _all_finite(losses, s_matrix, xi, v_flat, delta)
    zero_jac = ~(jnp.max(jnp.abs(rows)) > 0)
    ok = finite & ~zero_jac
    xi = jnp.where(ok, xi, 0)
    delta = jnp.where(ok, delta, 0)
    v_flat = jnp.where(ok, v_flat, 0)
    s_matrix = jnp.where(finite, s_matrix, 0)
    its = sol.iterations
    hv = (jnp.max(its) * m if config.batched else jnp.sum(its)) + extra
    cost = (m * COST_GRADIENT + COST_HVP * hv).astype(dtype)
    return Tangent(
        v=unravel(v_flat),
        xi=xi,
        delta_losses=delta,
        s_matrix=s_matrix,
        losses=losses,
        residuals=jnp.where(jnp.isfinite(sol.residual), sol.residual, jnp.inf).astype(dtype),
        iterations=its,
        converged=sol.converged,
        degenerate=~ok,
        finite=finite,
        cost=cost,
    )


def _tangent_entry(loss_fn, params, alpha, d, args, damping, maxiter, config):
    _count_trace("tangent")
    return _tangent_impl(loss_fn, params, alpha, d, args, damping, maxiter, config)


# Compiled once per (loss_fn, configuration, shapes): repeated eager calls are cheap.
_tangent_jit = jax.jit(_tangent_entry, static_argnames=("loss_fn", "config"))


def tangent(
    loss_fn: Callable[..., jax.Array],
    params,
    alpha,
    direction,
    *args,
    damping=0.0,
    maxiter=100,
    tol: float | None = None,
    restart: int | None = None,
    batched: bool = True,
    batches=None,
    preconditioner: str | None = None,
    preconditioner_probes: int = 8,
) -> Tangent:
    """Tangent of the Pareto set at ``params`` that best follows a loss-space request.

    Solves ``(H_α + λI) w_i = ∇l_i`` for ``i = 1 … m`` with matrix-free GMRES on
    Hessian-vector products (``H_α = Σ α_i ∇²l_i``, eq. 2), forms ``S = J W``, picks
    ``ξ = argmin_{1ᵀξ=0} ‖Sξ + d‖`` (eq. 4) and returns ``v = −Wξ`` with its predicted
    loss change ``δl = −Sξ`` (eq. 3). ``params`` should be Pareto-critical with KKT
    weights ``alpha`` (e.g. the output of :func:`corrector`); elsewhere the result is
    the same linear algebra applied to the linearisation of ``F`` at ``(θ, α)`` and is
    only a first-order guess.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree ``θ`` (floating leaves).
      alpha: ``[m]`` KKT weights (on the simplex).
      direction: ``[m]`` requested loss change ``d`` (:func:`improve_direction`,
        :func:`toward_direction`).
      *args: data for ``loss_fn``.
      damping: ``λ ≥ 0``; ``H_α + λI`` regularises a singular Hessian (the tangent is
        then that of a proximally regularised problem).
      maxiter: cap on HVPs per solve (int ≥ 1, may be traced; default 100).
      tol: relative GMRES residual (default 1e-10 float64, 1e-5 float32).
      restart: Krylov dimension per cycle (default ``min(n, 30)``).
      batched: ``True``: the ``m`` solves run together under ``vmap`` (memory ``m``
        Krylov bases); ``False``: one after the other with ``lax.map``.
      batches: optional chunked data: a tuple of arrays with a common leading axis of
        ``B`` chunks (or an iterable of chunks, stacked first); the losses, gradients and
        HVPs are then the means over the chunks of ``loss_fn(params, *args, *chunk)``,
        computed chunk by chunk (``lax.map``), i.e. over the whole data set.
      preconditioner: ``None`` or ``"hutchinson"``: right-precondition every GMRES solve
        by a Hutchinson estimate of ``diag(H_α + λI)`` from ``preconditioner_probes``
        Rademacher HVPs (:mod:`~jaxpareto.ppe.krylov`; counted in ``cost``). Measured on
        a badly scaled n = 100 quadratic with κ = 1e4: 466 → 14 GMRES iterations per
        solve; on a rotated one (no diagonal structure) 182 → 216, so it is off by default.

    Returns:
      :class:`Tangent`; floating fields in the loss dtype, ``v`` in the params' dtypes.
      The computation is jitted (one compilation per ``loss_fn``, options and shapes).
    """
    loss_fn, args = _with_batches(loss_fn, args, batches)
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    alpha = check_float(alpha, "alpha")
    if alpha.shape != (m,):
        raise ValueError(f"`alpha` must have shape ({m},) to match m={m} tasks, got {alpha.shape}.")
    direction = check_float(direction, "direction")
    if direction.shape != (m,):
        raise ValueError(
            f"`direction` must have shape ({m},) to match m={m} tasks, got {direction.shape}."
        )
    _check_scalar(damping, "damping", nonnegative=True)
    if is_concrete(maxiter):
        _check_int(int(maxiter) if isinstance(maxiter, jax.Array) else maxiter, "maxiter", 1)
    if restart is not None:
        _check_int(restart, "restart", 1)
    if tol is not None:
        _check_scalar(tol, "tol", positive=True)
    if not isinstance(batched, bool):
        raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
    config = _TangentConfig(
        restart, tol, batched, _check_preconditioner(preconditioner, preconditioner_probes)
    )
    return _tangent_jit(
        loss_fn, _strong(params), alpha, direction, _strong(args), damping, maxiter, config=config
    )


def predictor(params, tangent: Tangent, step) -> Any:
    """Predictor ``θ + step · v`` (``v = tangent.v``); the losses move by about
    ``step · tangent.delta_losses`` and the KKT weights by ``step · tangent.xi``.

    Args:
      params: pytree ``θ``.
      tangent: a :class:`Tangent` computed at ``params``.
      step: scalar ``σ``.

    Returns:
      Pytree like ``params`` (each leaf keeps its dtype).
    """
    _check_same_tree(params, tangent.v, "params", "tangent.v")
    step = jnp.asarray(step)
    if step.ndim != 0:
        raise ValueError(f"`step` must be a scalar, got shape {step.shape}.")
    return jax.tree_util.tree_map(
        lambda p, t: p + step.astype(jnp.result_type(p)) * t.astype(jnp.result_type(p)),
        params,
        tangent.v,
    )
