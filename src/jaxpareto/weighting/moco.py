"""MoCo: multi-objective gradient correction (Fernando et al., ICLR 2023, "Mitigating
gradient bias in multi-objective learning: a provably convergent approach",
Algorithm 1).

Stochastic MGDA is biased because the min-norm weights are a nonlinear function of
noisy gradients. MoCo tracks every task gradient with a moving average and takes one
projected-gradient step on the min-norm weights per iteration:

    Y ← Y − β (Y − G)                     (tracked gradients, rows y_i; eq. 9),
    λ ← Π_Δ(λ − γ (Y Yᵀ + ρ I) λ)         (eq. 10),
    d = Yᵀ λ.

``Y`` has the shape of the Jacobian, so MoCo is a *Jacobian weighting*
(``Weighting.needs == "jacobian"``, :mod:`jaxpareto.weighting.base`) and its state
holds ``Y``: ``init(num_tasks, dtype, *, params=...)`` needs the parameter pytree
(:func:`jaxpareto.aggregate` passes it). ``Y`` starts at the first Jacobian received
(instead of 0, so the first update is not shrunk by ``β``); the paper's optional
projection of ``Y`` onto a bounded set is omitted. ``β = 0.5``, ``γ = 0.1``, ``ρ = 0``
are defaults of this library, not values from the paper (it uses decaying schedules).

No peer implements it (LibMTL 1.1.5 and TorchJD 0.18 do not); the tests compare with the
algorithm written naively in numpy.

Properties: permutation invariant (``Y`` and ``λ`` permuted with the tasks); not scale
free (``γ`` multiplies a Gramian), not non-conflicting (one projected step, and
``d`` uses the tracked gradients).

Bad input: a non-finite Jacobian leaves ``Y`` and ``λ`` unchanged, returns a zero
direction, ``status = NONFINITE_INPUT`` (the transforms skip the step anyway).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import working_dtype
from jaxpareto.weighting._field import pick_status
from jaxpareto.weighting.base import Weighting, check_num_tasks, weighting_factory
from jaxpareto.weighting.sdmgrad import project_simplex

__all__ = ["MocoState", "moco"]


class MocoState(NamedTuple):
    """State of :func:`moco`.

    Attributes:
      weights: ``[m]`` ``λ`` (``1/m`` after ``init``).
      status: int32 ``[]`` status of the last update.
      converged: bool ``[]`` the last input was usable.
      iterations: int32 ``[]`` updates so far.
      tracked: ``Y``, a pytree shaped like the Jacobian (every leaf ``[m, ...]``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    tracked: Any


def _rows(jac) -> int:
    leaves = jax.tree_util.tree_leaves(jac)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("`jac` must be a Jacobian pytree whose leaves have a leading axis m.")
    return leaves[0].shape[0]


@jax.jit
def _moco(jac, state, beta, gamma, rho):
    leaves = jax.tree_util.tree_leaves(jac)
    finite = functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.asarray(True)
    )
    first = state.iterations == 0
    tracked = jax.tree_util.tree_map(
        lambda y, g: jnp.where(first, g.astype(y.dtype), y - beta * (y - g.astype(y.dtype))),
        state.tracked,
        jac,
    )
    ys = [y.reshape(y.shape[0], -1) for y in jax.tree_util.tree_leaves(tracked)]
    dtype = working_dtype(*ys)
    m = ys[0].shape[0]
    gram = functools.reduce(jnp.add, [y.astype(dtype) @ y.astype(dtype).T for y in ys])
    lam0 = state.weights.astype(dtype)
    lam = project_simplex(lam0 - gamma * (gram + rho * jnp.eye(m, dtype=dtype)) @ lam0)
    ok = finite & jnp.all(jnp.isfinite(lam))
    lam = jnp.where(ok, lam, lam0)
    tracked = jax.tree_util.tree_map(
        lambda new, old: jnp.where(ok, new, old), tracked, state.tracked
    )
    direction = jax.tree_util.tree_map(
        lambda y: jnp.where(ok, jnp.tensordot(lam.astype(y.dtype), y, axes=1), 0), tracked
    )
    new = MocoState(
        lam.astype(state.weights.dtype),
        pick_status(~ok, jnp.asarray(False)),
        ok,
        state.iterations + ok.astype(jnp.int32),
        tracked,
    )
    return direction, new


@weighting_factory
def moco(
    *,
    num_tasks: int | None = None,
    beta: float = 0.5,
    gamma: float = 0.1,
    rho: float = 0.0,
    params=None,
) -> Weighting:
    """MoCo as a Jacobian weighting (``needs="jacobian"``; see the module docstring).

    ``init(num_tasks, dtype=float32, *, params)`` (the parameter pytree shapes ``Y``);
    ``update(jac, state, *, losses=None, preference=None, gram=None) -> (direction, state)``.

    Args:
      num_tasks: optional fixed ``m``.
      beta: tracking rate ``β ∈ (0, 1]``.
      gamma: step of the weight update ``γ > 0``.
      rho: ridge ``ρ ≥ 0`` added to the tracked Gramian.
      params: optional parameter pytree (a template) shaping ``Y`` when ``init`` is not
        given ``params`` (``jp.aggregate`` always passes them).
    """
    if not 0 < beta <= 1:
        raise ValueError(f"`beta` must be in (0, 1], got {beta!r}.")
    if not gamma > 0:
        raise ValueError(f"`gamma` must be positive, got {gamma!r}.")
    if not rho >= 0:
        raise ValueError(f"`rho` must be >= 0, got {rho!r}.")

    template = params

    def init(num_tasks: int, dtype=jnp.float32, *, params=None) -> MocoState:
        num_tasks = check_num_tasks(num_tasks)
        params = template if params is None else params
        if params is None:
            raise ValueError("moco's init needs `params` (the pytree that shapes the tracked Y).")
        tracked = jax.tree_util.tree_map(
            lambda p: jnp.zeros((num_tasks, *jnp.shape(p)), jnp.result_type(p)), params
        )
        return MocoState(
            jnp.full((num_tasks,), 1.0 / num_tasks, dtype),
            pick_status(jnp.asarray(False), jnp.asarray(False)),
            jnp.asarray(True),
            jnp.zeros((), jnp.int32),
            tracked,
        )

    def update(jac, state, *, losses=None, preference=None, gram=None):
        del losses, preference, gram
        if _rows(jac) != state.weights.shape[0]:
            raise ValueError(
                f"`jac` has m={_rows(jac)} rows but the state holds {state.weights.shape[0]}."
            )
        return _moco(jac, state, beta, gamma, rho)

    return Weighting(init, update, num_tasks, needs="jacobian")
