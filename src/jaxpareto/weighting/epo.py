"""Exact Pareto Optimal (EPO) search weights (Mahapatra & Rajan, ICML 2020).

EPO search moves the loss vector ``l`` towards the Pareto point on the ray ``r ⊙ l ∝ 1``
of a preference ``r > 0``. One step, written on the task Gramian ``C = G Gᵀ``
(``c_j = C[:, j]``; the paper's ``C = GᵀG`` with gradients as columns):

* relative losses ``l̂ = r ⊙ l / Σ_j r_j l_j`` and the non-uniformity (eq. 9)
  ``μ = KL(l̂ ‖ 1/m) = Σ_j l̂_j log(m l̂_j)``;
* adjustments (eq. 13) ``a_j = r_j (log(m l̂_j) − μ)`` — ``adjustment="paper"``; the
  authors' code omits the factor ``r_j``: ``a_j = log(m l̂_j) − μ`` —
  ``adjustment="reference"``. The paper form satisfies ``aᵀ l = 0`` (Claim 1), the
  reference form ``aᵀ (r ⊙ l) = 0``; with ``r = 1`` they coincide;
* ``J = {j : aᵀc_j > 0}``, ``J̄ = [m] − J``, ``J* = {j : r_j l_j = max}`` (ties kept);
* the LP (eq. 24) over the simplex ``Δ_m``:

  - balance mode (``μ > eps``): ``max βᵀ(C a)`` s.t. ``βᵀc_j ≥ aᵀc_j · 1[J ≠ ∅]`` for
    ``j ∈ J̄ − J*`` and ``βᵀc_j ≥ 0`` for ``j ∈ J*``; rows ``j ∈ J − J*`` are dropped
    when ``J ≠ ∅`` (the reference code sets their right-hand side to ``−∞``), so with
    ``J = ∅`` every row reads ``βᵀc_j ≥ 0``;
  - descent mode (``μ ≤ eps``, the paper's ``μ = 0`` case, reference ``eps = 1e-4``):
    ``max βᵀ(C 1)`` s.t. ``βᵀc_j ≥ 0`` for all ``j`` — ``descent="relaxed"`` (eq. 24);
    ``descent="restricted"`` (App. B, the reference code's default) adds
    ``βᵀ(C a) ≥ min(max_j (C a)_j, 0)``, which damps the oscillation around the ray;

* the update direction is ``d = Gᵀβ`` (:func:`jaxpareto.combine`), ``θ ← θ − η d``.

The LP is solved in JAX by :func:`jaxpareto.weighting.lp.linprog_simplex` (static
shapes: the rows ``J − J*`` are masked out, not removed), scale-free: on the
column-equilibrated variables ``z ∝ β ⊙ √diag C`` every row ``βᵀc_j`` is read on task
``j``'s own scale (two solves: the first sizes the answer, the second is scaled to it),
and a vertex reported optimal is accepted only if every active row holds to ``√ε``
relative to its own terms, else it is reported as ``NUMERICAL_ERROR`` and the fallback
is used. Measured against HiGHS at per-task gradient norms ``10^U(−4, 4)``: float64 at
m ≤ 40 and float32 at m ≤ 8 always use the LP answer; float32 at m = 40 can fall back
(flagged) in balance mode, whose right-hand sides mix all scales. Without the restricted row it
is always feasible in exact arithmetic (the min-norm weights satisfy
``(Cβ)_j ≥ βᵀCβ ≥ 0`` for all ``j`` and every right-hand side above is ``≤ 0``), so a
non-optimal status there means rounding at a Pareto-stationary point; the restricted row
can make it infeasible (a few percent of near-ray instances with rank-deficient
Gramians). Entries of ``C a`` below their rounding error are set to 0 first, so that on
the ray (``a`` ≈ rounding noise) neither ``J`` nor the restricted row is decided by noise.
The result's ``stationary`` flag reports a numerically zero direction (EPO halts there,
e.g. with opposite gradients in descent mode).

Guards (never NaN, always flagged):

* ``r_j l_j ≤ 0`` or non-finite (zero / negative / NaN / inf losses, where the
  logarithm is undefined; the reference code raises): such entries are replaced by
  ``eps_dtype · max`` of the valid ones (1 if none is valid), i.e. treated as
  (almost) zero relative loss, and ``clipped_losses`` is set. ``l̂`` is floored at the
  dtype's smallest normal number, so ``0 · log 0`` counts as 0 in ``μ``;
* a traced preference with non-finite or non-positive entries is replaced by ones
  (``invalid_preference``);
* a zero or non-finite Gramian, or an LP that is not solved to optimality, gives the
  fallback weights (``fallback="min_norm"``: the MGDA min-norm weights, whose direction
  never increases any loss to first order; ``fallback="preference"``: ``r / Σ r``, what
  the reference code does when its solver fails) and sets ``fallback``.

Status (the kit's convention, :mod:`jaxpareto.weighting.base`): results and states start
with ``weights, status, converged, iterations``. ``status`` is ``NONFINITE_INPUT`` for a
NaN/inf in the Gramian or the losses (the weights are the finite fallback, resp. the
LP's answer on the guarded losses), else ``DEGENERATE`` for a zero Gramian with
``m ≥ 2`` (one task always has the weight 1), else ``SUCCESSFUL`` when the LP was solved
to optimality, else the LP's status (``INFEASIBLE``, ``MAX_ITER`` or
``NUMERICAL_ERROR``, the fallback weights); ``converged`` is ``status == SUCCESSFUL`` and
``iterations`` counts the simplex pivots.

Weights are on the simplex (``Σ β = 1``). The reference code trains on
``Σ_j m β_j l_j``, i.e. weights summing to ``m``; the optax transform offers that scaling.

Differentiation (``differentiable=True``; default ``False``: the weights are constants to
``jax.grad``, as in EPO search). The LP solution is a vertex fixed by its active
constraints: ``β_i = 0`` off the support, the tight rows ``(Aβ)_k = b_k`` and ``1ᵀβ = 1``
— a linear system whose data ``A = C/s`` (``s = max_j C_jj``), ``b`` (from ``C a``) and
the adjustments ``a`` (from ``losses`` and ``preference``) are smooth in the inputs while
the combinatorial choices (``J``, ``J*``, the mode, the rows zeroed as noise, the basis)
stay fixed. Its derivative (:mod:`jaxpareto.weighting.implicit`, least squares over the
active rows) is exact at a non-degenerate vertex; at a degenerate vertex (more tight rows
than needed) or where the basis or ``J`` switches it is a generalised (minimum-norm,
one-sided) choice; and a vertex whose weights do not move with the data (e.g. a pure
vertex ``e_j``) has derivative 0. Fallback weights keep their own derivative: none for
the min-norm fallback (constants), that of ``r / Σ r`` for the preference fallback. With
the default, as before, ``non_uniformity`` and ``adjustments`` are differentiable and the
weights are constants (the LP's data pass through ``stop_gradient``).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_preference, check_vector, working_dtype
from jaxpareto.status import Status
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    core_fields,
    factory_preference,
    full_precision,
    pick_status,
    state_from_result,
    weighting_factory,
)
from jaxpareto.weighting.implicit import attach
from jaxpareto.weighting.lp import (
    INFEASIBLE,
    MAX_ITER,
    NUMERICAL_ERROR,
    OPTIMAL,
    linprog_simplex,
)

_ADJUSTMENTS = ("paper", "reference")
_DESCENTS = ("relaxed", "restricted")
_FALLBACKS = ("min_norm", "preference")


class EpoResult(NamedTuple):
    """Result of :func:`epo_weights`.

    Attributes:
      weights: ``[m]`` task weights ``β`` on the simplex (``Σ β = 1``); always finite.
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status`: ``NONFINITE_INPUT``
        (a NaN/inf in the Gramian or the losses: the Gramian fallback, or the loss guard),
        else ``DEGENERATE`` (a zero Gramian, m ≥ 2: the fallback weights), else ``SUCCESSFUL``
        (the LP was solved to optimality), else the LP's own status (``INFEASIBLE``,
        ``MAX_ITER`` or ``NUMERICAL_ERROR``; the fallback weights were used).
      converged: bool ``[]`` ``status == SUCCESSFUL``: the weights are the LP's optimum
        on usable input.
      iterations: int32 ``[]``, simplex pivots (both scaled solves).
      non_uniformity: ``[]`` ``μ = KL(l̂ ‖ 1/m)`` (after the loss guard).
      adjustments: ``[m]`` the adjustment vector ``a`` (eq. 13 or the reference form).
      descent: bool ``[]``, True in pure-descent mode (``μ ≤ eps``).
      lp_status: int32 ``[]``, the LP status (:mod:`jaxpareto.weighting.lp` constants).
      fallback: bool ``[]``, True when the weights are the fallback weights (LP not
        optimal, zero or non-finite Gramian).
      objective: ``[]`` ``βᵀ(C a)`` (balance) or ``βᵀ(C 1)`` (descent) at the returned
        weights, in the Gramian's scale.
      clipped_losses: bool ``[]``, some ``r_j l_j`` was ≤ 0 or non-finite and clipped.
      invalid_preference: bool ``[]``, a (traced) preference was non-finite or ≤ 0 and
        replaced by ones.
      stationary: bool ``[]``, the direction ``d = Gᵀβ`` is numerically zero
        (``βᵀCβ ≤ 100 m ε · max_j C_jj``): a Pareto-stationary point, e.g. opposite
        gradients in descent mode; EPO search halts there.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    non_uniformity: jax.Array
    adjustments: jax.Array
    descent: jax.Array
    lp_status: jax.Array
    fallback: jax.Array
    objective: jax.Array
    clipped_losses: jax.Array
    invalid_preference: jax.Array
    stationary: jax.Array


def _check_options(eps, adjustment, descent, fallback):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ValueError(f"`eps` must be a finite float >= 0, got {eps!r}.")
    if adjustment not in _ADJUSTMENTS:
        raise ValueError(f"`adjustment` must be one of {_ADJUSTMENTS}, got {adjustment!r}.")
    if descent not in _DESCENTS:
        raise ValueError(f"`descent` must be one of {_DESCENTS}, got {descent!r}.")
    if fallback not in _FALLBACKS:
        raise ValueError(f"`fallback` must be one of {_FALLBACKS}, got {fallback!r}.")


def _relative_losses(losses, preference):
    """Guarded ``r ⊙ l``, its normalisation ``l̂`` and ``μ`` (eq. 9), and the flags."""
    dtype = losses.dtype
    r_ok = jnp.all(jnp.isfinite(preference) & (preference > 0))
    r = jnp.where(r_ok, preference, jnp.ones_like(preference))
    rl = r * losses
    valid = jnp.isfinite(rl) & (rl > 0)
    top = jnp.max(jnp.where(valid, rl, 0))
    floor = jnp.where(top > 0, jnp.finfo(dtype).eps * top, 1)
    rl = jnp.where(valid, rl, floor)
    # Normalise by the max first so that the sum cannot overflow.
    rl_n = rl / jnp.max(rl)
    l_hat = jnp.maximum(rl_n / jnp.sum(rl_n), jnp.finfo(dtype).tiny)
    m = losses.shape[0]
    log_ml = jnp.log(m * l_hat)
    mu = jnp.maximum(jnp.sum(l_hat * log_ml), 0)  # KL >= 0; clip rounding
    return r, rl, log_ml, mu, ~jnp.all(valid), ~r_ok


@full_precision
def epo_weights(
    gram: jax.Array,
    losses: jax.Array,
    preference: jax.Array,
    *,
    eps: float = 1e-4,
    adjustment: str = "paper",
    descent: str = "relaxed",
    fallback: str = "min_norm",
    max_iter: int | None = None,
    differentiable: bool = False,
) -> EpoResult:
    """EPO search weights ``β*`` from the LP (24) of Mahapatra & Rajan (2020).

    Args:
      gram: ``[m, m]`` task Gramian ``C = G Gᵀ`` (symmetrised internally), ``m ≥ 1``
        (one task: the weight is 1).
      losses: ``[m]`` current task losses ``l`` (expected positive; see the guards in
        the module docstring).
      preference: ``[m]`` positive preference ``r``; the target is ``r ⊙ l ∝ 1``.
      eps: balance mode when ``μ > eps``, else pure descent (reference: 1e-4).
      adjustment: ``"paper"`` (eq. 13, ``a_j = r_j (log(m l̂_j) − μ)``) or
        ``"reference"`` (``a_j = log(m l̂_j) − μ``, the authors' code).
      descent: ``"relaxed"`` (eq. 24) or ``"restricted"`` (App. B, the authors' default).
      fallback: ``"min_norm"`` or ``"preference"``, used when the LP is not optimal or
        the Gramian is zero / non-finite.
      max_iter: simplex pivot cap (static); default
        :func:`jaxpareto.weighting.lp.default_max_iter`.
      differentiable: ``True`` attaches the implicit derivative of the LP vertex w.r.t.
        ``gram``, ``losses`` and ``preference`` to ``weights`` (module docstring; reverse
        mode only); ``False`` (default): the weights are constants.

    Returns:
      :class:`EpoResult` (``weights, status, converged, iterations`` first, see the
      module docstring for the status); floating fields follow the dtype of ``gram`` and
      ``losses`` (the preference is cast to it; half precision is solved in float32 and
      cast back).

    Raises:
      ValueError: at trace time, naming the argument: a non-square Gramian, wrongly
        shaped losses or preference, a concrete preference that is non-finite or not
        positive, or a bad option (``eps``, ``adjustment``, ``descent``, ``fallback``,
        ``max_iter``).
      TypeError: a non-floating Gramian or losses, a boolean preference, or a
        non-bool ``differentiable``.
    """
    _check_options(eps, adjustment, descent, fallback)
    if max_iter is not None and (
        isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1
    ):
        raise ValueError(f"`max_iter` must be a positive int or None, got {max_iter!r}.")
    gram = check_gram(gram, "gram", min_tasks=1)
    m = gram.shape[0]
    losses = check_vector(losses, m, "losses")
    preference = check_preference(preference, m)
    if not isinstance(differentiable, bool):
        raise TypeError(f"`differentiable` must be a bool, got {differentiable!r}.")
    return _epo(
        gram,
        losses,
        preference,
        float(eps),
        adjustment,
        descent,
        fallback,
        max_iter,
        differentiable,
    )


# Jitted so that eager calls reuse one compiled program per shape and configuration
# (inside a user's jit it is inlined); the checks above run at trace time.
@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _epo(
    gram, losses, preference, eps, adjustment, descent, fallback, max_iter, differentiable
) -> EpoResult:
    inputs = (gram, losses, preference)
    m = gram.shape[0]
    # The data (Gramian, losses) set the dtype; the preference is a parameter and is
    # cast to it, so a Python list or a float64 preference does not upcast a float32 run.
    out_dtype = jnp.result_type(gram, losses)
    dtype = working_dtype(gram, losses)
    gram, losses, preference = (x.astype(dtype) for x in (gram, losses, preference))

    r, rl, log_ml, mu, clipped, bad_pref = _relative_losses(losses, preference)
    r_adj = r if adjustment == "paper" else jnp.ones_like(r)
    a = r_adj * (log_ml - mu)

    c = 0.5 * (gram + gram.T)
    scale = jnp.max(jnp.diagonal(c))
    gram_finite = jnp.all(jnp.isfinite(c))
    gram_ok = gram_finite & (scale > jnp.finfo(dtype).tiny)
    # The LP is invariant to a positive scaling of C; solving on max-diag 1 keeps float32
    # products of large or tiny gradients in range. An unusable C becomes the identity
    # so no NaN enters the LP (its result is discarded by the fallback).
    cn = jnp.where(gram_ok, c / jnp.where(gram_ok, scale, 1), jnp.eye(m, dtype=dtype))

    ca = cn @ a  # (C a)_j = aᵀc_j
    # Entries of Ca at the level of its rounding error are set to 0. On the ray a is
    # pure rounding (|δa_j| ≈ r_j ε (1 + |log m l̂_j| + μ)), and the LP is scale-free per
    # row: a noise row βᵀ(Ca) ≥ 0 (restricted descent) would otherwise be a real,
    # arbitrary constraint, and noise would decide membership of J.
    noise = (
        16
        * jnp.finfo(dtype).eps
        * (jnp.abs(cn) @ (jnp.abs(a) + r_adj * (1 + jnp.abs(log_ml) + mu)))
    )
    zeroed = jnp.abs(ca) <= noise
    ca = jnp.where(zeroed, 0, ca)
    balance = mu > eps
    in_j = ca > 0
    j_star = rl == jnp.max(rl)
    objective_vec, a_ub, b_ub, mask = _lp_data(cn, ca, balance, in_j, j_star, descent)
    # The LP loop has no reverse-mode rule: its data are constants to jax.grad (the
    # weights' derivative, if requested, is attached below); μ and a stay differentiable.
    sg = jax.lax.stop_gradient
    lp = _solve_lp(sg(cn), sg(objective_vec), sg(a_ub), sg(b_ub), mask, max_iter)

    use_fallback = (lp.status != OPTIMAL) | ~gram_ok
    if fallback == "min_norm":
        from jaxpareto.weighting.min_norm import min_norm_weights

        safe_gram = jnp.where(gram_ok, cn, jnp.eye(m, dtype=dtype))
        w_fb = jax.lax.cond(
            use_fallback,
            lambda g: min_norm_weights(g).weights.astype(dtype),
            lambda g: jnp.full((m,), 1.0 / m, dtype),
            safe_gram,
        )
    else:
        w_fb = r / jnp.sum(r)
    weights = jnp.where(use_fallback, w_fb, lp.x)
    uniform = jnp.full((m,), 1.0 / m, dtype)
    weights = jnp.where(jnp.all(jnp.isfinite(weights)), weights, uniform)

    if differentiable:
        frozen = jax.tree_util.tree_map(
            sg, _Frozen(zeroed, balance, in_j, j_star, scale, a_ub, b_ub, mask)
        )
        diff = _implicit_weights(weights, inputs, frozen, adjustment, descent)
        weights = jnp.where(use_fallback, weights, diff)
    objective = jnp.where(gram_ok, scale * jnp.dot(objective_vec, weights), 0)
    sq_norm = weights @ cn @ weights
    stationary = ~gram_ok | (sq_norm <= 100 * m * jnp.finfo(dtype).eps)
    # One task: the weight is 1 whatever the Gramian (the update is the gradient), so a
    # zero Gramian is no degeneracy there.
    usable = gram_ok if m > 1 else gram_finite
    status = _status(gram_finite & jnp.all(jnp.isfinite(losses)), usable, lp.status)
    return EpoResult(
        weights=weights.astype(out_dtype),
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=lp.iterations.astype(jnp.int32),
        non_uniformity=mu.astype(out_dtype),
        adjustments=a.astype(out_dtype),
        descent=~balance,
        lp_status=lp.status,
        fallback=use_fallback,
        objective=objective.astype(out_dtype),
        clipped_losses=clipped,
        invalid_preference=bad_pref,
        stationary=stationary,
    )


def _status(finite, gram_ok, lp_status):
    """The solve's :class:`~jaxpareto.status.Status`: ``NONFINITE_INPUT`` (Gramian or
    losses), ``DEGENERATE`` (a zero Gramian), ``SUCCESSFUL`` (LP optimal), else the LP's
    status (``INFEASIBLE`` / ``MAX_ITER`` / ``NUMERICAL_ERROR``; any other code reads as
    ``NUMERICAL_ERROR``)."""
    known = (lp_status == INFEASIBLE) | (lp_status == MAX_ITER) | (lp_status == NUMERICAL_ERROR)
    lp_code = jnp.where(known, lp_status, NUMERICAL_ERROR).astype(jnp.int32)
    base = pick_status(nonfinite=~finite, degenerate=~gram_ok)
    failed = finite & gram_ok & (lp_status != OPTIMAL)
    return jnp.where(failed, lp_code, base).astype(jnp.int32)


def _row_violation(a_ub, b_ub, mask, beta):
    """``max_k (b_k − A_k β) / (|A_k| β + |b_k|)`` over the active rows (0 if none): the
    violation relative to the size of the row's own terms, e.g. ``⟨g_j, d⟩`` against
    ``‖g_j‖ Σ_k β_k ‖g_k‖`` for a row ``βᵀc_j ≥ 0``, whatever the scale of task ``j``."""
    size = jnp.abs(a_ub) @ beta + jnp.abs(b_ub)
    rel = (b_ub - a_ub @ beta) / jnp.where(size > 0, size, 1)
    return jnp.max(jnp.where(mask, rel, -jnp.inf), initial=0.0)


def _solve_lp(cn, objective_vec, a_ub, b_ub, mask, max_iter):
    """The LP on the column-equilibrated variables ``z = β ⊙ D / ν`` (``D = √diag C``).

    With ``z`` the rows ``βᵀc_j`` read ``D_j (K z)_j`` with ``K = D⁻¹CD⁻¹`` (unit
    diagonal), i.e. every constraint on its own task's scale, whatever the spread of the
    gradient norms. The solver's tolerances act on ``z``, so ``ν`` should be the size of
    the answer, ``Σ_k β_k D_k``: a first solve with ``ν = min D`` (small tasks resolved)
    gives it, and when it was far off (``ν > 16 min D``) or failed, a second solve at
    that ``ν`` is the result when optimal (else the first).
    The LP itself, hence its solution, does not depend on the scaling.

    A vertex reported optimal is then checked on every row's own scale
    (:func:`_row_violation` ≤ ``√ε``): rounding in a float32 LP at large norm spreads can
    end on an infeasible basis, and such an answer is reported as ``NUMERICAL_ERROR``
    (the caller's fallback is used), never as optimal.
    """
    tol = float(jnp.finfo(cn.dtype).eps) ** 0.5

    def checked(res):
        ok = _row_violation(a_ub, b_ub, mask, res.x) <= tol
        bad = (res.status == OPTIMAL) & ~ok
        return res._replace(status=jnp.where(bad, NUMERICAL_ERROR, res.status).astype(jnp.int32))

    diag = jnp.sqrt(jnp.maximum(jnp.diagonal(cn), 0))
    valid = diag > 0
    d_min = jnp.min(jnp.where(valid, diag, jnp.inf))
    d_min = jnp.where(jnp.isfinite(d_min), d_min, 1)
    scale = jnp.where(valid, diag, 1)  # zero gradients: any positive scale (column 0)
    first = checked(
        linprog_simplex(objective_vec, a_ub, b_ub, mask, max_iter=max_iter, col_scale=scale / d_min)
    )
    nu = jnp.dot(first.x, scale)
    nu = jnp.where((first.status == OPTIMAL) & (nu > 0) & jnp.isfinite(nu), nu, d_min)
    # The second solve is needed only when the first was scaled far from the answer
    # (norm spreads) or failed; well-scaled problems pay for one solve.
    redo = (first.status != OPTIMAL) | (nu > 16 * d_min)

    def again(_):
        second = checked(
            linprog_simplex(
                objective_vec, a_ub, b_ub, mask, max_iter=max_iter, col_scale=scale / nu
            )
        )
        use_second = second.status == OPTIMAL
        best = jax.tree_util.tree_map(lambda a, b: jnp.where(use_second, a, b), second, first)
        return best._replace(iterations=first.iterations + second.iterations)

    return jax.lax.cond(redo, again, lambda _: first, None)


def _lp_data(cn, ca, balance, in_j, j_star, descent):
    """The LP (24) on the scaled Gramian: ``(objective, a_ub, b_ub, mask)``.

    Balance rows: ``J*`` → ``≥ 0``; ``J̄ − J*`` → ``≥ aᵀc_j·1[J≠∅]``; ``J − J*`` dropped
    when ``J ≠ ∅``. Descent mode: every row ``≥ 0`` (plus the restricted row).
    """
    j_nonempty = jnp.any(in_j)
    b_bal = jnp.where(j_star | ~j_nonempty, 0, ca)
    mask_bal = j_star | ~(j_nonempty & in_j)
    objective_vec = jnp.where(balance, ca, jnp.sum(cn, axis=1))
    b_ub = jnp.where(balance, b_bal, 0)
    mask = jnp.where(balance, mask_bal, True)
    a_ub = cn
    if descent == "restricted":
        a_ub = jnp.concatenate([a_ub, ca[None, :]], axis=0)
        b_ub = jnp.concatenate([b_ub, jnp.minimum(jnp.max(ca), 0)[None]])
        mask = jnp.concatenate([mask, (~balance)[None]])
    return objective_vec, a_ub, b_ub, mask


class _Frozen(NamedTuple):
    """The forward pass's combinatorial choices, fixed for the implicit derivative."""

    zeroed: jax.Array
    balance: jax.Array
    in_j: jax.Array
    j_star: jax.Array
    scale: jax.Array
    a_ub: jax.Array
    b_ub: jax.Array
    mask: jax.Array


def _vertex_rows(options, z, params, aux):
    """Active equations of the LP vertex, recomputed from (gram, losses, preference)."""
    adjustment, descent = options
    gram, losses, preference = params
    frozen, support, tight, row_scale = aux
    dtype = z.dtype
    gram, losses, preference = (x.astype(dtype) for x in (gram, losses, preference))
    r, _, log_ml, mu, _, _ = _relative_losses(losses, preference)
    r_adj = r if adjustment == "paper" else jnp.ones_like(r)
    a = r_adj * (log_ml - mu)
    cn = 0.5 * (gram + gram.T) / frozen.scale
    ca = jnp.where(frozen.zeroed, 0, cn @ a)
    _, a_ub, b_ub, _ = _lp_data(cn, ca, frozen.balance, frozen.in_j, frozen.j_star, descent)
    rows = jnp.where(tight, (a_ub @ z - b_ub) / row_scale, 0)
    return jnp.concatenate([jnp.where(support, 0, z), rows, (jnp.sum(z) - 1)[None]])


def _implicit_weights(weights, inputs, frozen: _Frozen, adjustment, descent):
    dtype = weights.dtype
    eps = jnp.finfo(dtype).eps
    tol = eps ** (2.0 / 3.0)
    # Tight rows and support as the LP sees them (rows scaled to max-abs 1).
    row_scale = jnp.maximum(jnp.max(jnp.abs(frozen.a_ub), axis=1), jnp.abs(frozen.b_ub))
    row_scale = jnp.where(row_scale > 0, row_scale, 1)
    slack = (frozen.a_ub @ weights - frozen.b_ub) / row_scale
    tight = frozen.mask & (jnp.abs(slack) <= tol)
    support = weights > tol
    frozen = frozen._replace(scale=jnp.where(frozen.scale > 0, frozen.scale, 1))
    params = tuple(x for x in inputs)
    return attach(
        functools.partial(_vertex_rows, (adjustment, descent)),
        params,
        (frozen, support, tight, row_scale),
        weights,
    )


class EpoState(NamedTuple):
    """State of the EPO weighting: the last weights and diagnostics (for logging).

    Attributes:
      weights: ``[m]`` last weights (uniform ``1/m`` after ``init``).
      status: int32 ``[]`` :attr:`EpoResult.status` of the last update (``SUCCESSFUL``
        after ``init``).
      converged: bool ``[]`` :attr:`EpoResult.converged` of the last update (True after
        ``init``).
      iterations: int32 ``[]`` simplex pivots of the last update (0 after ``init``).
      non_uniformity: ``[]`` last ``μ``.
      lp_status: int32 ``[]`` last LP status.
      descent: bool ``[]`` last mode was pure descent.
      fallback: bool ``[]`` last weights were the fallback weights.
      clipped_losses: bool ``[]`` last losses needed the ``r ⊙ l ≤ 0`` guard.
      invalid_preference: bool ``[]`` the last (run-time) preference was non-finite or
        ``≤ 0`` and was replaced (see :func:`epo_weights`).
      stationary: bool ``[]`` the last direction was numerically zero (a
        Pareto-stationary point).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    non_uniformity: jax.Array
    lp_status: jax.Array
    descent: jax.Array
    fallback: jax.Array
    clipped_losses: jax.Array
    invalid_preference: jax.Array
    stationary: jax.Array


@weighting_factory
def epo(
    preference: jax.Array | None = None,
    *,
    eps: float = 1e-4,
    adjustment: Literal["paper", "reference"] = "paper",
    descent: Literal["relaxed", "restricted"] = "relaxed",
    fallback: Literal["min_norm", "preference"] = "min_norm",
) -> Weighting:
    """EPO search as a weighting (see :func:`epo_weights` for the rule and options).

    Args:
      preference: ``[m]`` positive preference ``r``; ``None`` means ``r = 1`` (equal
        losses) unless ``update`` receives one. Validated here when concrete.
      eps, adjustment, descent, fallback: as in :func:`epo_weights`.

    Returns:
      :class:`~jaxpareto.weighting.base.Weighting` with
      ``init(num_tasks, dtype=jnp.float32) -> EpoState`` and
      ``update(gram, state, *, losses, preference=None) -> (weights, EpoState)``; an
      update-time ``preference`` overrides the factory's. ``losses`` is required. The
      returned weights have the dtype of ``state.weights``.

    Raises:
      ValueError: here for a bad option or a concrete preference that is not finite and
        positive; in ``init`` for a ``num_tasks`` other than the preference's ``m``; in
        ``update`` without ``losses`` or for the errors of :func:`epo_weights`.
    """
    _check_options(eps, adjustment, descent, fallback)
    default = factory_preference(preference)
    num_tasks = None if default is None else default.shape[0]

    def init(num_tasks_: int, dtype=jnp.float32) -> EpoState:
        num_tasks_ = check_num_tasks(num_tasks_)
        if num_tasks is not None and num_tasks_ != num_tasks:
            raise ValueError(
                f"`num_tasks`={num_tasks_} does not match the preference's m={num_tasks}."
            )
        return EpoState(
            **core_fields(num_tasks_, dtype),
            non_uniformity=jnp.zeros((), dtype),
            lp_status=jnp.zeros((), jnp.int32),
            descent=jnp.asarray(False),
            fallback=jnp.asarray(False),
            clipped_losses=jnp.asarray(False),
            invalid_preference=jnp.asarray(False),
            stationary=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        if losses is None:
            raise ValueError("`losses` ([m] task losses) is required by the EPO weighting.")
        gram = check_gram(gram, "gram", min_tasks=1)
        m = gram.shape[0]
        if preference is None:
            preference = default if default is not None else jnp.ones((m,), jnp.result_type(gram))
        res = epo_weights(
            gram,
            losses,
            preference,
            eps=eps,
            adjustment=adjustment,
            descent=descent,
            fallback=fallback,
        )
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(EpoState, res, state)

    return Weighting(init, update, num_tasks)
