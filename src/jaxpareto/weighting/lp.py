"""A jittable, vmappable dense linear-program solver over the probability simplex.

Solves

    max_β  cᵀβ   s.t.  β ∈ Δ_m = {β ≥ 0, 1ᵀβ = 1},
                       (A β)_k ≥ b_k   for every row k with mask[k] = True,

the form of the EPO search LP (Mahapatra & Rajan 2020, eq. 24). Rows with
``mask[k] = False`` are ignored, so the set of constraints can change from call to call
while every shape stays static (no Python index sets, no recompilation).

Method: a two-phase *revised* simplex method on the standard form

    [ 1ᵀ   0    ] [β]   [ 1 ]       β, s, t ≥ 0,
    [ σA  −σI   ] [s] + t = [ σb ],   σ_k = −1 if b_k ≤ 0 else +1,

with one surplus ``s_k`` per constraint row and one artificial ``t_i`` per row (the sign
flip ``σ`` makes the right-hand side non-negative, so a row with ``b_k ≤ 0`` starts with
its surplus basic and needs no artificial). Phase 1 minimises ``Σ t``; a positive optimum
means the LP is infeasible. Phase 2 maximises ``cᵀβ`` from the phase-1 basis; artificials
still basic at level zero are forced to leave at the first pivot whose column touches
their row (ratio 0), and artificials never re-enter. Masked-out rows become the trivial
row ``s_k = 1`` whose surplus stays basic forever.

The inverse of the ``[k+1, k+1]`` basis matrix starts as the identity (the initial
basis is made of surplus and artificial unit columns) and is updated in product form at
each pivot; every solve with it (basic values, simplex multipliers, the entering column)
gets one step of iterative refinement against the true basis matrix, and the final
vertex two, so rounding does not accumulate over pivots. Only matrix-vector products
are used (no LAPACK call inside the loop): the problems are tiny (``m`` tasks, at most
``m + 1`` rows), and gathers/scatters are written as one-hot products.

Pivoting: Dantzig's rule (most negative reduced cost) while pivots make progress; after
``k + 1`` consecutive degenerate pivots it switches to Bland's rule (smallest eligible
index enters, smallest basic index leaves among ratio ties), which cannot cycle; a
non-degenerate pivot switches back. So the method terminates in exact arithmetic, and
``max_iter`` caps it in floating point.

Scaling and tolerances: each constraint row ``(A_k, b_k)`` is divided by its largest
absolute entry and ``c`` by ``max|c|`` (neither changes the solution); with
``col_scale = s`` the columns are scaled first, the solver working on ``z = s ⊙ β``
(the simplex row becomes ``Σ z_i / s_i = 1``). For Gramian rows ``A = C`` and
``s ∝ √diag C`` the scaled rows are the correlation matrix ``D⁻¹CD⁻¹``: each row on its
own task's scale at any spread of gradient norms (EPO uses this). Rows are thus
scale-free: a row made of rounding noise is a real constraint here (HiGHS would drop
coefficients below 1e-9), so callers zero such rows (:mod:`~jaxpareto.weighting.epo`
does). Pivot and phase-1 feasibility tolerance ``0.1 √ε`` (1.5e-9 in float64, 3.5e-5 in
float32), reduced-cost tolerance ``ε^(2/3)`` (3.7e-11 / 2.4e-5), on the scaled data.

Under ``jax.vmap`` the loop runs until every LP of the batch has finished (finished ones
are frozen); under ``jax.jit`` nothing is decided on the host.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_float, working_dtype
from jaxpareto.status import Status
from jaxpareto.weighting.base import full_precision

# The LP's outcomes, by their former names (members of :class:`jaxpareto.status.Status`).
OPTIMAL = Status.SUCCESSFUL
INFEASIBLE = Status.INFEASIBLE
MAX_ITER = Status.MAX_ITER
#: Non-finite input on an active row / in ``c``, or a numerical breakdown (an unbounded
#: ratio test, impossible in exact arithmetic since the feasible set is bounded).
NUMERICAL_ERROR = Status.NUMERICAL_ERROR

_RUNNING = -1


class LPResult(NamedTuple):
    """Result of :func:`linprog_simplex`.

    Attributes:
      x: ``[m]`` the maximiser ``β`` on the simplex when ``status == OPTIMAL``; otherwise
        the uniform point ``1/m`` (finite, on the simplex, not necessarily feasible).
      objective: ``[]`` ``cᵀx``.
      status: ``[]`` int32, a :class:`~jaxpareto.status.Status`: ``SUCCESSFUL`` (alias
        ``OPTIMAL``), ``INFEASIBLE``, ``MAX_ITER`` or ``NUMERICAL_ERROR``.
      iterations: ``[]`` int32, the number of simplex pivots (both phases).
    """

    x: jax.Array
    objective: jax.Array
    status: jax.Array
    iterations: jax.Array


def default_max_iter(m: int, k: int) -> int:
    """The default pivot cap for ``m`` variables and ``k`` constraint rows.

    On random LPs and EPO instances the simplex needs at most about ``m + k`` pivots
    (worst seen: 43 at ``m = 20, k = 21``); the cap leaves a wide margin for Bland's
    rule on degenerate problems.
    """
    return 10 * (m + k + 1) + 50


def _tolerances(dtype):
    eps = float(jnp.finfo(dtype).eps)
    # Pivot / feasibility: a candidate pivot smaller than ~sqrt(eps) (rows are scaled to
    # max-abs 1) would amplify rounding by more than 1/sqrt(eps); phase-1 residuals below
    # that level are rounding, not infeasibility.
    tol_piv = 0.1 * eps**0.5
    tol_feas = 0.1 * eps**0.5
    # Optimality: reduced costs are accurate to a few hundred eps on scaled problems;
    # eps^(2/3) keeps the objective error far below 1e-9 in float64.
    tol_opt = eps ** (2.0 / 3.0)
    return tol_piv, tol_opt, tol_feas


def _validate(c, a_ub, b_ub, mask, max_iter):
    c = check_float(c, "c")
    if c.ndim != 1 or c.shape[0] < 1:
        raise ValueError(f"`c` must be a vector [m] with m >= 1, got shape {c.shape}.")
    m = c.shape[0]
    a_ub = check_float(a_ub, "a_ub")
    if a_ub.ndim != 2 or a_ub.shape[1] != m:
        raise ValueError(f"`a_ub` must have shape [k, {m}] to match `c`, got {a_ub.shape}.")
    k = a_ub.shape[0]
    b_ub = check_float(b_ub, "b_ub")
    if b_ub.shape != (k,):
        raise ValueError(f"`b_ub` must have shape ({k},) to match `a_ub`, got {b_ub.shape}.")
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`mask` must be a boolean array, got dtype {mask.dtype}.")
    if mask.shape != (k,):
        raise ValueError(f"`mask` must have shape ({k},) to match `a_ub`, got {mask.shape}.")
    if max_iter is None:
        max_iter = default_max_iter(m, k)
    elif isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive int or None, got {max_iter!r}.")
    return c, a_ub, b_ub, mask, max_iter


def _inverse_scales(col_scale):
    """``1 / s`` with non-positive or non-finite entries replaced by the largest valid
    scale (1 if none): any positive scale gives the same LP, only its conditioning."""
    valid = jnp.isfinite(col_scale) & (col_scale > 0)
    top = jnp.max(jnp.where(valid, col_scale, 0))
    s = jnp.where(valid, col_scale, jnp.where(top > 0, top, 1))
    return 1 / s


class _Loop(NamedTuple):
    basis: jax.Array  # [R] int32, the column basic in each row
    inv: jax.Array  # [R, R] inverse of the basis matrix, updated in product form
    phase: jax.Array  # int32, 1 or 2
    status: jax.Array  # int32, _RUNNING until decided
    pivots: jax.Array  # int32
    stalls: jax.Array  # int32, consecutive degenerate pivots


@full_precision
def linprog_simplex(
    c: jax.Array,
    a_ub: jax.Array,
    b_ub: jax.Array,
    mask: jax.Array,
    *,
    max_iter: int | None = None,
    col_scale: jax.Array | None = None,
) -> LPResult:
    """Maximise ``cᵀβ`` over the simplex subject to masked rows ``(Aβ)_k ≥ b_k``.

    Args:
      c: ``[m]`` objective (maximised).
      a_ub: ``[k, m]`` constraint rows (``k`` may be 0).
      b_ub: ``[k]`` right-hand sides.
      mask: ``[k]`` bool; row ``k`` is enforced only where ``mask[k]`` is True.
      max_iter: cap on simplex pivots (static); default :func:`default_max_iter`.
      col_scale: optional ``[m]`` positive column scales ``s``: the pivots and
        tolerances then act on ``z = s ⊙ β`` (columns ``A_{·i} / s_i``, simplex row
        ``Σ z_i / s_i = 1``), which does not change the solution. For a Gramian
        ``A = C`` the choice ``s = √diag C`` makes the constraint rows the unit-diagonal
        correlation matrix ``D⁻¹CD⁻¹``, so every row is read on its own task's scale
        (column equilibration; see the module docstring). Non-positive or non-finite
        entries are replaced by the largest valid one.

    Returns:
      :class:`LPResult`. ``x`` follows the floating dtype of the inputs (float16/bfloat16
      inputs are solved in float32 and cast back). Non-finite values in ``c`` or in an
      active row give ``NUMERICAL_ERROR``; an infeasible LP gives ``INFEASIBLE``; both,
      like ``MAX_ITER``, return the uniform point.

    Raises:
      ValueError: at trace time, naming the argument: wrong shapes of ``c``, ``a_ub``,
        ``b_ub``, ``mask`` or ``col_scale``, or a ``max_iter`` that is not a positive int.
      TypeError: non-floating ``c``, ``a_ub`` or ``b_ub``, or a non-boolean ``mask``.
    """
    c, a_ub, b_ub, mask, max_iter = _validate(c, a_ub, b_ub, mask, max_iter)
    if col_scale is not None:
        col_scale = jnp.asarray(col_scale)
        if col_scale.shape != (c.shape[0],):
            raise ValueError(
                f"`col_scale` must have shape ({c.shape[0]},) to match `c`, got {col_scale.shape}."
            )
    return _linprog(c, a_ub, b_ub, mask, col_scale, max_iter)


# Jitted so that eager calls reuse one compiled program per shape and configuration
# (inside a user's jit it is inlined); the checks above run at trace time.
@functools.partial(jax.jit, static_argnums=(5,))
def _linprog(c, a_ub, b_ub, mask, col_scale, max_iter) -> LPResult:
    out_dtype = jnp.result_type(c, a_ub, b_ub)
    dtype = working_dtype(c, a_ub, b_ub)
    c, a_ub, b_ub = c.astype(dtype), a_ub.astype(dtype), b_ub.astype(dtype)
    m, k = a_ub.shape[1], a_ub.shape[0]
    if col_scale is None:
        inv_s = jnp.ones((m,), dtype)
    else:
        inv_s = _inverse_scales(col_scale.astype(dtype))
    # Work on z = s ⊙ β: c and the columns of A are divided by s and the simplex row is
    # (1/s)ᵀ z = 1 (right-hand side 1). The pivot and feasibility tolerances act on z,
    # so s should make the solution's z of order 1 (the caller knows its scales).
    c_beta = c  # the objective in β, for the reported value
    c = c * inv_s
    a_ub = a_ub * inv_s[None, :]
    num_rows, num_real = k + 1, m + k  # real columns: β then surplus s
    num_cols = num_real + num_rows  # then one artificial per row
    tol_piv, tol_opt, tol_feas = _tolerances(dtype)

    # Non-finite data on an ignored row is irrelevant; on an active row or in c it makes
    # the LP meaningless, so it becomes a status (the loop then runs on zeros).
    a_act = jnp.where(mask[:, None], a_ub, 0)
    b_act = jnp.where(mask, b_ub, 0)
    finite = jnp.all(jnp.isfinite(c)) & jnp.all(jnp.isfinite(a_act)) & jnp.all(jnp.isfinite(b_act))
    c_f = jnp.where(jnp.isfinite(c), c, 0)
    a_act = jnp.where(jnp.isfinite(a_act), a_act, 0)
    b_act = jnp.where(jnp.isfinite(b_act), b_act, 0)

    # Row scaling: divide (A_k, b_k) by its max-abs entry; a masked row becomes the
    # trivial row 0ᵀβ ≥ -1, whose surplus is basic at value 1 from start to end.
    row_scale = jnp.maximum(jnp.max(jnp.abs(a_act), axis=1, initial=0), jnp.abs(b_act))
    row_scale = jnp.where(row_scale > 0, row_scale, 1)
    a_s = jnp.where(mask[:, None], a_act / row_scale[:, None], 0)
    b_s = jnp.where(mask, b_act / row_scale, -1)
    c_scale = jnp.max(jnp.abs(c_f))
    c_s = c_f / jnp.where(c_scale > 0, c_scale, 1)

    sign = jnp.where(b_s <= 0, -1, 1).astype(dtype)
    top = jnp.concatenate([inv_s[None, :], jnp.zeros((1, k), dtype)], axis=1)
    bottom = jnp.concatenate([sign[:, None] * a_s, -sign[:, None] * jnp.eye(k, dtype=dtype)], 1)
    a_full = jnp.concatenate(
        [jnp.concatenate([top, bottom], axis=0), jnp.eye(num_rows, dtype=dtype)], axis=1
    )  # [R, N]
    rhs = jnp.concatenate([jnp.ones((1,), dtype), sign * b_s])  # [R], >= 0
    cost1 = jnp.concatenate([jnp.zeros(num_real, dtype), jnp.ones(num_rows, dtype)])
    cost2 = jnp.concatenate([-c_s, jnp.zeros(k + num_rows, dtype)])  # minimise -cᵀβ

    rows = jnp.arange(k)
    basis0 = jnp.concatenate(
        [
            jnp.array([num_real], jnp.int32),  # artificial of the simplex row
            jnp.where(sign < 0, m + rows, num_real + 1 + rows).astype(jnp.int32),
        ]
    )
    col_ids = jnp.arange(num_cols)
    real_col = col_ids < num_real

    def refine(inv, mat, rhs_, x):
        # One step of iterative refinement with the (approximate) inverse: removes the
        # rounding that the rank-one updates accumulate.
        return x + inv @ (rhs_ - mat @ x)

    def body(s: _Loop) -> _Loop:
        # Gathers / scatters are written as one-hot products and selects: exact here
        # (the data are finite) and much cheaper to compile than XLA gather/scatter.
        select_basis = (s.basis[:, None] == col_ids[None, :]).astype(dtype)  # [R, N]
        basis_matrix = a_full @ select_basis.T
        x_b = refine(s.inv, basis_matrix, rhs, s.inv @ rhs)
        cost = jnp.where(s.phase == 1, cost1, cost2)
        c_b = select_basis @ cost
        y = refine(s.inv.T, basis_matrix.T, c_b, s.inv.T @ c_b)
        reduced = cost - a_full.T @ y
        is_basic = jnp.any(s.basis[:, None] == col_ids[None, :], axis=0)
        candidate = (~is_basic) & real_col & (reduced < -tol_opt)
        has_candidate = jnp.any(candidate)
        bland = s.stalls >= num_rows
        q = jnp.where(
            bland,
            jnp.argmax(candidate),  # first eligible index
            jnp.argmin(jnp.where(candidate, reduced, jnp.inf)),
        )
        col = a_full @ (col_ids == q).astype(dtype)
        w = refine(s.inv, basis_matrix, col, s.inv @ col)
        # Ratio test. Basic artificials in phase 2 sit at (numerically) zero and must
        # stay there: any pivot touching their row removes them at ratio 0.
        pos = w > tol_piv
        art_row = (s.basis >= num_real) & (s.phase == 2) & (jnp.abs(w) > tol_piv)
        ratio = jnp.where(pos, jnp.maximum(x_b, 0) / jnp.where(pos, w, 1), jnp.inf)
        ratio = jnp.where(art_row, 0, ratio)
        min_ratio = jnp.min(ratio)
        bounded = jnp.isfinite(min_ratio)
        tie = ratio <= min_ratio + tol_feas
        leave = jnp.where(
            bland,
            jnp.argmin(jnp.where(tie, s.basis, num_cols)),  # smallest basic index
            jnp.argmax(jnp.where(tie, jnp.abs(w), -jnp.inf)),  # largest pivot: stabler
        )
        pivot = has_candidate & bounded
        leave_row = jnp.arange(num_rows) == leave
        basis = jnp.where(pivot & leave_row, q.astype(jnp.int32), s.basis)
        # Product-form update of B⁻¹ for the column exchange in row `leave`.
        onehot_r = leave_row.astype(dtype)
        w_r = jnp.where(pivot, onehot_r @ w, 1)
        eta = (w - onehot_r) / w_r
        inv = jnp.where(pivot, s.inv - jnp.outer(eta, onehot_r @ s.inv), s.inv)
        degenerate = min_ratio <= tol_feas
        stalls = jnp.where(pivot & degenerate, s.stalls + 1, 0)

        phase1_value = jnp.dot(select_basis @ cost1, x_b)
        infeasible = (s.phase == 1) & (phase1_value > tol_feas)
        status = jnp.where(
            has_candidate,
            jnp.where(bounded, _RUNNING, NUMERICAL_ERROR),
            jnp.where(s.phase == 2, OPTIMAL, jnp.where(infeasible, INFEASIBLE, _RUNNING)),
        )
        phase = jnp.where(has_candidate, s.phase, 2)
        return _Loop(
            basis,
            inv,
            phase.astype(jnp.int32),
            status.astype(jnp.int32),
            s.pivots + pivot.astype(jnp.int32),
            stalls.astype(jnp.int32),
        )

    def cond(s: _Loop):
        return (s.status == _RUNNING) & (s.pivots < max_iter)

    init = _Loop(
        basis=basis0,
        inv=jnp.eye(num_rows, dtype=dtype),  # the initial basis matrix is the identity
        phase=jnp.int32(1),
        status=jnp.where(finite, _RUNNING, NUMERICAL_ERROR).astype(jnp.int32),
        pivots=jnp.int32(0),
        stalls=jnp.int32(0),
    )
    out = jax.lax.while_loop(cond, body, init)
    status = jnp.where(out.status == _RUNNING, MAX_ITER, out.status).astype(jnp.int32)

    # Two more refinement steps from the final basis: the vertex is then as accurate as a
    # fresh factorisation would give, whatever the pivot history.
    select_basis = (out.basis[:, None] == col_ids[None, :]).astype(dtype)
    basis_matrix = a_full @ select_basis.T
    x_b = out.inv @ rhs
    x_b = refine(out.inv, basis_matrix, rhs, refine(out.inv, basis_matrix, rhs, x_b))
    x_full = select_basis.T @ x_b
    beta = jnp.maximum(x_full[:m], 0) * inv_s  # β = z / s
    total = jnp.sum(beta)
    ok = (status == OPTIMAL) & (total > 0) & jnp.all(jnp.isfinite(beta))
    uniform = jnp.full((m,), 1.0 / m, dtype)
    beta = jnp.where(ok, beta / jnp.where(total > 0, total, 1), uniform)
    status = jnp.where((status == OPTIMAL) & ~ok, NUMERICAL_ERROR, status).astype(jnp.int32)
    objective = jnp.dot(jnp.where(jnp.isfinite(c_beta), c_beta, 0), beta)
    return LPResult(beta.astype(out_dtype), objective.astype(out_dtype), status, out.pivots)
