"""UPGrad weights: every task gradient projected onto the dual cone, then averaged.

Quinton & Rey (2024), "Jacobian descent for multi-objective optimization"
(arXiv:2406.16232), Def. of UPGrad and Prop. 1. With the Jacobian ``J`` (rows ``g_i``),
its Gramian ``G = J Jᵀ`` (``[m, m]``) and a preference ``p`` (default ``1/m``), the
projection of ``p_i g_i = Jᵀ(p_i e_i)`` onto the dual cone ``{d : J d ≥ 0}`` is
``Jᵀ v⁽ⁱ⁾`` with

    v⁽ⁱ⁾ = argmin_{v ≥ p_i e_i}  ½ vᵀ G v,                           (Prop. 1, eq. 5)

and UPGrad's update is ``Σ_i Jᵀv⁽ⁱ⁾ = Jᵀw``, i.e. the weights are ``w = Σ_i v⁽ⁱ⁾``.
The ``m`` QPs are solved at once (``jax.vmap`` of :func:`jaxpareto.weighting.qp.solve_qp`):
by its active-set method from ``v = p_i e_i`` (each step frees the tasks whose
multipliers are negative and solves on them exactly; two to four batched
factorisations on well-posed problems, m = 128 included), and by the interior point
only when a row misses the tolerance (:func:`solve_rows`).

Scale. The QPs are solved on the Jacobi-scaled Gramian ``K = N⁻¹GN⁻¹``
(``N = diag(√G_ii)``, :func:`jacobi_scale`) in ``z = N v``, and row ``i`` with the unit
bound ``z ≥ e_i`` (the problem is positively homogeneous in its bound), then mapped back
exactly: ``v⁽ⁱ⁾ = p_i n_i N⁻¹ z⁽ⁱ⁾``. The solver's tolerances are relative to the
problem's scale, so this makes them relative to each task's own scale: gradients whose
norms differ by 1e8 still give an update that conflicts with none of them (to the KKT
tolerance, in cosine). ``kkt_residual`` is measured on the scaled problems. A zero
gradient keeps ``n_i = 1`` (its row of ``K`` is zero). ``m = 1`` gives ``w = p``.

Properties (checked in ``tests/test_upgrad_dualproj.py``):

* non-conflicting: ``G w = Σ_i G v⁽ⁱ⁾ ≥ 0`` (each projection lies in the dual cone), so
  the update ``Jᵀw`` has a non-negative inner product with every task gradient;
* permutation invariant: permuting tasks (``G → PGPᵀ``, ``p → Pp``) permutes ``w``;
* invariant to a positive scaling of ``G`` and linear in ``p`` (each ``v⁽ⁱ⁾`` is
  positively homogeneous in its bound);
* ``w ≥ p`` entrywise (each ``v⁽ⁱ⁾ ≥ p_i e_i ≥ 0``); when no two gradients conflict
  (``G ≥ 0`` entrywise) ``v⁽ⁱ⁾ = p_i e_i`` and ``w = p`` (the mean).

Regularisation. TorchJD divides ``G`` by its trace (``G ← 0`` when the trace is below
``norm_eps = 1e-4``) and adds ``reg_eps · I`` (``1e-4``) so that quadprog, which needs a
positive-definite matrix, always runs. That changes the answer: the regularised
projection satisfies ``(G + εI) v ≥ 0``, not ``G v ≥ 0``, so the update can conflict
slightly (by ``ε ‖v‖``, which after trace normalisation is ~1 % of a typical eigenvalue
when ``m ≈ 100``), and the ``norm_eps`` rule makes the result depend on the gradients'
scale (small gradients give the plain mean). Our QP solver handles singular ``G``, so the
default is the exact projection (``reg_eps = 0``); ``reg_eps > 0`` reproduces TorchJD's
``G / tr G + reg_eps · I`` (without its scale-dependent ``norm_eps`` rule).

When ``G`` is singular the minimiser ``v⁽ⁱ⁾`` need not be unique; the update ``Jᵀw`` and
``G w`` are (they are the unique projections), and the solver returns one minimiser.

Status (never an exception or a NaN). Results and states start with the kit's core
fields ``weights, status, converged, iterations`` (:mod:`jaxpareto.weighting.base`);
``status`` is a :class:`jaxpareto.status.Status`:

* ``NONFINITE_INPUT``: a non-finite Gramian (or a non-finite traced preference): the
  fallback ``w = p`` (with ``p = 1/m`` for an invalid preference);
* ``DEGENERATE``: finite input where the method has no answer, with the same fallback:
  a traced preference with a non-positive entry (replaced by ``1/m``, then solved), a
  Gramian whose trace is ``≤ tiny`` without being zero (not a Gramian), or a QP flagged
  degenerate (e.g. a negative diagonal entry);
* ``MAX_ITER`` / ``NUMERICAL_ERROR``: the worst status of the QPs
  (:func:`jaxpareto.weighting.qp.solve_qp`) when one missed its tolerance;
* ``SUCCESSFUL`` otherwise, including the zero Gramian (all gradients zero: every
  ``v ≥ p_i e_i`` is optimal and the smallest, ``w = p``, is returned).

``converged`` is ``status == SUCCESSFUL``. The extra ``degenerate`` flag (kept for
existing users) says that a guard fired: it is True exactly when ``status`` is
``NONFINITE_INPUT`` or ``DEGENERATE``, or the Gramian is zero (``status`` then
``SUCCESSFUL``).

Derivative: ``w`` is differentiable w.r.t. ``gram`` and ``preference`` by implicit
differentiation of each QP's KKT system (see :mod:`jaxpareto.weighting.qp`).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_preference, working_dtype
from jaxpareto.status import Status
from jaxpareto.weighting.base import (
    Weighting,
    check_state_matches,
    core_fields,
    factory_preference,
    full_precision,
    pick_status,
    state_from_result,
    weighting_factory,
)
from jaxpareto.weighting.qp import solve_qp

__all__ = ["UPGradResult", "UPGradState", "upgrad", "upgrad_weights"]


class UPGradResult(NamedTuple):
    """Result of :func:`upgrad_weights`.

    Attributes:
      weights: ``[m]`` ``w = Σ_i v⁽ⁱ⁾`` (update ``Jᵀw``).
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status` (module docstring,
        "Status").
      converged: bool ``[]`` ``status == SUCCESSFUL``: every row's QP reached the KKT
        tolerance on usable input.
      iterations: int32 ``[]`` the largest factorisation count over the rows (active-set
        steps, plus the interior point's iterations and polishing where it ran).
      projections: ``[m, m]`` row ``i`` is ``v⁽ⁱ⁾``, the weights of the projected ``p_i g_i``.
      kkt_residual: ``[]`` the largest scale-free KKT residual over the rows.
      degenerate: bool ``[]`` a guard fired: ``status`` is ``NONFINITE_INPUT`` or
        ``DEGENERATE`` (weights ``= p``, or the preference replaced by ``1/m``), or the
        Gramian is zero (weights ``= p``, ``status`` ``SUCCESSFUL``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    projections: jax.Array
    kkt_residual: jax.Array
    degenerate: jax.Array


def _check_reg(reg_eps) -> float:
    if (
        isinstance(reg_eps, bool)
        or not isinstance(reg_eps, numbers.Real)
        or not (0 <= float(reg_eps) < float("inf"))
    ):
        raise ValueError(f"`reg_eps` must be a finite float >= 0, got {reg_eps!r}.")
    return float(reg_eps)


class Prepared(NamedTuple):
    """What :func:`prepare` hands UPGrad and DualProj."""

    gram: jax.Array  # [m, m] G' in the working dtype (zero when unusable)
    preference: jax.Array  # [m] p on the simplex (1/m when invalid)
    out_dtype: Any
    finite: jax.Array  # bool []: the Gramian is finite
    usable: jax.Array  # bool []: finite with trace > tiny
    zero: jax.Array  # bool []: finite and every entry ≤ tiny (all gradients zero)
    pref_nonfinite: jax.Array  # bool []: a traced preference held a NaN/inf
    pref_invalid: jax.Array  # bool []: a traced preference was replaced by 1/m


def prepare(gram, preference, reg_eps) -> Prepared:
    """Shared input handling of UPGrad and DualProj.

    ``G'`` is the symmetrised Gramian in the working dtype (``G / tr G + reg_eps I``
    when ``reg_eps > 0``; a zero matrix when unusable), ``p`` the (guarded) preference.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    m = gram.shape[0]
    out_dtype = jnp.result_type(gram)
    dtype = working_dtype(gram)
    if preference is None:
        p = jnp.full((m,), 1.0 / m, dtype)
        pref_nonfinite = bad_pref = jnp.asarray(False)
    else:
        p = check_preference(preference, m).astype(dtype)
        pref_nonfinite = ~jnp.all(jnp.isfinite(p))
        bad_pref = pref_nonfinite | ~jnp.all(p > 0)
        p = jnp.where(bad_pref, 1.0 / m, p)
        # The one preference rule (weighting.base.normalize_preference): r and c·r are
        # the same preference, rescaled to the simplex as linear's is.
        p = p / jnp.sum(p)
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    trace = jnp.trace(c)
    tiny = jnp.finfo(dtype).tiny
    finite = jnp.all(jnp.isfinite(c))
    usable = finite & (trace > tiny)
    zero = finite & jnp.all(jnp.abs(c) <= tiny)
    c = jnp.where(usable, c, 0)
    if reg_eps > 0:
        c = c / jnp.where(usable, trace, 1) + reg_eps * jnp.eye(m, dtype=dtype)
    return Prepared(c, p, out_dtype, finite, usable, zero, pref_nonfinite, bad_pref)


def status_of(prep: Prepared, qp_status, qp_degenerate):
    """``(status, degenerate)`` of a solve from its inputs and the QPs' worst outcome.

    ``qp_status`` / ``qp_degenerate``: the (worst) :class:`~jaxpareto.status.Status` and
    degenerate flag of the QP(s); they count only on usable input.
    """
    guard = prep.pref_invalid | (~prep.usable & ~prep.zero) | (prep.usable & qp_degenerate)
    qp_ok = ~prep.usable | (qp_status == Status.SUCCESSFUL)
    status = pick_status(
        nonfinite=~prep.finite | prep.pref_nonfinite, degenerate=guard, converged=qp_ok
    )
    # A QP that missed its tolerance keeps its own status (MAX_ITER, NUMERICAL_ERROR).
    status = jnp.where(status == Status.MAX_ITER, qp_status, status).astype(jnp.int32)
    return status, guard | ~prep.usable


def jacobi_scale(c):
    """``(K, n)`` with ``K = N⁻¹ C N⁻¹`` and ``N = diag(n)``, ``n_i = √C_ii``.

    The projections are solved on ``K`` (unit diagonal: every task on its own scale)
    and mapped back exactly (``v = N⁻¹ z``), so that the solver's tolerances, which are
    relative to the problem's scale, are relative to each task's. A zero gradient
    (``C_ii ≤ tiny``: its row of ``C`` is zero) keeps ``n_i = 1`` — the documented
    finite fallback; its row of ``K`` is then zero as well.
    """
    diag = jnp.diagonal(c)
    pos = diag > jnp.finfo(c.dtype).tiny
    n = jnp.where(pos, jnp.sqrt(jnp.where(pos, diag, 1)), 1)
    k = c / n[:, None] / n[None, :]
    return 0.5 * (k + k.T), n


@full_precision
def upgrad_weights(
    gram: jax.Array,
    preference: jax.Array | None = None,
    *,
    reg_eps: float = 0.0,
    max_iter: int | None = None,
    tol: float | None = None,
) -> UPGradResult:
    """UPGrad weights ``w = Σ_i argmin_{v ≥ p_i e_i} ½ vᵀGv`` (Quinton & Rey 2024).

    Args:
      gram: ``[m, m]`` Gramian ``G = J Jᵀ`` (symmetrised internally), ``m ≥ 1``.
      preference: ``[m]`` positive ``p`` (default ``1/m``: UPGrad's mean), rescaled to
        the simplex (``p / Σ p``, the rule of every preference in jaxpareto).
      reg_eps: ``0`` (exact, default) or TorchJD's ``G / tr G + reg_eps I``.
      max_iter, tol: passed to :func:`jaxpareto.weighting.qp.solve_qp`.

    Returns:
      :class:`UPGradResult`, floating fields in the Gramian's dtype. The weights are
      not on the simplex: ``w ≥ p`` componentwise (each ``v⁽ⁱ⁾ ≥ p_i e_i``, and
      ``v⁽ⁱ⁾ ≥ 0``), with ``w = p`` when the gradients do not conflict.
    """
    reg_eps = _check_reg(reg_eps)
    gram, preference = validate(gram, preference)
    return _upgrad(gram, preference, reg_eps, max_iter, tol)


def validate(gram, preference):
    """Trace-time checks (concrete preferences are checked for positivity here, before
    the jitted solve where they would be tracers)."""
    gram = check_gram(gram, "gram", min_tasks=1)
    if preference is not None:
        preference = check_preference(preference, gram.shape[0])
    return gram, preference


# Jitted so that eager calls reuse one compiled program per shape and configuration.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _upgrad(gram, preference, reg_eps, max_iter, tol) -> UPGradResult:
    prep = prepare(gram, preference, reg_eps)
    c, p, usable = prep.gram, prep.preference, prep.usable
    m = c.shape[0]
    k, n = jacobi_scale(c)
    # Row i's QP, min ½vᵀCv s.t. v ≥ p_i e_i, is positively homogeneous in its bound:
    # in z = N v it reads min ½zᵀKz s.t. z ≥ p_i n_i e_i, solved with the unit bound e_i
    # (every row on the same scale) and multiplied by p_i n_i.
    eye = jnp.eye(m, dtype=c.dtype)
    res = solve_rows(k, eye, usable, max_iter, tol)
    z = res.x * (p * n)[:, None]
    bounds = jnp.diag(p)  # row i: p_i e_i
    v = jnp.where(usable, z / n[None, :], bounds)
    weights = jnp.sum(v, axis=0)
    status, degenerate = status_of(prep, jnp.max(res.status), jnp.any(res.degenerate))
    return UPGradResult(
        weights=weights.astype(prep.out_dtype),
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=jnp.max(res.iterations + res.polish_iterations),
        projections=v.astype(prep.out_dtype),
        kkt_residual=jnp.where(usable, jnp.max(res.kkt_residual), 0).astype(prep.out_dtype),
        degenerate=degenerate,
    )


# Cap on the active-set method's steps before the interior point takes over (it needs
# two to four on well-posed problems; more means it is cycling).
ACTIVE_SET_STEPS = 16


def solve_rows(k, bounds, usable, max_iter, tol):
    """``argmin_{z ≥ u} ½ zᵀKz`` for every row ``u`` of ``bounds`` (``[r, m]``).

    The active-set method first (:func:`~jaxpareto.weighting.qp.solve_qp`,
    ``method="active_set"``, from ``z = u``: every bound active, so its first step frees
    exactly the tasks that conflict with ``Kᵀu``), a few batched factorisations in all;
    only if a row misses the tolerance are all rows solved again by the interior point
    (a ``lax.cond`` outside the batch, so well-posed problems never pay for it; under a
    user's ``vmap`` both branches run).
    """

    def rows(method, steps):
        return jax.vmap(
            lambda u: solve_qp(k, None, lower=u, max_iter=steps, tol=tol, method=method)
        )(bounds)

    fast = rows("active_set", ACTIVE_SET_STEPS if max_iter is None else max_iter)
    done = ~usable | jnp.all(fast.status == Status.SUCCESSFUL)
    return jax.lax.cond(done, lambda: fast, lambda: rows("interior_point", max_iter))


class UPGradState(NamedTuple):
    """State of the :func:`upgrad` / :func:`~jaxpareto.weighting.dualproj.dualproj`
    weightings: the last weights and the solver's diagnostics.

    Attributes:
      weights: ``[m]`` last weights (initially ``1/m``).
      status: int32 ``[]`` last solve's status (initially ``SUCCESSFUL``).
      converged: bool ``[]`` ``status == SUCCESSFUL`` (initially True).
      iterations: int32 ``[]`` last solve's interior-point iterations (initially 0).
      kkt_residual: ``[]`` last solve's scale-free KKT residual.
      degenerate: bool ``[]`` last solve's ``degenerate`` flag (a guard fired).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    kkt_residual: jax.Array
    degenerate: jax.Array


def make_weighting(solver, preference, reg_eps, max_iter, tol) -> Weighting:
    """``Weighting(init, update, num_tasks)`` around ``solver(gram, p, ...)``."""
    default = factory_preference(preference)
    num_tasks = None if default is None else default.shape[0]

    def init(num_tasks_: int, dtype=jnp.float32) -> UPGradState:
        core = core_fields(num_tasks_, dtype)
        if num_tasks is not None and num_tasks_ != num_tasks:
            raise ValueError(
                f"`num_tasks`={num_tasks_} does not match the preference's m={num_tasks}."
            )
        return UPGradState(
            **core,
            kkt_residual=jnp.zeros((), dtype),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del losses
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        pref = default if preference is None else preference
        res = solver(gram, pref, reg_eps=reg_eps, max_iter=max_iter, tol=tol)
        dtype = state.weights.dtype
        weights = res.weights.astype(dtype)
        return weights, state_from_result(UPGradState, res, state)

    return Weighting(init, update, num_tasks)


@weighting_factory
def upgrad(
    preference: jax.Array | None = None,
    *,
    reg_eps: float = 0.0,
    max_iter: int | None = None,
    tol: float | None = None,
) -> Weighting:
    """UPGrad as a weighting (see :func:`upgrad_weights`).

    ``init(num_tasks, dtype=jnp.float32) -> UPGradState`` (uniform weights);
    ``update(gram, state, *, losses=None, preference=None) -> (weights, state)``; an
    update-time ``preference`` overrides the factory's. Weights keep the state's dtype.
    """
    reg_eps = _check_reg(reg_eps)
    return make_weighting(upgrad_weights, preference, reg_eps, max_iter, tol)
