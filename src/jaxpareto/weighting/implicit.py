"""Implicit differentiation of solver outputs through their optimality conditions.

A solver returns ``z*(θ)`` with ``F(z*(θ), θ) = 0`` for a residual ``F`` built from the
optimality conditions *with the combinatorial part frozen* (the active set of a QP, the
support of the min-norm weights, the basis of an LP). By the implicit function theorem,
where ``K = ∂F/∂z`` has full column rank and the frozen part does not change under a
small perturbation,

    dz = −K⁺ (∂F/∂θ) dθ,          so the VJP is  θ̄ = −(∂F/∂θ)ᵀ λ,   λ = (Kᵀ)⁺ z̄.

``K`` may have more rows than columns (e.g. an LP vertex with all candidate equations
present and the unused ones zeroed) and may be rank deficient (a singular Gramian makes
the solution set non-unique); the Moore–Penrose pseudo-inverse then gives the minimum
norm adjoint, i.e. a generalised derivative — documented by each caller. At points where
the frozen part switches (a weight just reaching zero, a degenerate vertex) the result is
the one-sided derivative of the current piece.

:func:`attach` inserts this VJP into a forward pass computed by any (non-differentiable)
loop: it returns the solution unchanged, and its ``jax.custom_vjp`` rule calls
:func:`implicit_vjp`. Only reverse mode is defined (``jax.grad``, ``jax.vjp``); forward
mode (``jax.jvp``) through a solver is not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["attach", "implicit_vjp"]


def _adjoint(jac: jax.Array, cotangent: jax.Array) -> jax.Array:
    """Minimum-norm ``λ`` with ``Kᵀλ = z̄`` in the least-squares sense: ``(Kᵀ)⁺ z̄``.

    ``jac: [k, n]`` (``k ≥ n``), ``cotangent: [n]`` → ``[k]``. Singular values below
    ``max(k, n) · ε · σ_max`` are treated as zero (numpy's default cut-off).
    """
    jac = jnp.where(jnp.isfinite(jac), jac, 0)
    return jnp.linalg.pinv(jac).T @ cotangent


def implicit_vjp(
    residual: Callable[[jax.Array, Any], jax.Array],
    solution: jax.Array,
    params: Any,
    cotangent: jax.Array,
) -> Any:
    """``θ̄ = −(∂F/∂θ)ᵀ (Kᵀ)⁺ z̄`` for ``F = residual(z, θ)`` at ``z = solution``.

    Args:
      residual: ``residual(z, params) -> [k]``, zero at the solution, ``k ≥ len(z)``.
      solution: ``[n]`` the solution ``z*``.
      params: pytree ``θ`` the residual depends on.
      cotangent: ``[n]`` ``z̄``.

    Returns:
      A pytree like ``params``: the VJP. Non-finite entries are replaced by 0.
    """
    jac = jax.jacfwd(residual, argnums=0)(solution, params)  # [k, n]
    lam = _adjoint(jac, cotangent.astype(jac.dtype))
    _, pull = jax.vjp(lambda p: residual(solution, p), params)
    (p_bar,) = pull(lam)

    def clean(t):
        return jnp.where(jnp.isfinite(t), -t, 0).astype(t.dtype)

    return jax.tree_util.tree_map(clean, p_bar)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attach(residual, params, aux, solution):
    return solution


def _attach_fwd(residual, params, aux, solution):
    return solution, (params, aux, solution)


def _attach_bwd(residual, saved, cotangent):
    params, aux, solution = saved
    p_bar = implicit_vjp(lambda z, p: residual(z, p, aux), solution, params, cotangent)
    aux_bar = jax.tree_util.tree_map(lambda _: None, aux)
    return p_bar, aux_bar, jnp.zeros_like(solution)


_attach.defvjp(_attach_fwd, _attach_bwd)


def attach(
    residual: Callable[[jax.Array, Any, Any], jax.Array],
    params: Any,
    aux: Any,
    solution: jax.Array,
) -> jax.Array:
    """Return ``solution`` with the implicit VJP w.r.t. ``params`` attached.

    Args:
      residual: ``residual(z, params, aux) -> [k]`` (``k ≥ n``), zero at the solution;
        ``aux`` carries the frozen combinatorial data (masks) and receives no cotangent.
        Must be a hashable callable (a module-level function or a ``functools.partial``
        of one with hashable arguments).
      params: pytree of differentiable inputs ``θ`` (floating arrays).
      aux: pytree of arrays, treated as constants.
      solution: ``[n]`` the solver's output (gradients through it are cut).

    Returns:
      ``solution`` (same value); ``jax.grad`` through it w.r.t. ``params`` is the implicit
      derivative of :func:`implicit_vjp`.
    """
    return _attach(residual, params, aux, jax.lax.stop_gradient(solution))
