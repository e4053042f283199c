"""DualProj weights: the preference-weighted mean gradient projected onto the dual cone.

Quinton & Rey (2024), "Jacobian descent for multi-objective optimization"
(arXiv:2406.16232), DualProj aggregator with Prop. 1. With the Gramian ``G = J Jᵀ``
(``[m, m]``) and a preference ``p`` (default ``1/m``: the mean gradient ``Jᵀp``), the
projection of ``Jᵀp`` onto the dual cone ``{d : J d ≥ 0}`` is ``Jᵀw`` with

    w = argmin_{v ≥ p}  ½ vᵀ G v.                                    (Prop. 1, eq. 5)

One QP (:func:`jaxpareto.weighting.qp.solve_qp`), solved on the Jacobi-scaled Gramian
``K = N⁻¹GN⁻¹`` in ``z = N v`` with the bound ``N p`` normalised to max 1 and mapped back
exactly (:func:`jaxpareto.weighting.upgrad.jacobi_scale`): the tolerances are relative
to each task's own scale. ``m = 1`` gives ``w = p``.

Properties (checked in ``tests/test_upgrad_dualproj.py``): non-conflicting
(``G w ≥ 0``), permutation invariant, invariant to a positive scaling of ``G``, linear
in ``p`` (positively homogeneous), ``w ≥ p``; ``w = p`` when no two gradients conflict.

Regularisation, singular Gramians, status, degenerate input and derivatives: as for
:mod:`jaxpareto.weighting.upgrad` (exact projection by default; ``reg_eps > 0`` gives
TorchJD's ``G / tr G + reg_eps I``; results and states start with the core fields
``weights, status, converged, iterations``; a non-finite Gramian gives ``w = p`` and
``status = NONFINITE_INPUT``, a zero one ``w = p`` and ``SUCCESSFUL``, other unusable
input ``w = p`` and ``DEGENERATE``; ``converged`` is ``status == SUCCESSFUL``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto.status import Status
from jaxpareto.weighting.base import Weighting, full_precision, weighting_factory
from jaxpareto.weighting.upgrad import (
    UPGradState,
    _check_reg,
    jacobi_scale,
    make_weighting,
    prepare,
    solve_rows,
    status_of,
    validate,
)

__all__ = ["DualProjResult", "DualProjState", "dualproj", "dualproj_weights"]

#: The state of :func:`dualproj` (same fields as UPGrad's).
DualProjState = UPGradState


class DualProjResult(NamedTuple):
    """Result of :func:`dualproj_weights`.

    Attributes:
      weights: ``[m]`` ``w`` (update ``Jᵀw``).
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT``, ``DEGENERATE``, or the QP's ``MAX_ITER`` /
        ``NUMERICAL_ERROR`` (the rules of :mod:`jaxpareto.weighting.upgrad`).
      converged: bool ``[]`` ``status == SUCCESSFUL``: the QP reached the KKT tolerance
        on usable input.
      iterations: int32 ``[]`` factorisations: active-set steps, plus the interior
        point's iterations and polishing where it ran
        (:func:`~jaxpareto.weighting.upgrad.solve_rows`).
      kkt_residual: ``[]`` scale-free KKT residual.
      degenerate: bool ``[]`` a guard fired: ``status`` is ``NONFINITE_INPUT`` or
        ``DEGENERATE`` (weights ``= p``, or the preference replaced by ``1/m``), or the
        Gramian is zero (weights ``= p``, ``status`` ``SUCCESSFUL``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    kkt_residual: jax.Array
    degenerate: jax.Array


@full_precision
def dualproj_weights(
    gram: jax.Array,
    preference: jax.Array | None = None,
    *,
    reg_eps: float = 0.0,
    max_iter: int | None = None,
    tol: float | None = None,
) -> DualProjResult:
    """DualProj weights ``w = argmin_{v ≥ p} ½ vᵀGv`` (Quinton & Rey 2024).

    Args:
      gram: ``[m, m]`` Gramian (symmetrised internally), ``m ≥ 1``.
      preference: ``[m]`` positive ``p`` (default ``1/m``).
      reg_eps: ``0`` (exact, default) or TorchJD's ``G / tr G + reg_eps I``.
      max_iter, tol: passed to :func:`jaxpareto.weighting.qp.solve_qp`.

    Returns:
      :class:`DualProjResult`, floating fields in the Gramian's dtype.
    """
    reg_eps = _check_reg(reg_eps)
    gram, preference = validate(gram, preference)
    return _dualproj(gram, preference, reg_eps, max_iter, tol)


# Jitted so that eager calls reuse one compiled program per shape and configuration.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _dualproj(gram, preference, reg_eps, max_iter, tol) -> DualProjResult:
    prep = prepare(gram, preference, reg_eps)
    c, p, usable = prep.gram, prep.preference, prep.usable
    k, n = jacobi_scale(c)
    # On z = N v (every task on its own scale, see jacobi_scale): min ½zᵀKz s.t.
    # z ≥ N p, with the bound normalised to max 1 (the problem is homogeneous in it).
    bound = n * p
    top = jnp.max(bound)
    res = jax.tree_util.tree_map(
        lambda a: a[0], solve_rows(k, (bound / top)[None], usable, max_iter, tol)
    )
    w = jnp.where(usable, res.x * top / n, p)
    status, degenerate = status_of(prep, res.status, res.degenerate)
    return DualProjResult(
        weights=w.astype(prep.out_dtype),
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=res.iterations + res.polish_iterations,
        kkt_residual=jnp.where(usable, res.kkt_residual, 0).astype(prep.out_dtype),
        degenerate=degenerate,
    )


@weighting_factory
def dualproj(
    preference: jax.Array | None = None,
    *,
    reg_eps: float = 0.0,
    max_iter: int | None = None,
    tol: float | None = None,
) -> Weighting:
    """DualProj as a weighting (see :func:`dualproj_weights`).

    ``init(num_tasks, dtype=jnp.float32) -> DualProjState``;
    ``update(gram, state, *, losses=None, preference=None) -> (weights, state)``.
    """
    reg_eps = _check_reg(reg_eps)
    return make_weighting(dualproj_weights, preference, reg_eps, max_iter, tol)
