"""Min-norm weights (MGDA): the minimum-norm element of the convex hull of the gradients.

Désidéri (2012), "Multiple-gradient descent algorithm (MGDA) for multiobjective
optimization"; Sener & Koltun (2018), "Multi-task learning as multi-objective
optimization", eq. 3 and Alg. 1. With the task gradients ``g_1 … g_m`` and their
Gramian ``C_ij = ⟨g_i, g_j⟩`` the problem is the simplex QP

    min_{β ∈ Δ_m}  βᵀ C β,      Δ_m = {β ∈ ℝ^m : β ≥ 0, Σ_i β_i = 1}.

Its solution gives the direction ``d = Σ_i β_i g_i`` with ``⟨g_i, d⟩ ≥ ‖d‖²`` for every
task: either ``d = 0`` (the point is Pareto-stationary) or ``−d`` decreases every loss.

Solvers (``method``):

* ``"auto"``: the exact closed form for ``m = 2``; for ``m > 2`` an active-set method
  (Wolfe's 1976 minimum-norm-point algorithm, written on the Gramian). It keeps a
  support ``S`` and a feasible ``β`` supported on ``S``; each step solves the
  equality-constrained problem ``min βᵀCβ s.t. Σ_{i∈S} β_i = 1`` on ``S`` and either
  moves to its solution (then adds the index most violating ``(Cβ)_i ≥ βᵀCβ``, each
  measured on its own scale, see below) or, when that solution leaves the simplex, moves towards it up to
  the boundary and drops the index that hit zero. The sub-problem is solved through
  ``(C_SS + 1 1ᵀ) u = 1, β_S = u / Σ u`` (Jacobi-scaled, see :func:`_affine_min`) by a
  regularised Cholesky factorisation with iterative refinement (an eigenvalue-truncated
  pseudo-inverse if that fails): the matrix is positive semi-definite and singular
  exactly when the gradients on ``S`` are affinely dependent (duplicated,
  rank-deficient Gramians), and the right-hand side always lies in its range, so the
  solve still gives an exact minimiser there. Wolfe's method adds one index per
  factorisation, so it starts where a primal-dual active-set phase (Hintermüller, Ito
  & Kunisch 2003: each step frees every index whose multiplier is negative and fixes
  every negative weight at zero, many at once) ends: from all ``m`` tasks, or from the
  support of the previous step's weights (``init``, a warm start). On well-posed
  problems that phase ends at the optimum in one to three factorisations (m = 128:
  ~1 ms instead of 128 Wolfe steps); where it cycles (rank-deficient Gramians) it is
  capped and Wolfe's finite method completes from its last feasible point. The Gramian is divided by ``s = max_i C_ii`` first (the weights are scale
  invariant). Finite termination in exact arithmetic; here a
  ``jax.lax.while_loop`` with an iteration cap and static shapes (the support is a mask).
  Activity rules are scale-free: with ``n_i = √C_ii`` and ``n̄ = Σ_i β_i n_i`` (``≥ ‖d‖``)
  index ``i`` violates when ``(v − (Cβ)_i) / (n̄ (n_i + n̄)) > tol`` — the scale at which
  rounding can resolve task ``i``'s condition from the Gramian — so a task whose
  gradient is 1e-8 of another's is not lost against the largest one (the default used
  to be ``tol · max_i C_ii``); a negative weight of the sub-problem is rounding noise
  only when both it and its share ``y_i n_i / Σ|y_j| n_j`` are. The loop stops when no
  index violates, when rounding makes it cycle (the same support is accepted twice in
  a row, which cannot happen in exact arithmetic because the objective strictly
  decreases), or at the cap; ``converged`` is then set from the final point alone:
  ``kkt_residual ≤ max(√ε, tol)`` (:func:`kkt_tolerance`). ``m = 1``: ``β = 1``.
* ``"frank_wolfe"`` and ``"projected_gradient"``: the two solvers of the MGDA-UB
  reference code (``MinNormSolver.find_min_norm_element_FW`` and
  ``find_min_norm_element``, the latter being the one its training script calls),
  reproduced step for step: the best pair from ``_min_norm_2d`` as the start, the
  analytic two-point line search with its 0.999 / 0.001 clipping, the sort-based simplex
  projection, the stop when the L1 change of the iterate falls below ``tol`` (1e-5) which
  returns the *previous* iterate, and a cap of ``max_iter`` (250) iterations that the
  reference declares but never enforces (its counter is never incremented). Because of
  the clipping these methods move by at least 0.1 % of a step towards the line-search
  point, so on problems whose solution is not a vertex they usually stop at the cap
  (``converged`` False) near, not at, the optimum, and the projected-gradient variant
  can also stop early far from it (its step ``t`` is cut by the first coordinate to
  reach the boundary). For ``m = 2`` they return the two-point solution with its
  clipping, as the reference does. Differences from the reference: the cap is
  enforced, the pair search starts from ``+inf`` instead of ``1e8`` (the reference
  fails when every pair costs more), and arithmetic is in the working dtype.

KKT residual. With ``C'`` the Gramian actually solved (see normalization), ``g = C'β``,
``v = βᵀC'β``, ``n_i = √C'_ii`` and ``n̄ = Σ_i |β_i| n_i``, the optimality conditions are
``g_i ≥ v`` for all ``i`` with equality where ``β_i > 0``, and ``β ∈ Δ_m``. Each task's
condition is measured on its own scale, ``s_i = n̄ (n_i + n̄)`` (floored at ``tiny``)::

    kkt = max( max_i (v − g_i)_+ / s_i,          # dual feasibility
               max_i β_i |g_i − v| / s_i,        # complementarity
               |Σ_i β_i − 1| + Σ_i (−β_i)_+ )    # primal feasibility

It is dimensionless and does not depend on the largest gradient: at
``J = [[1,0,0],[1e-8,1e-8,0],[-1e-8,2e-8,0]]`` the wrong vertex ``[0, 1, 0]`` has
``kkt ≈ 0.3`` (it was 1e-16 relative to ``max C_ii``). It bounds the objective error:
``βᵀC'β − min_Δ ≤ 2 max_i s_i · kkt`` (convexity: ``f* ≥ f(β) + 2 min_i (g_i − v)``).

Gradient normalization (``normalization``, the reference's ``gradient_normalizers``;
"optional and not included in the paper"): each gradient is divided by ``gn_t`` before
the solve, i.e. the QP runs on ``C'_ij = C_ij / (gn_i gn_j)``:

    "none": gn_t = 1;  "l2": gn_t = ‖g_t‖ = sqrt(C_tt);  "loss": gn_t = L_t;
    "loss+": gn_t = L_t ‖g_t‖.

The returned ``weights`` are the solution on the *normalized* gradients and are used,
as in the reference training script, directly as the weights of ``Σ_t β_t L_t`` (so the
update is ``Σ_t β_t g_t``, not ``Σ_t (β_t / gn_t) g_t``). ``scales`` reports ``gn``.

Status and degeneracy (never an exception or a NaN). Every result and state starts with
the kit's core fields ``weights, status, converged, iterations``
(:mod:`jaxpareto.weighting.base`); ``status`` is a :class:`jaxpareto.status.Status`:

* ``NONFINITE_INPUT``: the Gramian (or, under ``"loss"`` / ``"loss+"``, the losses) held
  a NaN/inf: uniform weights ``1/m``, ``objective = 0``, ``kkt_residual = 0``;
* ``DEGENERATE``: a documented fallback was used on finite input: a normalizer ``gn_t``
  that is ``≤ 0`` or non-finite (a zero gradient under ``"l2"``, a zero or negative loss
  under ``"loss"``) is replaced by 1 (the solve then runs, on that Gramian); a negative
  diagonal entry (not a Gramian; solved anyway when some diagonal is positive); a
  normalized Gramian ``C'`` that is not finite or has ``max_i C'_ii ≤ tiny`` without being
  zero (uniform weights); a solver output that is not finite (uniform weights);
* ``MAX_ITER``: the loop used ``max_iter`` iterations without meeting the tolerance;
  ``NUMERICAL_ERROR``: ``"auto"`` stopped before the cap (optimality test or a
  rounding-level cycle) but its final point misses the KKT tolerance;
* ``SUCCESSFUL`` otherwise, including the zero Gramian (all gradients zero: every ``β``
  is optimal; uniform weights, ``objective = 0``, ``kkt_residual = 0``).

``converged`` is ``status == SUCCESSFUL``. The extra ``degenerate`` flag (kept for
existing users) says that a guard fired: it is True exactly when ``status`` is
``NONFINITE_INPUT`` or ``DEGENERATE``, or the Gramian is zero (``status`` then
``SUCCESSFUL``).

Differentiation: by default the weights are treated as constants (as MGDA does);
``gram`` and ``losses`` pass through ``stop_gradient``, so ``jax.grad`` through a call
gives zero cotangents rather than failing on the ``while_loop``. With
``differentiable=True`` the weights carry the implicit derivative of the KKT conditions
on the solution's support ``S`` (:mod:`jaxpareto.weighting.implicit`): with ``t = βᵀC'β``,

    (C'β)_i − t = 0  (i ∈ S),     β_i = 0  (i ∉ S),     Σ_i β_i = 1,

a linear system in ``(β, t)`` whose derivative w.r.t. ``C`` (and ``losses`` through the
normalization ``C' = C / (gn gnᵀ)``) gives ``∂β``. It is exact where the support is
locally constant (strict complementarity: ``(C'β)_i > t`` off ``S``); where ``C'_SS`` is
singular (affinely dependent gradients: the minimiser is not unique) it is the
minimum-norm generalised derivative, and at a weight just reaching zero it is the
one-sided derivative of the current support. Only ``weights`` is differentiated (the
other fields stay constants); degenerate inputs (zero or non-finite Gramian) give zero
derivatives. For the reference methods (``"frank_wolfe"``, ``"projected_gradient"``) the
same formula is applied at their (approximate) solution.
"""

from __future__ import annotations

import functools
import numbers
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_vector, working_dtype
from jaxpareto.status import Status
from jaxpareto.weighting.base import (
    Weighting,
    check_state_matches,
    core_fields,
    full_precision,
    pick_status,
    state_from_result,
    weighting_factory,
)
from jaxpareto.weighting.implicit import attach

__all__ = ["MinNormResult", "MgdaState", "kkt_residual", "min_norm_weights", "mgda"]

METHODS = ("auto", "frank_wolfe", "projected_gradient")
NORMALIZATIONS = ("none", "l2", "loss", "loss+")

# Constants of the MGDA-UB reference solver (multi_task/min_norm_solvers.py, torch file).
_REF_MAX_ITER = 250
_REF_STOP_CRIT = 1e-5
_REF_GAMMA_HI = 0.999
_REF_GAMMA_LO = 0.001
_REF_STEP_FLOOR = 1e-7


class MinNormResult(NamedTuple):
    """Result of :func:`min_norm_weights`.

    Attributes:
      weights: ``[m]`` on the simplex, the solution ``β`` on the (normalized) Gramian.
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``NONFINITE_INPUT``, ``DEGENERATE``, ``MAX_ITER`` or ``NUMERICAL_ERROR`` (module
        docstring, "Status and degeneracy").
      converged: bool ``[]`` ``status == SUCCESSFUL``: ``"auto"``: ``kkt_residual ≤
        max(√ε, tol)``, whatever stopped the loop (a wrong answer never reports
        converged); reference methods: the L1-change test stopped the loop before
        ``max_iter``; False whenever a guard other than the zero Gramian fired.
      iterations: int32 ``[]`` loop iterations (0 for the closed forms).
      objective: ``[]`` ``βᵀC'β`` of the Gramian actually solved (``C'``, after the
        normalization).
      kkt_residual: ``[]`` the scale-free KKT residual defined in the module docstring.
      scales: ``[m]`` the normalization divisors ``gn`` (after the guard).
      degenerate: bool ``[]`` a guard fired: ``status`` is ``NONFINITE_INPUT`` or
        ``DEGENERATE``, or the Gramian is zero (``status`` ``SUCCESSFUL``: every ``β`` is
        optimal).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    objective: jax.Array
    kkt_residual: jax.Array
    scales: jax.Array
    degenerate: jax.Array


# ----------------------------------------------------------------------------- helpers


def _task_scales(gram: jax.Array, weights: jax.Array):
    """Per-task norms ``n_i = √C_ii`` and the weighted norm ``n̄ = Σ_i |β_i| n_i``.

    ``n̄ ≥ ‖Σ β_i g_i‖`` (triangle inequality). Rounding in ``(Cβ)_i`` is of order
    ``ε n_i n̄`` and in ``βᵀCβ`` of order ``ε n̄²``, so ``n̄ (n_i + n̄)`` is the scale at
    which task ``i``'s optimality condition can be resolved from the Gramian.
    """
    n = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0))
    return n, jnp.abs(weights) @ n


def _violation(gram: jax.Array, weights: jax.Array) -> jax.Array:
    """``[m]`` task ``i``'s optimality violation on its own scale,
    ``(βᵀCβ − (Cβ)_i) / (n̄ (n_i + n̄))`` (:func:`_task_scales`; the denominator floored
    at ``tiny``): positive where ``i`` would lower the objective. The one rule of the
    KKT residual and of every activity decision of ``"auto"``, so that a tiny gradient
    is not lost against the largest one."""
    g = gram @ weights
    n, nbar = _task_scales(gram, weights)
    return (weights @ g - g) / jnp.maximum(nbar * (n + nbar), jnp.finfo(gram.dtype).tiny)


def kkt_residual(gram: jax.Array, weights: jax.Array) -> jax.Array:
    """Scale-free KKT residual of ``min_{β∈Δ} βᵀCβ`` at ``β`` (see module docstring).

    Each task's condition is measured on its own scale: with ``g = Cβ``, ``v = βᵀg``,
    ``n_i = √C_ii`` and ``n̄ = Σ_i |β_i| n_i``, the denominator of task ``i`` is
    ``n̄ (n_i + n̄)`` (floored at the dtype's ``tiny``; a zero gradient, ``n_i = 0``,
    is measured against ``n̄²``).

    Args:
      gram: ``[m, m]`` symmetric positive semi-definite.
      weights: ``[m]``.

    Returns:
      ``[]`` ``max(dual, complementarity, primal)``, dimensionless and unchanged when
      any one task's gradient is rescaled together with its weight's share.
    """
    slack = _violation(gram, weights)
    dual = jnp.max(jnp.maximum(slack, 0))
    comp = jnp.max(jnp.abs(weights) * jnp.abs(slack))
    primal = jnp.abs(jnp.sum(weights) - 1) + jnp.sum(jnp.maximum(-weights, 0))
    return jnp.maximum(jnp.maximum(dual, comp), primal)


def kkt_tolerance(dtype, tol: float | None = None) -> float:
    """The KKT residual below which ``"auto"`` reports ``converged``: ``max(√ε, tol)``."""
    eps = float(jnp.finfo(dtype).eps)
    return max(eps**0.5, 0.0 if tol is None else float(tol))


def _uniform(m: int, dtype) -> jax.Array:
    return jnp.full((m,), 1.0 / m, dtype)


# ------------------------------------------------------------------ exact: m = 2 and m > 2


def _two_task_exact(gram: jax.Array) -> jax.Array:
    """Exact minimiser for m = 2: ``β_1 = clip((C22 − C12) / (C11 + C22 − 2 C12), 0, 1)``.

    The denominator is ``‖g_1 − g_2‖²``; when it is zero the two gradients coincide and
    every ``β`` is optimal: ``(1/2, 1/2)`` is returned.
    """
    a, b, c = gram[0, 0], gram[0, 1], gram[1, 1]
    denom = a + c - 2 * b
    ok = denom > 0
    gamma = jnp.where(ok, (c - b) / jnp.where(ok, denom, 1), 0.5)
    gamma = jnp.clip(gamma, 0, 1)
    return jnp.stack([gamma, 1 - gamma])


def _affine_min(gram: jax.Array, support: jax.Array) -> jax.Array:
    """Minimiser of ``βᵀCβ`` over ``{β : Σ_{i∈S} β_i = 1, β_i = 0 off S}`` (any sign).

    KKT: ``C_SS β_S = v 1``, ``1ᵀβ_S = 1``. With the Jacobi scaling ``D = diag(C_SS)^½``,
    ``β = D⁻¹ z``, ``K = D⁻¹ C_SS D⁻¹`` (unit diagonal) and ``w = D⁻¹ 1 / ‖D⁻¹ 1‖`` it
    reads ``K z ∝ w``; any solution of ``M u = w``, ``M = K + w wᵀ``, gives ``z ∝ u``,
    hence ``β_S ∝ D⁻¹ u`` (normalised to sum 1). ``M`` is PSD with null space
    ``{K z = 0, wᵀz = 0}`` (affinely dependent gradients: duplicated or rank-deficient),
    which is orthogonal to ``w``: the system is consistent, and a component of ``u`` in
    that null space changes neither ``Σβ`` nor the objective, so any solution is an
    exact minimiser. The scaling keeps gradients of very different lengths from being
    lost as noise. Off the support the system is the identity with a zero right-hand
    side. Static shapes: ``support`` is a bool mask ``[m]``.

    Solve: Cholesky of the regularised ``M + δI`` (``δ = 64 m ε``; ``diag M ∈ [1, 2]``)
    with two steps of iterative refinement on ``M``, which removes the regularisation's
    bias in every direction whose eigenvalue is well above ``δ``. If the factorisation
    fails (a Gramian that is indefinite beyond rounding), an eigenvalue-truncated
    pseudo-inverse is used instead. (Cholesky is several times cheaper than ``eigh`` for
    these small matrices, on CPU and far more so on GPU.)
    """
    m = gram.shape[0]
    dtype = gram.dtype
    eps = jnp.finfo(dtype).eps
    on = support.astype(dtype)
    diag = jnp.diagonal(gram)
    d_inv = jnp.where(support & (diag > 0), jax.lax.rsqrt(jnp.where(diag > 0, diag, 1)), on)
    w = d_inv / jnp.linalg.norm(d_inv)
    k = d_inv[:, None] * gram * d_inv[None, :]
    mat = on[:, None] * on[None, :] * k + jnp.outer(w, w) + jnp.diag(1 - on)
    chol = jnp.linalg.cholesky(mat + 64 * m * eps * jnp.eye(m, dtype=dtype))

    def refined(solve):
        u = solve(w)
        for _ in range(2):
            u = u + solve(w - mat @ u)
        return u

    def by_cholesky(chol, mat):
        return refined(lambda r: jax.scipy.linalg.cho_solve((chol, True), r))

    def by_eigh(chol, mat):
        evals, evecs = jnp.linalg.eigh(mat)
        # Eigenvalues below this are rounding noise of a singular block.
        cutoff = 16 * m * eps * jnp.max(jnp.abs(evals))
        inv = jnp.where(evals > cutoff, 1 / jnp.where(evals > cutoff, evals, 1), 0)
        return refined(lambda r: evecs @ (inv * (evecs.T @ r)))

    u = jax.lax.cond(jnp.all(jnp.isfinite(chol)), by_cholesky, by_eigh, chol, mat)
    beta = d_inv * u
    return beta / jnp.sum(beta)


# Steps of the active-set start before Wolfe's method takes over (it needs a handful;
# more only when it cycles, where Wolfe's finite method is the better use of the time).
_PDAS_MAX_ITER = 12
_PDAS, _WOLFE, _RESTARTED = 0, 1, 2  # phases of _active_set


class _ActiveSetCarry(NamedTuple):
    x: jax.Array  # [m] current feasible point, zero off the support
    support: jax.Array  # [m] bool: Wolfe's support, or the active-set phase's free set
    last_major: jax.Array  # [m] bool: support of the last accepted affine minimiser
    it: jax.Array  # int32
    phase: jax.Array  # int32: _PDAS, _WOLFE or _RESTARTED
    done: jax.Array  # bool: a phase ended at a point that passed the KKT test


def _active_set(gram: jax.Array, max_iter: int, tol: float, free0: jax.Array):
    """Min-norm point of a Gramian scaled to ``max diag = 1``; one ``while_loop``.

    Returns ``(weights, iterations, capped)``. Every step solves one affine problem
    (:func:`_affine_min`) on the current index set; three phases use it:

    1. Primal-dual active set (Hintermüller, Ito & Kunisch 2003), from ``free0``: with
       the multipliers ``μ = Cβ − (βᵀCβ) 1`` of ``β ≥ 0``, the free set becomes
       ``{i ∈ F : β_i > 0} ∪ {i ∉ F : μ_i < 0}`` (``μ_i`` on task ``i``'s own scale),
       many indices at once; it ends when ``F`` reproduces itself (the optimum), or
       after ``_PDAS_MAX_ITER`` steps (it can cycle on singular problems) with the
       positive part of its last point handed to phase 2.
    2. Wolfe's minimum-norm-point method (finite; see :func:`_wolfe_step`).
    3. If a phase ends at a point that fails the KKT test (:func:`kkt_residual` above
       :func:`kkt_tolerance`: seen when rounding leaves noise-level weights on a
       singular support, e.g. next to a zero gradient), Wolfe's method once more from
       its own start, the shortest gradient.

    ``max_iter`` caps the steps of all phases together (``capped``: it ran out).
    """
    m = gram.shape[0]
    dtype = gram.dtype
    kkt_tol = kkt_tolerance(dtype, tol)
    vertex = jax.nn.one_hot(jnp.argmin(jnp.diagonal(gram)), m, dtype=dtype)
    free0 = jnp.where(jnp.any(free0), free0, True)
    no = jnp.zeros((m,), bool)

    def cond(c):
        return ~c.done & (c.it < max_iter)

    def body(c):
        y = _affine_min(gram, c.support)
        # Phase 1: the next free set, and the positive part of y as a feasible point.
        y_pos = jnp.where(c.support, jnp.maximum(y, 0), 0)
        total = jnp.sum(y_pos)
        ok = jnp.all(jnp.isfinite(y_pos)) & (total > 0)
        x_pdas = jnp.where(ok, y_pos / jnp.where(ok, total, 1), vertex)
        free = (c.support & (y_pos > 0)) | (~c.support & (_violation(gram, y) > tol))
        settled = jnp.all(free == c.support) & ok
        to_wolfe = c.it + 1 >= _PDAS_MAX_ITER
        # Phase 2 / 3: one step of Wolfe's method.
        w = _wolfe_step(gram, y, c, tol)

        pdas = c.phase == _PDAS
        x = jnp.where(pdas, x_pdas, w.x)
        support = jnp.where(pdas, jnp.where(settled | to_wolfe, x_pdas > 0, free), w.support)
        phase = jnp.where(pdas & to_wolfe & ~settled, _WOLFE, c.phase)
        ended = jnp.where(pdas, settled, w.done)
        passed = kkt_residual(gram, x) <= kkt_tol
        restart = ended & ~passed & (c.phase != _RESTARTED)
        return _ActiveSetCarry(
            x=jnp.where(restart, vertex, x),
            support=jnp.where(restart, vertex > 0, support),
            last_major=jnp.where(restart | pdas, no, w.last_major),
            it=c.it + 1,
            phase=jnp.where(restart, _RESTARTED, phase).astype(jnp.int32),
            done=ended & ~restart,
        )

    carry0 = _ActiveSetCarry(
        x=vertex,
        support=free0,
        last_major=no,
        it=jnp.zeros((), jnp.int32),
        phase=jnp.asarray(_PDAS, jnp.int32),
        done=jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, carry0)
    return out.x, out.it, ~out.done & (out.it >= max_iter)


def _wolfe_step(gram, y, c: _ActiveSetCarry, tol) -> _ActiveSetCarry:
    """One step of Wolfe's minimum-norm-point method, ``y`` the affine minimiser on
    ``c.support`` (``done``: the optimality test passed, or rounding is cycling).

    An index enters the support when its scale-free violation
    ``(v − g_i) / (n̄ (n_i + n̄))`` exceeds ``tol``. In exact arithmetic the objective
    strictly decreases from one accepted affine minimiser (major cycle) to the next, so
    two major cycles on the same support mean that rounding is cycling (an index whose
    violation is at noise level is added, then dropped with a zero step): the method
    stops there.
    """
    m = gram.shape[0]
    dtype = gram.dtype
    # Entries of y in (−z_neg, 0) are rounding noise of a zero weight, not a reason for a
    # minor cycle (which would then take a zero-length step).
    z_neg = 64 * m * jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0))
    idx = jnp.arange(m)
    # A negative weight is noise when both the weight and its share of the
    # direction, y_i n_i / Σ|y_j| n_j, are at rounding level.
    ybar = jnp.maximum(jnp.abs(y) @ norms, tiny)
    rel = y * jnp.maximum(1, norms / ybar)
    in_simplex = jnp.all(jnp.where(c.support, rel, 0) >= -z_neg)

    # Major cycle: accept y, drop its zero weights, add the most violated index.
    y_pos = jnp.where(c.support, jnp.maximum(y, 0), 0)
    y_pos = y_pos / jnp.sum(y_pos)
    sup_y = c.support & (y_pos > 0)
    score = _violation(gram, y_pos)
    j = jnp.argmax(score)
    violated = score[j] > tol
    repeat = jnp.all(sup_y == c.last_major)
    # A violated index already in the support also means the solve lost accuracy.
    stuck = violated & (repeat | sup_y[j])
    add = violated & ~stuck
    sup_major = sup_y | (add & (idx == j))

    # Minor cycle: step from x towards y until the first weight reaches zero.
    neg = c.support & (y < 0)
    ratio = jnp.where(neg, c.x / jnp.where(neg, c.x - y, 1), jnp.inf)
    k = jnp.argmin(ratio)
    theta = ratio[k]
    x_minor = c.x + theta * (y - c.x)
    x_minor = jnp.where(c.support & (idx != k), jnp.maximum(x_minor, 0), 0)
    x_minor = x_minor / jnp.sum(x_minor)
    sup_minor = c.support & (x_minor > 0)

    return c._replace(
        x=jnp.where(in_simplex, y_pos, x_minor),
        support=jnp.where(in_simplex, sup_major, sup_minor),
        last_major=jnp.where(in_simplex, sup_y, c.last_major),
        done=in_simplex & (~violated | stuck),
    )


# --------------------------------------------------------------- MGDA-UB reference solvers


def _ref_line_search(v11, v12, v22):
    """``_min_norm_element_from2``: ``min_γ ‖γ x1 + (1 − γ) x2‖²`` with clipping.

    Returns ``(γ, cost)``: ``(0.999, v11)`` if ``v12 ≥ v11``, else ``(0.001, v22)`` if
    ``v12 ≥ v22``, else ``γ = (v22 − v12) / (v11 + v22 − 2 v12)``,
    ``cost = v22 + γ (v12 − v22)``.
    """
    hi = v12 >= v11
    lo = ~hi & (v12 >= v22)
    interior = ~hi & ~lo
    denom = jnp.where(interior, v11 + v22 - 2 * v12, 1)
    gamma = -(v12 - v22) / denom
    cost = v22 + gamma * (v12 - v22)
    gamma = jnp.where(hi, _REF_GAMMA_HI, jnp.where(lo, _REF_GAMMA_LO, gamma))
    cost = jnp.where(hi, v11, jnp.where(lo, v22, cost))
    return gamma.astype(v11.dtype), cost


def _ref_best_pair(gram: jax.Array) -> jax.Array:
    """``_min_norm_2d``: the pair ``i < j`` whose clipped two-point cost is smallest.

    Ties go to the first pair in ``(i, j)`` lexicographic order (the reference loops in
    that order and replaces only on a strict improvement). Returns the start ``[m]``.
    """
    m = gram.shape[0]
    diag = jnp.diagonal(gram)
    gamma, cost = _ref_line_search(diag[:, None], gram, diag[None, :])
    upper = jnp.arange(m)[:, None] < jnp.arange(m)[None, :]
    flat = jnp.argmin(jnp.where(upper, cost, jnp.inf).ravel())
    i, j = flat // m, flat % m
    gam = gamma.ravel()[flat]
    sol = jnp.zeros((m,), gram.dtype)
    return sol.at[i].set(gam).at[j].set(1 - gam)


def _ref_simplex_projection(y: jax.Array) -> jax.Array:
    """``_projection2simplex``: Euclidean projection on Δ by sorting.

    With ``y`` sorted descending, ``τ_k = (Σ_{i≤k} y_i − 1) / k`` for the first
    ``k < m`` with ``τ_k > y_(k+1)``, else ``τ = (Σ y − 1) / m``; returns ``max(y − τ, 0)``.
    """
    m = y.shape[0]
    ys = jnp.sort(y)[::-1]
    k = jnp.arange(1, m, dtype=y.dtype)
    tau_k = (jnp.cumsum(ys)[:-1] - 1) / k
    hit = tau_k > ys[1:]
    first = jnp.argmax(hit)
    tau = jnp.where(jnp.any(hit), tau_k[first], (jnp.sum(y) - 1) / m)
    return jnp.maximum(y - tau, 0)


def _ref_next_point(x: jax.Array, grad: jax.Array) -> jax.Array:
    """``_next_point``: projected step along the centred gradient, then onto Δ.

    ``p = grad − mean(grad)``; ``t`` is the smallest of ``−x_i / p_i`` (``p_i < 0``) if
    any exceeds 1e-7 (else 1), then lowered to the smallest ``(1 − x_i) / p_i``
    (``p_i > 0``) exceeding 1e-7 if any: exactly the reference's two ``if`` statements.
    """
    m = x.shape[0]
    p = grad - jnp.sum(grad) / m
    neg, pos = p < 0, p > 0
    safe_p = jnp.where(p == 0, 1, p)
    tm1 = jnp.where(neg, -x / safe_p, -jnp.inf)
    tm2 = jnp.where(pos, (1 - x) / safe_p, -jnp.inf)
    ok1, ok2 = tm1 > _REF_STEP_FLOOR, tm2 > _REF_STEP_FLOOR
    t = jnp.where(jnp.any(ok1), jnp.min(jnp.where(ok1, tm1, jnp.inf)), 1)
    t = jnp.where(jnp.any(ok2), jnp.minimum(t, jnp.min(jnp.where(ok2, tm2, jnp.inf))), t)
    return _ref_simplex_projection(p * t + x)


class _RefCarry(NamedTuple):
    x: jax.Array
    it: jax.Array
    done: jax.Array


def _reference_solver(gram: jax.Array, method: str, max_iter: int, tol: float):
    """The MGDA-UB reference loop (FW or projected gradient); returns ``(β, it, conv)``."""
    x0 = _ref_best_pair(gram)
    if gram.shape[0] < 3:
        # The reference returns the clipped pair here ("optimal for n=2").
        return x0, jnp.zeros((), jnp.int32), jnp.asarray(True)

    def step(x):
        g = gram @ x
        v11 = x @ g
        if method == "frank_wolfe":
            t = jnp.argmin(g)
            gamma, _ = _ref_line_search(v11, g[t], gram[t, t])
            return (gamma * x).at[t].add(1 - gamma)
        p = _ref_next_point(x, -g)
        gp = gram @ p
        gamma, _ = _ref_line_search(v11, x @ gp, p @ gp)
        return gamma * x + (1 - gamma) * p

    def cond(c):
        return ~c.done & (c.it < max_iter)

    def body(c):
        new = step(c.x)
        small = jnp.sum(jnp.abs(new - c.x)) < tol
        # On the stop test the reference returns the *old* iterate.
        return _RefCarry(jnp.where(small, c.x, new), c.it + 1, small)

    out = jax.lax.while_loop(
        cond, body, _RefCarry(x0, jnp.zeros((), jnp.int32), jnp.asarray(False))
    )
    return out.x, out.it, out.done


# ----------------------------------------------------------------------- public solver


def _check_method(method) -> Literal["auto", "frank_wolfe", "projected_gradient"]:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    return method


def _check_normalization(normalization) -> Literal["none", "l2", "loss", "loss+"]:
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}.")
    return normalization


def _check_max_iter(max_iter) -> int | None:
    if max_iter is None:
        return None
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a static int >= 1, got {max_iter!r}.")
    return int(max_iter)


def _check_tol(tol) -> float | None:
    if tol is None:
        return None
    if (
        isinstance(tol, bool)
        or not isinstance(tol, numbers.Real)
        or not 0 < float(tol) < float("inf")
    ):
        raise ValueError(f"`tol` must be a static positive finite float, got {tol!r}.")
    return float(tol)


def _normalizers(gram, losses, normalization):
    """``gn`` of the reference's ``gradient_normalizers`` and whether a guard fired."""
    m = gram.shape[0]
    if normalization == "none":
        return jnp.ones((m,), gram.dtype), jnp.asarray(False)
    # sqrt of a negative diagonal (not a Gramian) is NaN and gets caught by the guard.
    norms = jnp.sqrt(jnp.diagonal(gram))
    if normalization == "l2":
        gn = norms
    elif normalization == "loss":
        gn = losses
    else:  # "loss+"
        gn = losses * norms
    bad = ~jnp.isfinite(gn) | ~(gn > 0)
    return jnp.where(bad, 1, gn), jnp.any(bad)


@full_precision
def min_norm_weights(
    gram: jax.Array,
    *,
    method: str = "auto",
    normalization: str = "none",
    losses: jax.Array | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    differentiable: bool = False,
    init: jax.Array | None = None,
) -> MinNormResult:
    """Min-norm (MGDA) weights ``argmin_{β∈Δ_m} βᵀC'β`` (Sener & Koltun 2018, eq. 3).

    See the module docstring for the algorithms, the KKT residual, the normalizations
    and the degenerate cases.

    Args:
      gram: ``[m, m]`` task Gramian ``C = G Gᵀ``, ``m ≥ 1``; symmetrised internally.
      method: ``"auto"`` (exact), ``"frank_wolfe"`` or ``"projected_gradient"``
        (the MGDA-UB reference solvers).
      normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"``.
      losses: ``[m]`` task losses; required by ``"loss"`` and ``"loss+"``.
      max_iter: iteration cap (static int ≥ 1). Default ``20 m + 50`` for ``"auto"``
        (it needs about ``2 |support|`` iterations in practice), 250 for the reference
        methods.
      tol: ``"auto"``: an index enters the support when its scale-free violation
        ``(βᵀC'β − (C'β)_i) / (n̄ (n_i + n̄))`` exceeds ``tol``, default ``8 m ε`` (ε the working dtype's machine epsilon); reference methods:
        the L1-change stop, default 1e-5.
      differentiable: ``False`` (default): the weights are constants to ``jax.grad``;
        ``True``: they carry the implicit derivative of the KKT system w.r.t. ``gram``
        and ``losses`` (module docstring; reverse mode only).
      init: ``[m]`` a warm start for ``"auto"``: the previous weights, whose support
        (``β_i > 0``) is the active-set phase's first free set (default: every task).
        Only the speed depends on it, never the answer; ignored by the reference
        methods.

    Returns:
      :class:`MinNormResult`; floating fields have the dtype of the inputs (half
      precision is solved in float32 and cast back).

    Example::

        losses, jac = jp.value_and_jacobian(loss_fn)(params, batch)
        res = jp.min_norm_weights(jp.gramian(jac))
        direction = jp.combine(jac, res.weights)   # common descent direction (or 0)
    """
    method = _check_method(method)
    normalization = _check_normalization(normalization)
    gram = check_gram(gram, "gram", min_tasks=1)
    m = gram.shape[0]
    if normalization in ("loss", "loss+"):
        if losses is None:
            raise ValueError(
                f"`losses` ([{m}] task losses) is required by normalization={normalization!r}."
            )
    if losses is not None:
        losses = check_vector(losses, m, "losses")
    if init is not None:
        init = check_vector(init, m, "init")
    max_iter, tol = _check_max_iter(max_iter), _check_tol(tol)
    if max_iter is None:
        max_iter = 20 * m + 50 if method == "auto" else _REF_MAX_ITER

    if not isinstance(differentiable, bool):
        raise TypeError(f"`differentiable` must be a bool, got {differentiable!r}.")

    # The solve itself is not differentiated (a while_loop has no reverse-mode rule):
    # by default the weights are constants (MGDA treats them so) and jax.grad gives zero
    # cotangents; with differentiable=True the implicit derivative is attached.
    res = _solve(
        jax.lax.stop_gradient(gram),
        None if losses is None else jax.lax.stop_gradient(losses),
        None if init is None else jax.lax.stop_gradient(init),
        method,
        normalization,
        max_iter,
        tol,
    )
    if differentiable:
        res = res._replace(weights=_implicit_weights(res, gram, losses, normalization))
    return res


def _normalized_gram(gram, losses, normalization, dtype):
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    if losses is not None:
        losses = losses.astype(dtype)
    gn, _ = _normalizers(c, losses, normalization)
    return c / (gn[:, None] * gn[None, :])


def _kkt_rows(normalization, z, params, aux):
    """KKT residual on a fixed support (module docstring), for the implicit derivative."""
    gram, losses = params
    support, scale = aux
    m = gram.shape[0]
    c = _normalized_gram(gram, losses, normalization, z.dtype)
    beta, t = z[:m], z[m]
    rows = jnp.where(support, (c @ beta) / scale - t, beta)
    return jnp.concatenate([rows, (jnp.sum(beta) - 1)[None]])


def _implicit_weights(res: MinNormResult, gram, losses, normalization) -> jax.Array:
    w = res.weights
    dtype = working_dtype(w)
    sg = jax.lax.stop_gradient
    c = _normalized_gram(sg(gram), None if losses is None else sg(losses), normalization, dtype)
    scale = jnp.max(jnp.diagonal(c))
    usable = jnp.all(jnp.isfinite(c)) & (scale > jnp.finfo(dtype).tiny)
    scale = jnp.where(usable, scale, 1)
    beta = w.astype(dtype)
    t = beta @ jnp.where(usable, c, 0) @ beta / scale
    z = attach(
        functools.partial(_kkt_rows, normalization),
        (gram, losses),
        (beta > 0, scale),
        jnp.concatenate([beta, t[None]]),
    )
    return jnp.where(usable, z[: w.shape[0]].astype(w.dtype), sg(w))


@functools.partial(jax.jit, static_argnames=("method", "normalization", "max_iter", "tol"))
def _solve(gram, losses, init, method, normalization, max_iter, tol) -> MinNormResult:
    # Jitted so that eager calls reuse one compiled program per shape and configuration
    # instead of re-tracing the while loops; inside a user's jit it is simply inlined.
    # The m×m products are cheap and the tolerances assume full precision: no TF32 /
    # bf16 passes on accelerators whose default float32 matmul uses them.
    with jax.default_matmul_precision("highest"):
        return _solve_impl(gram, losses, init, method, normalization, max_iter, tol)


def _solve_impl(gram, losses, init, method, normalization, max_iter, tol) -> MinNormResult:
    m = gram.shape[0]
    inputs = (gram,) if losses is None else (gram, losses)
    out_dtype = jnp.result_type(*inputs)
    dtype = working_dtype(*inputs)
    if tol is None:
        tol = 8 * m * float(jnp.finfo(dtype).eps) if method == "auto" else _REF_STOP_CRIT

    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    # Non-finite input (NONFINITE_INPUT): the Gramian, or the losses where they are used.
    nonfinite = ~jnp.all(jnp.isfinite(c))
    if losses is not None:
        losses = losses.astype(dtype)
        if normalization in ("loss", "loss+"):
            nonfinite = nonfinite | ~jnp.all(jnp.isfinite(losses))
    gn, gn_bad = _normalizers(c, losses, normalization)
    c = c / (gn[:, None] * gn[None, :])

    tiny = jnp.finfo(dtype).tiny
    scale = jnp.max(jnp.diagonal(c))
    finite = jnp.all(jnp.isfinite(c))
    usable = finite & (scale > tiny)
    zero = finite & jnp.all(jnp.abs(c) <= tiny)  # every β is optimal
    # A negative diagonal entry cannot come from gradients: solved anyway, but flagged.
    not_gram = jnp.any(jnp.diagonal(c) < 0)
    # Solve on a harmless stand-in when the Gramian is unusable, so that no NaN or
    # division by zero is traced into the loop.
    safe = jnp.where(usable, c, jnp.eye(m, dtype=dtype))

    if m == 1:
        # One task: β = 1 is the only point of Δ_1; the update is the gradient.
        w, it, conv = jnp.ones((1,), dtype), jnp.zeros((), jnp.int32), jnp.asarray(True)
        capped = jnp.asarray(False)
    elif method == "auto":
        # Scale to max diag 1: weights are scale invariant, tolerances become relative,
        # and float32 Gramians of large gradients do not overflow in the solve.
        scaled = safe / jnp.where(usable, scale, 1)
        if m == 2:
            w, it = _two_task_exact(scaled), jnp.zeros((), jnp.int32)
            capped = jnp.asarray(False)
        else:
            # Start: the active-set (PDAS) phase from every index, or from the support
            # of the previous weights (a warm start); Wolfe's method finishes.
            free0 = jnp.ones((m,), bool) if init is None else init.astype(dtype) > 0
            w, it, capped = _active_set(scaled, max_iter, tol, free0)
        # Honest status: converged exactly when the scale-free KKT residual is small,
        # whatever made the loop stop (optimality test, rounding-level cycle, cap).
        conv = kkt_residual(scaled, w) <= kkt_tolerance(dtype, tol)
    else:
        # Unscaled, as the reference: its 1e-7 step floor and default step t = 1 are not
        # scale invariant.
        w, it, conv = _reference_solver(safe, method, max_iter, tol)
        capped = it >= max_iter

    w_ok = jnp.all(jnp.isfinite(w))
    uniform = _uniform(m, dtype)
    w = jnp.where(usable & w_ok, w, uniform)
    c_eval = jnp.where(usable, c, 0)
    objective = w @ c_eval @ w
    kkt = jnp.where(usable, kkt_residual(c_eval, w), 0)
    solved = jnp.where(usable, conv & w_ok, zero)
    it = jnp.asarray(it, jnp.int32)
    # The zero Gramian is not degenerate for the status: every β is optimal (uniform is
    # exact); every other guard means the documented fallback was used.
    guard = gn_bad | (~usable & ~zero) | ~w_ok | not_gram
    status = pick_status(nonfinite=nonfinite, degenerate=guard, converged=solved)
    # Not converged before the cap ("auto": its final point misses the KKT tolerance
    # after the optimality test or a rounding-level cycle stopped it): a numerical
    # shortfall, not an exhausted max_iter.
    status = jnp.where(
        (status == Status.MAX_ITER) & ~capped, Status.NUMERICAL_ERROR, status
    ).astype(jnp.int32)
    return MinNormResult(
        weights=w.astype(out_dtype),
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=it,
        objective=objective.astype(out_dtype),
        kkt_residual=kkt.astype(out_dtype),
        scales=gn.astype(out_dtype),
        degenerate=guard | ~usable,
    )


# ----------------------------------------------------------------------- weighting


class MgdaState(NamedTuple):
    """State of the :func:`mgda` weighting: the last solve's weights and diagnostics.

    Attributes:
      weights: ``[m]`` last weights (initially ``1/m``).
      status: int32 ``[]`` last solve's :attr:`MinNormResult.status` (initially
        ``SUCCESSFUL``).
      converged: bool ``[]`` ``status == SUCCESSFUL`` (initially True).
      iterations: int32 ``[]`` last solver iterations (initially 0).
      objective: ``[]`` last ``βᵀC'β``.
      degenerate: bool ``[]`` last solve's :attr:`MinNormResult.degenerate` (a guard
        fired: non-finite or degenerate input, or a zero Gramian).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    objective: jax.Array
    degenerate: jax.Array


@weighting_factory
def mgda(
    *,
    method: Literal["auto", "frank_wolfe", "projected_gradient"] = "auto",
    normalization: Literal["none", "l2", "loss", "loss+"] = "none",
    max_iter: int | None = None,
    tol: float | None = None,
    warm_start: bool = True,
) -> Weighting:
    """MGDA as a weighting: the min-norm weights of the current Gramian.

    Désidéri (2012); Sener & Koltun (2018). ``init(num_tasks, dtype=jnp.float32) ->
    MgdaState`` (uniform weights); ``update(gram, state, *, losses=None,
    preference=None) -> (weights, state)``: :func:`min_norm_weights` with the given
    ``method``, ``normalization``, ``max_iter`` and ``tol``; ``losses`` is required by
    ``"loss"`` / ``"loss+"``; ``preference`` is ignored (MGDA has none). Weights and
    state keep the state's dtype so that the state can be carried through
    ``jax.lax.scan``. ``warm_start`` (default True) starts ``"auto"`` from the support
    of the state's last weights (``init=`` of :func:`min_norm_weights`): the answer is
    the same, consecutive steps' supports usually agree and the solve is then one or
    two factorisations.
    """
    if not isinstance(warm_start, bool):
        raise TypeError(f"`warm_start` must be a bool, got {warm_start!r}.")
    method = _check_method(method)
    normalization = _check_normalization(normalization)
    max_iter, tol = _check_max_iter(max_iter), _check_tol(tol)

    def init(num_tasks: int, dtype=jnp.float32) -> MgdaState:
        return MgdaState(
            **core_fields(num_tasks, dtype),
            objective=jnp.zeros((), dtype),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        res = min_norm_weights(
            gram,
            method=method,
            normalization=normalization,
            losses=losses,
            max_iter=max_iter,
            tol=tol,
            init=state.weights if warm_start else None,
        )
        dtype = state.weights.dtype
        weights = res.weights.astype(dtype)
        return weights, state_from_result(MgdaState, res, state)

    return Weighting(init, update)
