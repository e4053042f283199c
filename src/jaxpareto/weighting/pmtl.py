"""Pareto Multi-Task Learning (Lin, Zhen, Li, Zhang, Kwong, NeurIPS 2019).

PMTL splits the loss space with unit reference vectors ``u_1 … u_K`` and solves, for a
chosen sub-region ``k``, the constrained problem (eq. 7)

    min_θ l(θ)  s.t.  G_j(θ) = (u_j − u_k)ᵀ l(θ) ≤ 0,  j = 1 … K.

Both of its phases reduce to a min-norm problem over a set of gradient vectors, and
``∇G_j = Σ_i (u_ji − u_ki) ∇l_i`` is a linear combination of the task gradients, so the
whole method runs on the task Gramian ``C`` with no extra backward pass:

* initialisation (eq. 9, dual form): min-norm over ``{∇G_j : j ∈ I}`` with
  ``I = {j : G_j ≥ 0}``, repeated until the point is feasible (``I = ∅``) or a step
  budget is spent;
* main step (eq. 10, dual eq. 14): min-norm over ``{∇l_i} ∪ {∇G_j : j ∈ I_ε}`` with
  ``I_ε = {j : G_j ≥ −ε}``, giving multipliers ``(λ, β)`` and the equivalent task
  weights (eq. 18) ``α_i = λ_i + Σ_{j∈I_ε} β_j (u_ji − u_ki)``.

Static shapes. A vector set ``V G`` with coefficient rows ``V`` has the Gramian
``V C Vᵀ``. Inactive constraint rows are replaced by a copy of an active row (a task
gradient in the main step, the first active constraint in the initialisation): a copy
does not change the convex hull, so the min-norm value is unchanged, and the task
weights ``α = Vᵀ β`` come out right whatever mass the solver puts on the copy.

Weights. ``α`` may have negative entries (constraint gradients push some losses up).
The reference code rescales so that ``Σ|α_i| = m``; here ``Σ|α_i| = 1`` and the
transform's ``scale="num_tasks"`` gives the reference's scaling.

Status (the kit's convention, :mod:`jaxpareto.weighting.base`): results and states start
with ``weights, status, converged, iterations``; a NaN/inf in the Gramian or the losses
gives the uniform weights ``1/m`` and ``NONFINITE_INPUT``, a degenerate solve (zero
Gramian, all-zero weights) ``DEGENERATE``, a min-norm solve that missed its tolerance
``MAX_ITER``; ``iterations`` are the min-norm solver's. One task (``m = 1``) gives the
weight 1: the update is the gradient.

Reference vectors. PMTL's ``u_k`` point *at* the desired loss vector (the solution has
``l ∝ u_k`` roughly), whereas an EPO preference ``r`` asks for ``r ⊙ l ∝ 1``: the PMTL
reference vector matching EPO's ``r`` is ``u ∝ 1/r`` (what the EPO authors' comparison
code uses). Reference vectors are normalised to unit length here.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpareto._validate import check_float, check_gram, check_vector, is_concrete, working_dtype
from jaxpareto.status import Status
from jaxpareto.weighting.base import (
    Weighting,
    check_choice,
    core_fields,
    full_precision,
    pick_status,
    single_task,
    state_from_result,
    weighting_factory,
)

INIT, MAIN = 0, 1
_METHODS = ("auto", "frank_wolfe", "projected_gradient")


class PmtlResult(NamedTuple):
    """Result of :func:`pmtl_weights`.

    Attributes:
      weights: ``[m]`` task weights ``α`` with ``Σ|α_i| = 1`` (eq. 18), or the
        initialisation direction's task weights; always finite.
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status`: ``NONFINITE_INPUT`` (a
        NaN/inf in the Gramian or the losses: uniform weights ``1/m``), else
        ``DEGENERATE`` (``degenerate`` below), else ``SUCCESSFUL`` when the min-norm
        solve converged, else ``MAX_ITER``.
      converged: bool ``[]`` ``status == SUCCESSFUL``.
      iterations: int32 ``[]`` iterations of the min-norm solve (0 when ``m = 1``).
      active: ``[K]`` bool, the active constraints ``I`` (init) or ``I_ε`` (main).
      feasible: bool, whether ``G_j ≤ 0`` for all ``j`` (the point lies in sub-region k);
        False on non-finite input.
      objective: the min-norm value ``‖Σ multipliers · vectors‖²`` of the solved QP.
      degenerate: bool, the weights were all ~zero or non-finite and replaced by uniform
        weights, or the min-norm solve hit a guard (zero Gramian, see
        :attr:`jaxpareto.MinNormResult.degenerate`), or the input was non-finite.
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    active: jax.Array
    feasible: jax.Array
    objective: jax.Array
    degenerate: jax.Array


def _unit_rows(preferences: jax.Array) -> jax.Array:
    return preferences / jnp.linalg.norm(preferences, axis=1, keepdims=True)


def _check_preferences(preferences, index):
    preferences = check_float(jnp.asarray(preferences, dtype=jnp.result_type(float)), "preferences")
    if preferences.ndim != 2 or preferences.shape[0] < 1 or preferences.shape[1] < 1:
        raise ValueError(
            f"`preferences` must be [K, m] with K >= 1 and m >= 1, got {preferences.shape}."
        )
    if is_concrete(index):
        idx = np.asarray(index)
        if (
            idx.shape != ()
            or not np.issubdtype(idx.dtype, np.integer)
            or not 0 <= idx < preferences.shape[0]
        ):
            raise ValueError(
                f"`index` must be an int in [0, {preferences.shape[0]}), got {index!r}."
            )
    elif jnp.shape(index) != () or not jnp.issubdtype(jnp.result_type(index), jnp.integer):
        raise ValueError(f"`index` must be a scalar int, got {index!r}.")
    if is_concrete(preferences):
        p = np.asarray(preferences)
        if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
            raise ValueError("`preferences` must be finite, non-negative, with non-zero rows.")
    return preferences


@full_precision
def pmtl_weights(
    gram: jax.Array,
    losses: jax.Array,
    preferences: jax.Array,
    index: int,
    *,
    phase: jax.Array | int = MAIN,
    eps: float = 0.0,
    method: str = "auto",
) -> PmtlResult:
    """PMTL task weights for sub-region ``index`` from the task Gramian.

    Args:
      gram: ``[m, m]`` task Gramian ``C = G Gᵀ``.
      losses: ``[m]`` task losses.
      preferences: ``[K, m]`` reference vectors ``u_j`` (normalised to unit length).
      index: ``k``, the sub-region: a Python int, or a traced int scalar (so that one
        compiled program can ``vmap`` over sub-regions).
      phase: ``INIT`` (0) for the initialisation direction (eq. 9), ``MAIN`` (1) for
        the constrained descent step (eq. 10/14/18); may be traced.
      eps: the activity threshold ``ε`` of ``I_ε`` (eq. 11, a static float); the
        reference code uses 0.
      method: min-norm solver (see :func:`jaxpareto.min_norm_weights`); the reference
        uses ``"projected_gradient"``.

    Returns:
      :class:`PmtlResult` (``weights, status, converged, iterations`` first). A NaN/inf
      in ``gram`` or ``losses`` gives the uniform weights ``1/m`` with
      ``status = NONFINITE_INPUT``; ``m = 1`` gives the weight 1.

    The checks run here, at trace time; the solve is jitted inside (eager calls with new
    values of the same shapes and options reuse one compiled program; under a user's
    ``jit`` it is inlined).
    """
    gram = check_gram(gram, min_tasks=1)
    m = gram.shape[0]
    preferences = _check_preferences(preferences, index)
    if preferences.shape[1] != m:
        raise ValueError(f"`preferences` has m={preferences.shape[1]} columns, gram has m={m}.")
    losses = check_vector(losses, m, "losses")
    try:
        eps_value = None if isinstance(eps, bool) else float(eps)
    except TypeError:  # e.g. a traced eps: it is static here
        eps_value = None
    if eps_value is None or not eps_value >= 0:
        raise ValueError(f"`eps` must be a float >= 0, got {eps!r}.")
    check_choice(method, "method", _METHODS)
    return _pmtl(gram, losses, preferences, index, phase, eps_value, method)


# Jitted so that eager calls reuse one compiled program per shape and configuration
# (inside a user's jit it is inlined); the checks above run at trace time. ``index`` and
# ``phase`` are traced: one program serves every sub-region and both phases.
@functools.partial(jax.jit, static_argnums=(5, 6))
def _pmtl(gram, losses, preferences, index, phase, eps, method) -> PmtlResult:
    from jaxpareto.weighting.min_norm import min_norm_weights

    m = gram.shape[0]
    k = preferences.shape[0]
    dtype = working_dtype(gram, losses)
    gram, losses = gram.astype(dtype), losses.astype(dtype)
    gram = 0.5 * (gram + gram.T)
    finite = jnp.all(jnp.isfinite(gram)) & jnp.all(jnp.isfinite(losses))
    if m == 1:
        # One task: every reference vector is the same ray, every sub-region the whole
        # space; the weight is 1 (the update is the gradient).
        ones, _ = single_task(gram, dtype)
        return PmtlResult(
            weights=ones,
            status=pick_status(nonfinite=~finite),
            converged=finite,
            iterations=jnp.zeros((), jnp.int32),
            active=jnp.zeros((k,), bool),
            feasible=finite,
            objective=jnp.where(finite, gram[0, 0], 0),
            degenerate=~finite,
        )
    # Non-finite input: solve on harmless stand-ins (identity, zero losses); the result
    # is replaced by the uniform weights below.
    gram = jnp.where(finite, gram, jnp.eye(m, dtype=dtype))
    losses = jnp.where(finite, losses, 0)
    u = _unit_rows(preferences.astype(dtype))
    w = u - u[index]  # [K, m]; row k is zero
    g_val = w @ losses  # G_j, eq. 7
    feasible = jnp.all(g_val <= 0) & finite

    # Initialisation (eq. 9): constraints with G_j >= 0 (row k itself never counts:
    # its gradient is zero). Main step (eq. 11): G_j >= -eps.
    row_k = jnp.arange(k) == index
    active_init = (g_val >= 0) & ~row_k
    active_main = (g_val >= -eps) & ~row_k
    in_init = jnp.asarray(phase) == INIT
    active = jnp.where(in_init, active_init, active_main) & finite

    # Coefficient rows of the vector set, with inactive rows replaced by a copy of an
    # active one (see module docstring).
    first = jnp.argmax(active_init)
    init_rows = jnp.where(active_init[:, None], w, w[first][None, :])
    main_rows = jnp.concatenate(
        [jnp.eye(m, dtype=dtype), jnp.where(active_main[:, None], w, jnp.eye(m, dtype=dtype)[0])]
    )
    # Same shape for both phases: pad the init set with copies of its first row.
    init_rows = jnp.concatenate([jnp.broadcast_to(init_rows[0], (m, m)), init_rows])
    rows = jnp.where(in_init, init_rows, main_rows)  # [m + K, m]
    vec_gram = rows @ gram @ rows.T
    vec_gram = 0.5 * (vec_gram + vec_gram.T)
    sol = min_norm_weights(vec_gram, method=method)
    alpha = rows.T @ sol.weights  # eq. 18
    norm1 = jnp.sum(jnp.abs(alpha))
    tiny = jnp.finfo(dtype).tiny
    replaced = ~(norm1 > tiny) | ~jnp.all(jnp.isfinite(alpha)) | ~finite
    # A zero Gramian makes every multiplier optimal: the weights are finite but
    # arbitrary (the direction is zero), so it is flagged too.
    degenerate = replaced | sol.degenerate
    alpha = jnp.where(
        replaced, jnp.full((m,), 1.0 / m, dtype), alpha / jnp.where(replaced, 1, norm1)
    )
    status = pick_status(nonfinite=~finite, degenerate=degenerate, converged=sol.converged)
    # In the initialisation with nothing active the point is already feasible: the
    # caller switches to the main phase; the weights are the main-phase ones then.
    return PmtlResult(
        weights=alpha,
        status=status,
        converged=status == Status.SUCCESSFUL,
        iterations=jnp.asarray(sol.iterations, jnp.int32),
        active=active,
        feasible=feasible,
        objective=jnp.where(finite, sol.objective, 0).astype(dtype),
        degenerate=degenerate,
    )


class PmtlState(NamedTuple):
    """State of the PMTL weighting.

    Attributes:
      weights: ``[m]`` last task weights (``1/m`` after ``init``).
      status: int32 ``[]`` :attr:`PmtlResult.status` of the last update (``SUCCESSFUL``
        after ``init``).
      converged: bool ``[]`` :attr:`PmtlResult.converged` of the last update (True after
        ``init``).
      iterations: int32 ``[]`` min-norm iterations of the last update (0 after ``init``).
      phase: int32, ``INIT`` (0) until the point is feasible or ``init_steps`` updates
        have run, then ``MAIN`` (1) for good.
      step: int32 number of updates so far.
      active: ``[K]`` bool, the last active constraint set.
      feasible: bool, whether the last point lay in sub-region k.
      degenerate: bool, :attr:`PmtlResult.degenerate` of the last update (uniform
        fallback weights, or a zero / non-finite Gramian).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    phase: jax.Array
    step: jax.Array
    active: jax.Array
    feasible: jax.Array
    degenerate: jax.Array


@weighting_factory(legacy_positional=("index",))
def pmtl(
    preferences: jax.Array,
    index: int,
    *,
    init_steps: int = 100,
    eps: float = 0.0,
    method: Literal["auto", "frank_wolfe", "projected_gradient"] = "auto",
) -> Weighting:
    """PMTL as a weighting: initialisation phase, then constrained min-norm steps.

    Args:
      preferences: ``[K, m]`` reference vectors.
      index: the sub-region ``k`` to search.
      init_steps: the budget of initialisation updates (the reference uses 20% of the
        iterations on the synthetic problem, two epochs on Multi-MNIST); the phase
        ends earlier as soon as a point is feasible.
      eps: activity threshold of eq. 11.
      method: min-norm solver.

    ``update(gram, state, *, losses, preference=None)``: ``losses`` is required;
    ``preference`` is ignored (PMTL's trade-off is set by ``preferences, index``).
    """
    preferences = _check_preferences(preferences, index)
    check_choice(method, "method", _METHODS)
    if not isinstance(init_steps, int) or init_steps < 0:
        raise ValueError(f"`init_steps` must be a non-negative int, got {init_steps!r}.")
    num_pref = preferences.shape[0]

    def init(num_tasks: int, dtype=jnp.float32) -> PmtlState:
        if num_tasks != preferences.shape[1]:
            raise ValueError(
                f"`num_tasks`={num_tasks} does not match `preferences` with m={preferences.shape[1]}."
            )
        return PmtlState(
            **core_fields(num_tasks, dtype),
            phase=jnp.asarray(INIT if init_steps > 0 else MAIN, jnp.int32),
            step=jnp.zeros((), jnp.int32),
            active=jnp.zeros((num_pref,), bool),
            feasible=jnp.asarray(False),
            degenerate=jnp.asarray(False),
        )

    def update(gram, state, *, losses=None, preference=None):
        del preference
        if losses is None:
            raise ValueError("`losses` is required by the pmtl weighting (pass value=losses).")
        gram = check_gram(gram, min_tasks=1)
        losses = check_vector(jnp.asarray(losses), gram.shape[0], "losses")
        # Feasible or out of budget: leave the initialisation for good.
        u = _unit_rows(preferences.astype(working_dtype(gram, losses)))
        feasible_now = jnp.all((u - u[index]) @ losses.astype(u.dtype) <= 0)
        phase = jnp.where(
            (state.phase == INIT) & (feasible_now | (state.step >= init_steps)), MAIN, state.phase
        ).astype(jnp.int32)
        res = pmtl_weights(gram, losses, preferences, index, phase=phase, eps=eps, method=method)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(PmtlState, res, state, phase=phase, step=state.step + 1)

    return Weighting(init, update, preferences.shape[1])
