"""IMTL-G: impartial multi-task learning, gradient balance (Liu et al., ICLR 2021,
"Towards impartial multi-task learning", Sec. 3.2).

IMTL-G looks for the update ``g = Σ_i α_i g_i`` with ``Σ_i α_i = 1`` whose projections on
the unit task gradients ``u_i = g_i / ‖g_i‖`` are all equal, ``gᵀu_1 = … = gᵀu_m``.
The paper's closed form (full-rank gradients) is, with ``D = [g_1 − g_2, …, g_1 − g_m]ᵀ``
and ``U = [u_1 − u_2, …, u_1 − u_m]ᵀ``,

    α_{2:m} = g_1ᵀ Uᵀ (D Uᵀ)⁻¹,      α_1 = 1 − Σ_{i≥2} α_i.

Gramian form (Quinton & Rey 2024, "Jacobian descent for multi-objective optimization",
which generalises it to linearly dependent gradients; TorchJD's ``IMTLG``). The
conditions ``gᵀu_i = const`` read ``(C α)_i = t ‖g_i‖``: with ``n_i = √C_ii``,

    v = C⁺ n,      α = v / Σ_i v_i,

``C⁺`` the Moore–Penrose pseudo-inverse. ``Gᵀv`` is the minimum-norm vector of the span
of the gradients with ``u_iᵀ (Gᵀv) = 1`` for all ``i``. For full-rank gradients this is
the paper's closed form.

Scale. With ``N = diag(n)`` the conditions read ``K z = 1`` for ``K = N⁻¹CN⁻¹`` (unit
diagonal) and ``z = N v``; the solve is ``z = K⁺1``, ``v = N⁻¹z``. ``K`` carries only
the angles between the gradients, so norm ratios of 1e8 (which square into ``C``'s
condition number) cost no accuracy, and the update ``Σ z_i g_i / n_i`` is the same
minimum-norm vector of the span. This holds when ``K z = 1`` is solvable (independent
gradients, duplicates); when it is not (dependent gradients that admit no
equal-projection update) the answer is a least-squares choice that the scaling would
change, so ``C⁺n`` on ``C`` itself is used (TorchJD's definition). A zero gradient keeps
``n_i = 1`` (its row of ``K`` is zero and ``z_i = 0``). ``m = 1`` gives the weight 1.

Pseudo-inverse: eigen-decomposition of ``K``, eigenvalues below ``m · ε · λ_max``
treated as zero (``numpy.linalg.pinv``'s default cut-off).

Properties (checked in ``tests/test_weighting_properties.py``): permutation invariant;
weights unchanged when every gradient is multiplied by one positive factor; the update
has equal projections on all unit gradients ("impartial"); multiplying task ``i``'s
gradient by ``c_i > 0`` leaves the update's direction unchanged up to sign (only ``Σ v``
changes). Not non-conflicting in general (the common projection can be negative).

Degeneracy: ``|Σ_i v_i| ≤ 8 m ε Σ_i |v_i|`` (e.g. all gradients zero) or a non-finite
Gramian gives zero weights (a zero update, as TorchJD) and sets ``degenerate``; the
status is ``NONFINITE_INPUT`` for the non-finite Gramian and ``DEGENERATE`` otherwise.
The solve is closed-form: ``iterations = 0``, ``converged`` unless the input was
unusable.
"""

from __future__ import annotations

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

__all__ = ["ImtlResult", "ImtlState", "imtl_g", "imtl_g_weights"]


class ImtlResult(NamedTuple):
    """Result of :func:`imtl_g_weights`.

    Attributes:
      weights: ``[m]`` ``α`` with ``Σ α = 1`` (zeros when degenerate).
      status: int32 ``[]`` a :class:`jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT`` (non-finite Gramian) or ``DEGENERATE`` (no equal-projection
        update, e.g. a zero Gramian).
      converged: bool ``[]`` ``status == SUCCESSFUL`` (closed form).
      iterations: int32 ``[]`` always 0 (closed form).
      rank: int32 ``[]`` numerical rank of the Gramian.
      projection: ``[]`` the common projection ``gᵀu_i`` of the update (0 if degenerate).
      degenerate: bool ``[]`` the fallback was used.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    rank: jax.Array
    projection: jax.Array
    degenerate: jax.Array


def _pinv_apply(c: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``C⁺ b`` for a symmetric PSD ``C`` by an eigenvalue-truncated inverse; and the rank."""
    m = c.shape[0]
    evals, evecs = jnp.linalg.eigh(c)
    cutoff = m * jnp.finfo(c.dtype).eps * jnp.maximum(jnp.max(evals), 0)
    keep = evals > cutoff
    inv = jnp.where(keep, 1 / jnp.where(keep, evals, 1), 0)
    return evecs @ (inv * (evecs.T @ b)), jnp.sum(keep).astype(jnp.int32)


@full_precision
def imtl_g_weights(gram: jax.Array) -> ImtlResult:
    """IMTL-G weights ``α = C⁺n / Σ(C⁺n)``, ``n_i = √C_ii`` (see module docstring).

    Args:
      gram: ``[m, m]`` task Gramian, ``m ≥ 1``.

    Returns:
      :class:`ImtlResult`; float fields in the dtype of ``gram``.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    return _imtl_g(jax.lax.stop_gradient(gram))


# Jitted so that eager calls reuse one compiled program per shape.
@jax.jit
@full_precision
def _imtl_g(gram) -> ImtlResult:
    m = gram.shape[0]
    out_dtype = gram.dtype
    dtype = working_dtype(gram)
    if m == 1:
        w1, finite1 = single_task(gram, dtype)
        usable1 = finite1 & (gram[0, 0] > 0)
        proj = jnp.sqrt(jnp.where(usable1, gram[0, 0], 0).astype(dtype))
        return ImtlResult(
            weights=w1.astype(out_dtype),
            status=pick_status(nonfinite=~finite1),
            converged=finite1,
            iterations=jnp.zeros((), jnp.int32),
            rank=usable1.astype(jnp.int32),
            projection=proj.astype(out_dtype),
            degenerate=~finite1,
        )
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    finite = jnp.all(jnp.isfinite(c))
    scale = jnp.max(jnp.diagonal(c))
    usable = finite & (scale > jnp.finfo(dtype).tiny)
    # Weights are invariant to a common scale: max diag = 1 first (no overflow), then
    # each task on its own scale: C v = n  ⇔  K z = 1 with K = N⁻¹CN⁻¹, z = N v. K has a
    # unit diagonal, so gradient norms spread over 1e8 cost no accuracy (C itself has
    # the squared spread in its condition number); only the angles between the
    # gradients condition K. A zero gradient keeps n_i = 1: its row of K is zero, z_i = 0.
    c = jnp.where(usable, c / jnp.where(usable, scale, 1), jnp.eye(m, dtype=dtype))
    diag = jnp.diagonal(c)
    pos = diag > jnp.finfo(dtype).tiny
    n = jnp.where(pos, jnp.sqrt(jnp.where(pos, diag, 1)), 1)
    k = c / n[:, None] / n[None, :]
    k = 0.5 * (k + k.T)
    ones = pos.astype(dtype)
    z, rank = _pinv_apply(k, ones)
    # The scaled solve is exact when K z = 1 has a solution (always for independent
    # gradients; then the update is unique). When it has none (dependent gradients with
    # no equal-projection update), the answer is the least-squares choice of the
    # definition, C⁺n in C's own metric (TorchJD), which the scaling would change.
    eps = jnp.finfo(dtype).eps
    consistent = jnp.max(jnp.abs(k @ z - ones)) <= 64 * m * eps * (1 + jnp.max(jnp.abs(z)))
    v = jax.lax.cond(
        consistent, lambda: z / n, lambda: _pinv_apply(c, jnp.sqrt(jnp.maximum(diag, 0)))[0]
    )
    total = jnp.sum(v)
    ok = usable & jnp.all(jnp.isfinite(v)) & (jnp.abs(total) > 8 * m * eps * jnp.sum(jnp.abs(v)))
    weights = jnp.where(ok, v / jnp.where(ok, total, 1), 0)
    # gᵀu_i = (Cα)_i / √C_ii = 1/Σv on the scaled Gramian; back to the input scale.
    projection = jnp.where(ok, jnp.sqrt(jnp.where(usable, scale, 0)) / jnp.where(ok, total, 1), 0)
    return ImtlResult(
        weights=weights.astype(out_dtype),
        status=pick_status(nonfinite=~finite, degenerate=~ok),
        converged=ok,
        iterations=jnp.zeros((), jnp.int32),
        rank=jnp.where(usable, rank, 0),
        projection=projection.astype(out_dtype),
        degenerate=~ok,
    )


class ImtlState(NamedTuple):
    """State of :func:`imtl_g`.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``).
      status: int32 ``[]`` status of the last update (:class:`ImtlResult`).
      converged: bool ``[]`` the last update succeeded.
      iterations: int32 ``[]`` always 0 (closed form).
      rank: int32 ``[]`` numerical rank of the last Gramian.
      degenerate: bool ``[]`` the last update used the fallback.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    rank: jax.Array
    degenerate: jax.Array


@weighting_factory
def imtl_g() -> Weighting:
    """IMTL-G as a weighting: ``update(gram, state, *, losses=None, preference=None)``
    returns :func:`imtl_g_weights` (``losses`` and ``preference`` are ignored)."""

    def init(num_tasks: int, dtype=jnp.float32) -> ImtlState:
        num_tasks = check_num_tasks(num_tasks)
        return ImtlState(
            **core_fields(num_tasks, dtype),
            rank=jnp.zeros((), jnp.int32),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        res = imtl_g_weights(gram)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(ImtlState, res, state)

    return Weighting(init, update)
