"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022).

The Nash bargaining solution of the tasks is the update ``d = Σ_i α_i g_i`` whose
weights ``α > 0`` solve (Theorem 5.1)

    C α = 1 / α        (elementwise; ``C = G Gᵀ`` the task Gramian),

i.e. ``⟨g_i, d⟩ = 1/α_i`` for every task, hence ``‖d‖² = αᵀCα = m``.

Solver. The paper (Sec. 5.1) approaches the solution by a sequence of convex problems
(concave-convex procedure, each a cvxpy/ECOS call, at most 20 of them in the authors'
code and TorchJD). Here the same equations are solved exactly as the stationarity
condition of the strictly convex potential

    h(α) = ½ αᵀ C α − Σ_i log α_i,     ∇h = Cα − 1/α,     ∇²h = C + diag(1/α²),

by Newton steps ``α ← α − t Δ`` (``Δ = ∇²h⁻¹ ∇h``, Newton decrement
``λ = (∇hᵀΔ)^½``) with a backtracking (Armijo) step ``t ∈ {1, ½, …, 2⁻¹¹}``, falling
back to the damped step ``t = 1/(1 + λ)``, and full steps once ``λ < 1/4``. ``h`` is
self-concordant (a quadratic plus a log barrier), so the damped step keeps the iterates
positive and the iteration converges globally, quadratically near the solution;
``max_iter`` (default 20, the authors' ``optim_niter``; a traced value, changing it does
not recompile) caps the
iterations with static shapes (``jax.lax.while_loop``). The fixed points of the paper's
sequence are the same solutions; the result here is exact to rounding when
``converged``.

Conventions. As in the authors' code the Gramian is divided by its Frobenius norm before
the solve and the weights are mapped back (``α = α̃ / √‖C‖_F``), so ``α`` is the
solution for the *given* gradients. The authors (and TorchJD, ``max_norm=1``) then clip
the update's norm: ``max_norm > 0`` rescales ``α`` so that ``‖Gᵀα‖ ≤ max_norm``;
the default ``None`` returns the unclipped bargaining solution (``‖d‖ = √m``). The
authors' ``update_weights_every`` (reuse the weights for several steps) is an option of
:func:`nash_mtl`; unlike TorchJD, a reused weight vector is not re-clipped against the
current gradients. A warm start (``init``; the weighting passes the previous weights) replaces
the reference code's warm-started solver.

Properties (``tests/test_weighting_properties.py``): permutation invariant; if every
gradient is multiplied by ``s > 0`` the weights are divided by ``s`` (the update ``d``
is unchanged). Not non-conflicting by construction, but at the solution
``⟨g_i, d⟩ = 1/α_i > 0``: the exact solution never conflicts.

No solution exists when some ``α ≥ 0, α ≠ 0`` has ``Gᵀα = 0`` (a Pareto-stationary
point: e.g. opposite or zero gradients); ``h`` is then unbounded below and the iterates
grow. ``converged`` is False there (``status = MAX_ITER``, the cap is reached) and the
weights are the last (finite) iterate. A Gramian with a non-finite entry gives ``α =
1/m``, ``degenerate`` and ``status = NONFINITE_INPUT``; ``max_i C_ii ≤ tiny`` (zero
gradients) gives ``α = 1/m``, ``degenerate`` and ``status = DEGENERATE``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram, check_vector, working_dtype
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

__all__ = ["NashMtlResult", "NashMtlState", "nash_mtl", "nash_mtl_weights"]


class NashMtlResult(NamedTuple):
    """Result of :func:`nash_mtl_weights`.

    Attributes:
      weights: ``[m]`` ``α`` (after the optional ``max_norm`` clipping).
      status: int32 ``[]`` a :class:`jaxpareto.status.Status`: ``SUCCESSFUL``,
        ``MAX_ITER`` (no convergence within ``max_iter``, e.g. no solution exists),
        ``NONFINITE_INPUT`` (non-finite Gramian) or ``DEGENERATE`` (zero Gramian).
      converged: bool ``[]`` ``residual ≤ √ε`` on a usable Gramian (``status ==
        SUCCESSFUL``).
      iterations: int32 ``[]`` Newton iterations (0 on an unusable Gramian).
      residual: ``[]`` ``max_i |α_i (Cα)_i − 1|`` of the unclipped solution (scale free).
      clipped: bool ``[]`` the ``max_norm`` clipping applied.
      degenerate: bool ``[]`` non-finite or zero Gramian (``α = 1/m``).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    residual: jax.Array
    clipped: jax.Array
    degenerate: jax.Array


def _check_options(max_iter, max_norm):
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a static int >= 1, got {max_iter!r}.")
    if max_norm is not None and (
        isinstance(max_norm, bool)
        or not isinstance(max_norm, numbers.Real)
        or not float(max_norm) > 0
    ):
        raise ValueError(f"`max_norm` must be None or a positive float, got {max_norm!r}.")
    return int(max_iter), None if max_norm is None else float(max_norm)


class _Carry(NamedTuple):
    alpha: jax.Array
    it: jax.Array
    done: jax.Array


def _newton(c: jax.Array, alpha0: jax.Array, max_iter: jax.Array, tol: float):
    """Damped Newton on ``h(α) = ½αᵀCα − Σ log α`` from ``alpha0 > 0``."""
    m = c.shape[0]
    eye = jnp.eye(m, dtype=c.dtype)
    ladder = 0.5 ** jnp.arange(12, dtype=c.dtype)

    def cond(k):
        return ~k.done & (k.it < max_iter)

    def body(k):
        a = k.alpha
        grad = c @ a - 1 / a
        # ∇²h = D⁻¹ (D C D + I) D⁻¹ with D = diag(α): the inner matrix has eigenvalues
        # ≥ 1, so the solve stays well conditioned however far the α_i spread.
        inner = a[:, None] * c * a[None, :] + eye
        chol = jnp.linalg.cholesky(inner)
        step = a * jax.scipy.linalg.cho_solve((chol, True), a * grad)
        step = jnp.where(jnp.isfinite(step), step, 0)
        dec2 = jnp.maximum(grad @ step, 0)
        dec = jnp.sqrt(dec2)
        # Backtracking (Armijo, factor 1/2) on h over a static ladder of step sizes,
        # evaluated at once; the damped step 1/(1+λ) is the guaranteed fallback.
        trial = a[None, :] - ladder[:, None] * step[None, :]
        inside = jnp.all(trial > 0, axis=1)
        safe = jnp.where(inside[:, None], trial, 1)
        h_trial = 0.5 * jnp.einsum("ki,ij,kj->k", safe, c, safe) - jnp.sum(jnp.log(safe), axis=1)
        h_now = 0.5 * a @ c @ a - jnp.sum(jnp.log(a))
        accept = inside & (h_trial <= h_now - 0.25 * ladder * dec2)
        t = jnp.where(jnp.any(accept), ladder[jnp.argmax(accept)], 1 / (1 + dec))
        # Inside λ < 1/4 full steps converge quadratically (self-concordance), and the
        # Armijo test would only see rounding noise of h there.
        t = jnp.where(dec < 0.25, 1.0, t)
        new = a - t * step
        # Self-concordance keeps damped steps inside α > 0; the guard is for rounding.
        new = jnp.where(new > 0, new, a * 0.5)
        return _Carry(new, k.it + 1, dec * dec <= tol)

    out = jax.lax.while_loop(
        cond, body, _Carry(alpha0, jnp.zeros((), jnp.int32), jnp.asarray(False))
    )
    return out.alpha, out.it


def _single(gram, max_norm, dtype, out_dtype) -> NashMtlResult:
    """``m = 1``: the weight 1 (the update is the gradient), clipped to ``max_norm``."""
    w, finite = single_task(gram, dtype)
    norm = jnp.sqrt(jnp.maximum(jnp.where(finite, gram[0, 0], 0), 0)).astype(dtype)
    clipped = finite & (norm > max_norm)
    w = jnp.where(clipped, w * (max_norm / jnp.where(clipped, norm, 1)), w)
    return NashMtlResult(
        weights=w.astype(out_dtype),
        status=pick_status(nonfinite=~finite),
        converged=finite,
        iterations=jnp.zeros((), jnp.int32),
        residual=jnp.zeros((), out_dtype),
        clipped=clipped,
        degenerate=~finite,
    )


@full_precision
def nash_mtl_weights(
    gram: jax.Array,
    *,
    max_iter: int = 20,
    max_norm: float | None = None,
    init: jax.Array | None = None,
) -> NashMtlResult:
    """Nash-MTL weights: the solution ``α > 0`` of ``Cα = 1/α`` (Navon et al. 2022, Thm 5.1).

    Args:
      gram: ``[m, m]`` task Gramian, ``m ≥ 1`` (``m = 1``: the weight 1, the
        update is the gradient, clipped to ``max_norm`` if given).
      max_iter: Newton iteration cap (static).
      max_norm: ``None`` (no clipping) or a positive bound on ``‖Gᵀα‖`` (the authors'
        and TorchJD's ``max_norm``, default 1 there).
      init: ``[m]`` warm start (e.g. the previous step's weights); ignored unless finite
        and positive. Default: ``α_i ∝ 1/√C_ii`` (exact for orthogonal gradients), scaled
        to minimise ``h`` along that ray.

    Returns:
      :class:`NashMtlResult`; float fields in the dtype of ``gram``.
    """
    gram = check_gram(gram, "gram", min_tasks=1)
    max_iter, max_norm = _check_options(max_iter, max_norm)
    m = gram.shape[0]
    if init is None:
        init = jnp.zeros((m,), gram.dtype)  # not positive: no warm start
    else:
        init = jax.lax.stop_gradient(check_vector(init, m, "init"))
    bound = jnp.asarray(jnp.inf if max_norm is None else max_norm, gram.dtype)
    return _nash_mtl(jax.lax.stop_gradient(gram), init, jnp.asarray(max_iter, jnp.int32), bound)


# Jitted so that eager calls reuse one compiled program per shape; the iteration cap
# and the norm bound (inf: no clipping) are data, so changing them does not recompile.
@jax.jit
@full_precision
def _nash_mtl(gram, init, max_iter, max_norm) -> NashMtlResult:
    m = gram.shape[0]
    out_dtype = gram.dtype
    dtype = working_dtype(gram)
    if m == 1:
        return _single(gram, max_norm, dtype, out_dtype)
    c = gram.astype(dtype)
    c = 0.5 * (c + c.T)
    finite = jnp.all(jnp.isfinite(c))
    tiny = jnp.finfo(dtype).tiny
    fro = jnp.sqrt(jnp.sum(jnp.where(finite, c, 0) ** 2))
    usable = finite & (jnp.max(jnp.diagonal(jnp.where(finite, c, 0))) > tiny)
    fro = jnp.where(usable, fro, 1)
    cn = jnp.where(usable, c / fro, jnp.eye(m, dtype=dtype))
    root = jnp.sqrt(fro)

    # Start at the diagonal solution α_i = 1/√C_ii (exact for orthogonal gradients),
    # rescaled to minimise h along its ray: t² = m / (αᵀCα).
    diag = jnp.diagonal(cn)
    base = jnp.where(diag > tiny, jax.lax.rsqrt(jnp.where(diag > tiny, diag, 1)), 1)
    curv = base @ cn @ base
    alpha0 = base * jnp.sqrt(m / jnp.where(curv > tiny, curv, 1))
    warm = init.astype(dtype) * root
    good = jnp.all(jnp.isfinite(warm)) & jnp.all(warm > 0)
    alpha0 = jnp.where(good, warm, alpha0)

    eps = jnp.finfo(dtype).eps
    alpha, it = _newton(cn, alpha0, max_iter, float(eps) * m)
    residual = jnp.max(jnp.abs(alpha * (cn @ alpha) - 1))
    ok = usable & jnp.all(jnp.isfinite(alpha))
    converged = ok & (residual <= jnp.sqrt(eps))
    alpha = jnp.where(ok, alpha / root, 1.0 / m)
    residual = jnp.where(ok, residual, 0)

    norm = jnp.sqrt(jnp.maximum(alpha @ jnp.where(finite, c, 0) @ alpha, 0))
    clipped = ok & (norm > max_norm)
    alpha = jnp.where(clipped, alpha * (max_norm / jnp.where(clipped, norm, 1)), alpha)
    return NashMtlResult(
        weights=alpha.astype(out_dtype),
        status=pick_status(nonfinite=~finite, degenerate=~ok, converged=converged),
        converged=converged,
        iterations=jnp.where(usable, it, 0),
        residual=residual.astype(out_dtype),
        clipped=clipped,
        degenerate=~ok,
    )


class NashMtlState(NamedTuple):
    """State of :func:`nash_mtl`.

    Attributes:
      weights: ``[m]`` last weights (``1/m`` after ``init``); from the first solve on,
        the next warm start.
      status: int32 ``[]`` status of the last solve (:class:`NashMtlResult`).
      converged: bool ``[]`` the last solve converged.
      iterations: int32 ``[]`` Newton iterations of the last solve.
      residual: ``[]`` residual of the last solve.
      degenerate: bool ``[]`` the last Gramian was non-finite or zero.
      step: int32 ``[]`` counts the updates, for ``update_weights_every`` (and no warm
        start before the first solve).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    residual: jax.Array
    degenerate: jax.Array
    step: jax.Array = jnp.zeros((), jnp.int32)


@weighting_factory
def nash_mtl(
    *,
    max_iter: int = 20,
    max_norm: float | None = None,
    warm_start: bool = True,
    update_weights_every: int = 1,
) -> Weighting:
    """Nash-MTL as a weighting (see :func:`nash_mtl_weights`).

    ``update(gram, state, *, losses=None, preference=None)``; with ``warm_start`` the
    previous weights start the Newton iteration (as the authors' solver does), otherwise
    every call is a pure function of ``gram``. Note: with ``max_norm`` the stored
    weights are the clipped ones, a slightly worse (still valid) warm start.

    ``update_weights_every = k`` (the authors' option, default 1) solves only on the
    updates ``0, k, 2k, …`` (``state.step % k == 0``) and reuses the previous weights in
    between (their diagnostics too), saving ``k − 1`` of every ``k`` solves. A reused
    weight vector is the solution for an earlier Gramian (the update is then a fixed
    combination of the current gradients).
    """
    max_iter, max_norm = _check_options(max_iter, max_norm)
    if (
        isinstance(update_weights_every, bool)
        or not isinstance(update_weights_every, numbers.Integral)
        or update_weights_every < 1
    ):
        raise ValueError(
            f"`update_weights_every` must be an int >= 1, got {update_weights_every!r}."
        )
    every = int(update_weights_every)

    def init(num_tasks: int, dtype=jnp.float32) -> NashMtlState:
        num_tasks = check_num_tasks(num_tasks)
        return NashMtlState(
            **core_fields(num_tasks, dtype),
            residual=jnp.zeros((), dtype),
            degenerate=jnp.asarray(False),
            step=jnp.zeros((), jnp.int32),
        )

    def solve(gram, state):
        if warm_start:
            # No warm start before the first solve (step 0: the initial 1/m is no
            # solution); non-positive weights are ignored by the solver.
            prev = state.weights.astype(jnp.result_type(gram))
            warm = jnp.where(state.step > 0, prev, jnp.zeros_like(prev))
        else:
            warm = None
        res = nash_mtl_weights(gram, max_iter=max_iter, max_norm=max_norm, init=warm)
        weights = res.weights.astype(state.weights.dtype)
        return weights, state_from_result(NashMtlState, res, state, step=state.step + 1)

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        if every == 1:
            return solve(gram, state)
        # Before the first solve (step 0) a solve is forced; a state without positive
        # weights (built by hand) forces one too.
        due = (state.step % every == 0) | ~jnp.any(state.weights > 0)
        return jax.lax.cond(
            due,
            lambda: solve(gram, state),
            lambda: (state.weights, state._replace(step=state.step + 1)),
        )

    return Weighting(init, update)
