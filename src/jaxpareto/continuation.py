"""Preference-driven continuation along the Pareto set (PPE), public as ``jp.ppe``.

Amakor, Sonntag & Peitz (2026, "Interactive Pareto navigation for deep multi-task
learning", arXiv 2606.19521) propose predictor steps tangent to the Pareto set, chosen to
follow a decision maker's preference, a corrector back to a Pareto point, and a Krylov
solver on Hessian-vector products for the tangent. We could read only its abstract; the
equations below are ours, after Hillermeier (2001, "Nonlinear multiobjective
optimization: a generalized homotopy approach"), Martín & Schütze (2018, "Pareto
Tracer") and Ma, Du & Matusik (2020, "Efficient continuous Pareto exploration in
multi-task learning").

**The manifold.** ``θ`` is Pareto-critical with KKT weights ``α ∈ Δ_m`` when

    F(θ, α) = Σ_i α_i ∇l_i(θ) = 0,        1ᵀα = 1.                         (1)

Differentiating (1) along a curve ``(θ(s), α(s))`` on the solution set gives

    H_α θ' + Jᵀ α' = 0,   1ᵀα' = 0,   H_α = Σ_i α_i ∇²l_i,   J = [∇l_1 … ∇l_m]ᵀ.  (2)

``H_α`` is symmetric but generally indefinite (the EPO synthetic problem has a concave
front), so it is inverted with GMRES, never CG. Writing ``ξ = α'`` and
``W = H_α⁻¹ Jᵀ`` (``n × m``, one solve per task):

    v = θ' = −W ξ,     δl = J v = −S ξ,     S = J W = J H_α⁻¹ Jᵀ  (m × m).      (3)

At a point of (1) ``Jᵀα = 0``, so ``Sα = 0``: every first-order loss change is
orthogonal to ``α``, the normal of the front, as it must be.

**Following a preference.** A preference is a desired loss change ``d ∈ R^m``
(:func:`improve_direction`, :func:`toward_direction`). The tangent picks

    ξ = argmin_{1ᵀξ = 0} ‖S ξ + d‖₂                                          (4)

(an ``(m−1)``-dimensional least-squares problem on an orthonormal basis of
``{1ᵀξ = 0}``, solved with a truncated SVD), so the predicted change ``−Sξ`` is the
closest first-order achievable change to ``d``; when ``S`` has rank ``m − 1`` it is the
Euclidean projection of ``d`` onto the tangent space ``α^⊥`` of the front.

**Predictor–corrector.** :func:`predictor` is ``θ + σ v``; :func:`corrector` runs MGDA
steps (min-norm common descent with an Armijo backtracking on every loss) back to
Pareto-stationarity, or EPO steps (Mahapatra & Rajan 2020) towards the ray of a
preference (in :func:`trace`: the ray through the predicted losses). :func:`trace`
chains them with step control (below) and :class:`Navigator` wraps :func:`trace` in a
stateful, undoable session.

**Step control** (in :func:`trace`). The predictor length ``σ`` is the smallest of

* the trust length ``s / ‖δl‖`` (``s ≤ step_size``: predicted loss change of Euclidean
  length ``s``),
* the end of the front: ``α + σξ`` must stay in the simplex (a weight reaching 0 is the
  boundary of the Pareto set),
* the target: the floor of :class:`Navigator.improve` (a task's predicted loss must not
  go below it) or, towards a preference, the point of the predicted line closest to the
  ray (the request there is :func:`toward_direction` with the KKT weights, a Newton
  step onto the ray's intersection with the front's tangent plane, so the ray is
  reached with quadratic convergence).

Point 0 of a trace is the start corrected onto the Pareto set.

An attempt is rejected, and ``s`` halved, when the corrector does not converge within
its step budget, a non-finite value appears, or the realised loss change disagrees in
sign with ``d`` on the targeted task (the largest ``|d_k|``, checked when the prediction
agrees with ``d`` there). After an accepted step,
``s`` shrinks when the corrector needed more than half its budget and grows (×1.5, up to
``step_size``) otherwise. The trace stops at the end of the front (some ``α_i ≤
alpha_tol`` that the tangent would decrease further), when ``d`` has no component along
the front, when the target is reached, when a step is rejected ``max_shrinks + 1`` times,
or when ``num_points`` points are recorded.

**Cost model** (gradient-evaluation equivalents, reported by every function):

=====================================  =====
one gradient of a scalar loss           1
one evaluation of ``loss_fn`` only      0.5
one Jacobian (``m`` losses)             m
one Hessian-vector product              2
=====================================  =====

:func:`tangent` linearises ``∇(Σ α_i l_i)`` once and reuses it for every GMRES
matrix-vector product; each product is still counted as a full HVP (2), so the figure is
an upper bound. With ``batched=True`` the ``m`` solves run in lock step (``vmap``), and
the count is ``2 m · max_i(iterations_i)`` because finished solves keep computing until
the slowest is done; with ``batched=False`` it is ``2 Σ_i iterations_i``.

**GMRES.** ``jax.scipy.sparse.linalg.gmres`` reports no iteration count, so this module
has its own restarted GMRES (Saad & Schultz 1986) with ``lax`` loops: Arnoldi with
classical Gram–Schmidt and one re-orthogonalisation, Givens rotations for the running
residual, a back substitution that leaves out numerically zero pivots (robust to the
singular ``H_α`` of over-parameterised models) and an explicit residual ``b − A x`` at
the end of every cycle. ``iterations`` counts matrix-vector products, the explicit
residual ones included. ``maxiter`` caps them; together with ``damping`` (``H_α + λI``)
it regularises singular Hessians.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxpareto._validate import check_float, check_preference, is_concrete
from jaxpareto.jacobian import combine, gramian, value_and_jacobian
from jaxpareto.weighting.epo import epo_weights
from jaxpareto.weighting.min_norm import min_norm_weights

__all__ = [
    "COST_GRADIENT",
    "COST_FORWARD",
    "COST_HVP",
    "BUDGET",
    "END_OF_FRONT",
    "TARGET_REACHED",
    "NO_PROGRESS",
    "STEP_TOO_SMALL",
    "NON_FINITE",
    "GmresResult",
    "Tangent",
    "CorrectorResult",
    "Trace",
    "Navigator",
    "hvp",
    "gmres",
    "tangent",
    "predictor",
    "corrector",
    "trace",
    "improve_direction",
    "toward_direction",
]

# Cost model, in gradient-evaluation equivalents (see the module docstring).
COST_GRADIENT = 1.0
COST_FORWARD = 0.5
COST_HVP = 2.0

# Trace.stop_reason values.
BUDGET = 0  #: ``num_points`` points recorded.
END_OF_FRONT = 1  #: a KKT weight reached ``alpha_tol`` and the tangent would lower it.
TARGET_REACHED = 2  #: the floor (improve) or the preference ray (toward) was reached.
NO_PROGRESS = 3  #: the requested direction has no component along the front.
STEP_TOO_SMALL = 4  #: ``max_shrinks + 1`` rejected attempts in a row.
NON_FINITE = 5  #: a non-finite value at the current point or in its tangent.

# Trace.status values (per point).
_STATUS_FREE, _STATUS_ALPHA_CLIP, _STATUS_TARGET_CLIP = 0, 1, 2

_CORRECTOR_METHODS = ("mgda", "epo")


# ----------------------------------------------------------------------------- checks


def _check_int(x, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{name}` must be a Python int, got {type(x).__name__}.")
    if x < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {x}.")
    return int(x)


def _check_scalar(x, name: str, *, positive: bool = False, nonnegative: bool = False):
    """A float scalar; where concrete, finite and of the required sign."""
    if isinstance(x, bool):
        raise TypeError(f"`{name}` must be a float scalar, got bool.")
    arr = jnp.asarray(x)
    if arr.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {arr.shape}.")
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a float scalar, got dtype {arr.dtype}.")
    if is_concrete(arr):
        v = float(arr)
        if not math.isfinite(v):
            raise ValueError(f"`{name}` must be finite, got {v}.")
        if positive and not v > 0:
            raise ValueError(f"`{name}` must be > 0, got {v}.")
        if nonnegative and not v >= 0:
            raise ValueError(f"`{name}` must be >= 0, got {v}.")
    return x


def _check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ValueError(f"`eps` must be a finite Python float >= 0, got {eps!r}.")


def _check_params(params, name: str = "params") -> None:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"`{name}` has no leaves.")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"`{name}` has a leaf of dtype {jnp.result_type(leaf)}; continuation "
                "needs floating parameters."
            )


def _num_tasks(loss_fn, params, args) -> tuple[int, Any]:
    """``m`` and the loss dtype, from the abstract evaluation of ``loss_fn``."""
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    out = jax.eval_shape(loss_fn, params, *args)
    if not hasattr(out, "shape") or len(out.shape) != 1:
        raise ValueError(
            "`loss_fn` must return a 1-D vector of m task losses, got "
            f"{getattr(out, 'shape', type(out))}."
        )
    if out.shape[0] < 2:
        raise ValueError(f"`loss_fn` returns m={out.shape[0]} losses; continuation needs m >= 2.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"`loss_fn` must return floating losses, got {out.dtype}.")
    return int(out.shape[0]), out.dtype


def _check_same_tree(a, b, name_a: str, name_b: str) -> None:
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(f"`{name_b}` must have the pytree structure of `{name_a}`: {tb} vs {ta}.")
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jnp.shape(la) != jnp.shape(lb):
            raise ValueError(
                f"`{name_b}` leaf shape {jnp.shape(lb)} does not match `{name_a}` leaf shape "
                f"{jnp.shape(la)}."
            )


def _default(value, dtype, f64: float, f32: float):
    """A dtype-dependent default tolerance (``f64`` for float64, else ``f32``)."""
    if value is not None:
        return value
    return f64 if jnp.dtype(dtype) == jnp.float64 else f32


def _all_finite(*trees) -> jax.Array:
    leaves = [leaf for t in trees for leaf in jax.tree_util.tree_leaves(t)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


# ------------------------------------------------------------------------ directions


def improve_direction(m: int, task: int, amount=1.0, *, dtype=None) -> jax.Array:
    """Loss-space request "lower task ``task`` by ``amount``, accept the others rising".

    ``d = −amount · e_task`` (``[m]``). Its first-order realisation along the front
    (eq. 4) is, for a regular point, the projection ``d − α (αᵀd)/‖α‖²``: task ``task``
    decreases by ``amount (1 − α_k²/‖α‖²)`` and every other task ``j`` rises by
    ``amount α_j α_k / ‖α‖²``. :func:`trace` uses only the direction of a fixed ``d``;
    :meth:`Navigator.improve` uses ``amount`` as the target decrease.

    Args:
      m: number of tasks (``≥ 2``).
      task: index in ``[0, m)``.
      amount: positive float.
      dtype: float dtype of the result (default: the default float dtype).

    Returns:
      ``[m]`` array.
    """
    m = _check_int(m, "m", 2)
    task = _check_int(task, "task", 0)
    if task >= m:
        raise ValueError(f"`task` must be in [0, {m}), got {task}.")
    _check_scalar(amount, "amount", positive=True)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return -jnp.asarray(amount, dtype) * jax.nn.one_hot(task, m, dtype=dtype)


def toward_direction(losses, preference, alpha=None) -> jax.Array:
    """Loss-space request "move onto the ray of ``preference``", i.e. make ``r ⊙ l ∝ 1``.

    The ray is spanned by ``u = 1/r`` (EPO's convention: ``r_j l_j`` equal). The request
    is the displacement ``d = t u − l`` from ``l`` to a point of the ray:

    * with the KKT weights ``alpha`` (the front's normal at ``l``): the point where the
      ray meets the front's tangent plane ``{l' : αᵀ(l' − l) = 0}``,
      ``t = αᵀl / αᵀu``. Then ``αᵀd = 0``: ``d`` is achievable to first order, and a
      step of ``d`` is a Newton step on the front's intersection with the ray (what
      :func:`trace` uses, so ``"toward"`` converges quadratically);
    * without ``alpha``: the move perpendicular to ``l``, ``t = ‖l‖² / lᵀu``
      (``dᵀl = 0``), the direction that increases ``cos∠(l, u)`` fastest at fixed
      ``‖l‖``.

    ``d = 0`` on the ray. When the denominator is not positive (no positive loss, or
    ``α`` orthogonal to ``u``) the ray cannot be reached this way and ``d = 0``.

    Args:
      losses: ``[m]``.
      preference: ``[m]`` positive.
      alpha: optional ``[m]`` KKT weights at ``losses``.

    Returns:
      ``[m]`` in the dtype of ``losses``.
    """
    losses = check_float(losses, "losses")
    if losses.ndim != 1:
        raise ValueError(f"`losses` must be a vector [m], got shape {losses.shape}.")
    m = losses.shape[0]
    r = check_preference(preference, m).astype(losses.dtype)
    normal = losses
    if alpha is not None:
        normal = check_float(alpha, "alpha")
        if normal.shape != (m,):
            raise ValueError(
                f"`alpha` must have shape ({m},) to match m={m} tasks, got {normal.shape}."
            )
        normal = normal.astype(losses.dtype)
    return _toward(losses, r, normal)


def _toward(losses: jax.Array, preference: jax.Array, normal: jax.Array) -> jax.Array:
    """``t u − l`` with ``t = nᵀl / nᵀu`` (the ray meets the plane ``nᵀ(l' − l) = 0``)."""
    tiny = jnp.finfo(losses.dtype).tiny
    u = 1 / jnp.where(preference > 0, preference, jnp.inf)
    nu = normal @ u
    ok = (nu > tiny) & jnp.isfinite(nu)
    d = (normal @ losses) / jnp.where(ok, nu, 1) * u - losses
    return jnp.where(ok & jnp.all(jnp.isfinite(d)), d, jnp.zeros_like(d))


def _ray_sine(losses: jax.Array, preference: jax.Array) -> jax.Array:
    """``sin∠(l, 1/r)`` (0 on the ray)."""
    u = 1 / preference
    uh = u / jnp.linalg.norm(u)
    perp = losses - (losses @ uh) * uh
    ln = jnp.linalg.norm(losses)
    return jnp.where(ln > 0, jnp.linalg.norm(perp) / jnp.where(ln > 0, ln, 1), 1.0)


# ------------------------------------------------------------------------------ HVP


def _weighted_loss(loss_fn, alpha, args):
    def f(p):
        losses = loss_fn(p, *args)
        return jnp.dot(alpha.astype(losses.dtype), losses)

    return f


def hvp(loss_fn: Callable[..., jax.Array], params, alpha, v, *args):
    """Hessian-vector product ``H_α v = Σ_i α_i ∇²l_i(θ) v`` (forward over reverse).

    ``jax.jvp`` of ``jax.grad`` of ``Σ_i α_i l_i(θ, *args)``; the Hessian is never formed.
    Cost: about 2 gradient evaluations.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree ``θ``.
      alpha: ``[m]`` task weights.
      v: pytree shaped like ``params``.
      *args: extra arguments of ``loss_fn`` (data), not differentiated.

    Returns:
      Pytree shaped like ``params``.
    """
    _check_params(params)
    m, _ = _num_tasks(loss_fn, params, args)
    alpha = check_float(alpha, "alpha")
    if alpha.shape != (m,):
        raise ValueError(f"`alpha` must have shape ({m},) to match m={m} tasks, got {alpha.shape}.")
    _check_same_tree(params, v, "params", "v")
    f = _weighted_loss(loss_fn, alpha, args)
    v = jax.tree_util.tree_map(lambda p, t: jnp.asarray(t, jnp.result_type(p)), params, v)
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


# ---------------------------------------------------------------------------- GMRES


class GmresResult(NamedTuple):
    """Result of :func:`gmres`.

    Attributes:
      x: ``[n]`` approximate solution of ``A x = b``.
      residual: ``[]`` relative residual ``‖b − A x‖ / ‖b‖`` (explicit, not estimated;
        0 when ``b = 0``).
      iterations: int32 ``[]`` matrix-vector products used.
      converged: bool ``[]`` ``residual ≤ tol``.
    """

    x: jax.Array
    residual: jax.Array
    iterations: jax.Array
    converged: jax.Array


def gmres(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *, restart: int = 20,
          maxiter: int = 100, tol: float | None = None) -> GmresResult:
    """Restarted GMRES(k) for ``A x = b`` with ``x₀ = 0`` (Saad & Schultz 1986).

    Each cycle builds a Krylov basis of at most ``restart`` vectors (Arnoldi, classical
    Gram–Schmidt applied twice), tracks the residual with Givens rotations, stops early
    when the estimated residual drops below ``tol‖b‖`` or at a (happy) breakdown, solves
    the small triangular system by back substitution with numerically zero pivots left
    out (a singular ``A`` gives a bounded step instead of an overflow) and then computes
    ``b − A x``
    explicitly. Static shapes; ``jax.lax.while_loop`` throughout, so it runs under
    ``jit`` and ``vmap`` (batched solves run until the slowest one finishes).

    Args:
      matvec: ``[n] -> [n]``, linear.
      b: ``[n]`` floating.
      restart: Krylov dimension per cycle (static int ≥ 1).
      maxiter: cap on matrix-vector products (traced or static int ≥ 1).
      tol: relative residual target; default 1e-10 (float64) / 1e-5 (float32).

    Returns:
      :class:`GmresResult`.
    """
    b = check_float(b, "b")
    if b.ndim != 1:
        raise ValueError(f"`b` must be a vector [n], got shape {b.shape}.")
    restart = _check_int(restart, "restart", 1)
    if isinstance(maxiter, (int, np.integer)):
        _check_int(maxiter, "maxiter", 1)
    tol = _default(tol, b.dtype, 1e-10, 1e-5)
    return _gmres(matvec, b, restart, maxiter, tol)


def _gmres(matvec, b, k: int, maxiter, tol) -> GmresResult:
    dtype = b.dtype
    n = b.shape[0]
    eps = jnp.finfo(dtype).eps
    bnorm = jnp.linalg.norm(b)
    thresh = jnp.asarray(tol, dtype) * bnorm
    maxiter = jnp.asarray(maxiter, jnp.int32)
    hi = jax.lax.Precision.HIGHEST

    def cycle(carry):
        x, r, rnorm, its = carry
        basis = jnp.zeros((k + 1, n), dtype).at[0].set(r / jnp.where(rnorm > 0, rnorm, 1))
        tri = jnp.zeros((k, k), dtype)
        cs = jnp.zeros((k,), dtype)
        sn = jnp.zeros((k,), dtype)
        g = jnp.zeros((k + 1,), dtype).at[0].set(rnorm)

        def arnoldi_cond(c):
            j, its, _, _, _, _, g = c
            return (j < k) & (its < maxiter) & (jnp.abs(g[j]) > thresh)

        def arnoldi_body(c):
            j, its, basis, tri, cs, sn, g = c
            w = matvec(basis[j])
            wnorm = jnp.linalg.norm(w)
            mask = (jnp.arange(k + 1) <= j).astype(dtype)
            # Classical Gram–Schmidt twice ("twice is enough", Giraud et al. 2005): as
            # stable as modified Gram–Schmidt and a pair of matrix products.
            h = jnp.matmul(basis, w, precision=hi) * mask
            w = w - jnp.matmul(h, basis, precision=hi)
            h2 = jnp.matmul(basis, w, precision=hi) * mask
            w = w - jnp.matmul(h2, basis, precision=hi)
            h = h + h2
            hn = jnp.linalg.norm(w)
            # (Happy) breakdown: A v_j lies in the current Krylov space, which then
            # contains the solution; the zero vector keeps the basis row harmless.
            brk = ~(hn > 16 * eps * wnorm)
            hn = jnp.where(brk, 0, hn)
            basis = basis.at[j + 1].set(jnp.where(brk, 0, w / jnp.where(brk, 1, hn)))
            col = h.at[j + 1].set(hn)

            def rotate(i, col):
                a, bb = col[i], col[i + 1]
                return col.at[i].set(cs[i] * a + sn[i] * bb).at[i + 1].set(-sn[i] * a + cs[i] * bb)

            col = jax.lax.fori_loop(0, j, rotate, col)
            a, bb = col[j], col[j + 1]
            rr = jnp.hypot(a, bb)
            c_ = jnp.where(rr > 0, a / jnp.where(rr > 0, rr, 1), 1)
            s_ = jnp.where(rr > 0, bb / jnp.where(rr > 0, rr, 1), 0)
            col = col.at[j].set(rr).at[j + 1].set(0)
            cs = cs.at[j].set(c_)
            sn = sn.at[j].set(s_)
            gj = g[j]
            g = g.at[j].set(c_ * gj).at[j + 1].set(-s_ * gj)
            tri = tri.at[:, j].set(col[:k])
            return j + 1, its + 1, basis, tri, cs, sn, g

        j, its, basis, tri, _, _, g = jax.lax.while_loop(
            arnoldi_cond, arnoldi_body, (jnp.int32(0), its, basis, tri, cs, sn, g)
        )
        used = jnp.arange(k) < j
        both = used[:, None] & used[None, :]
        small = jnp.where(both, tri, 0) + jnp.diag(jnp.where(used, 0, 1).astype(dtype))
        y = _guarded_triangular_solve(small, jnp.where(used, g[:k], 0))
        x = x + jnp.matmul(y, basis[:k], precision=hi)
        r = b - matvec(x)
        return x, r, jnp.linalg.norm(r), its + 1

    def cond(carry):
        _, _, rnorm, its = carry
        return (rnorm > thresh) & (its < maxiter) & jnp.isfinite(rnorm)

    x0 = jnp.zeros_like(b)
    x, _, rnorm, its = jax.lax.while_loop(cond, cycle, (x0, b, bnorm, jnp.int32(0)))
    rel = jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1), 0)
    return GmresResult(x, rel.astype(dtype), its, rnorm <= thresh)


def _guarded_triangular_solve(r: jax.Array, rhs: jax.Array) -> jax.Array:
    """Back substitution ``r y = rhs`` for upper-triangular ``r`` whose numerically zero
    pivots (``≤ k · eps · max|r_ii|``, a singular ``A``) give ``y_i = 0`` instead of an
    overflow: the step simply leaves out that Krylov direction."""
    diag = jnp.abs(jnp.diagonal(r))
    tiny = r.shape[0] * jnp.finfo(r.dtype).eps * jnp.max(diag)
    singular = ~(diag > tiny)
    safe = r + jnp.diag(jnp.where(singular, jnp.inf, 0).astype(r.dtype))
    return jax.scipy.linalg.solve_triangular(safe, rhs, lower=False)


# --------------------------------------------------------------------------- tangent


class Tangent(NamedTuple):
    """Result of :func:`tangent` at a Pareto-critical point.

    Attributes:
      v: pytree like ``params``: the parameter direction ``v = −W ξ`` (eq. 3), scaled so
        that the predicted loss change is ``delta_losses`` (a step ``θ + σ v`` changes
        the losses by ``σ · delta_losses`` to first order).
      xi: ``[m]`` the change of the KKT weights along ``v`` (``1ᵀξ = 0``).
      delta_losses: ``[m]`` predicted loss change ``J v = −S ξ`` (the first-order
        realisation of the request ``d``, eq. 4).
      s_matrix: ``[m, m]`` ``S = J H_α⁻¹ Jᵀ`` (``S_ij = ∇l_iᵀ w_j``).
      losses: ``[m]`` the losses at ``params``.
      residuals: ``[m]`` relative GMRES residual of each solve ``(H_α + λI) w_i = ∇l_i``.
      iterations: int32 ``[m]`` matrix-vector products (HVPs) of each solve.
      converged: bool ``[m]`` each solve reached ``tol``.
      degenerate: bool ``[]``: a non-finite value appeared (then ``v``, ``xi``,
        ``delta_losses`` are zero) or every gradient is zero (``S = 0``: no tangent
        information; zero direction).
      finite: bool ``[]``: no non-finite value appeared.
      cost: ``[]`` gradient-evaluation equivalents (module docstring).
    """

    v: Any
    xi: jax.Array
    delta_losses: jax.Array
    s_matrix: jax.Array
    losses: jax.Array
    residuals: jax.Array
    iterations: jax.Array
    converged: jax.Array
    degenerate: jax.Array
    finite: jax.Array
    cost: jax.Array


def _simplex_tangent_basis(m: int) -> np.ndarray:
    """Orthonormal basis ``[m, m−1]`` of ``{ξ : 1ᵀξ = 0}`` (Helmert contrasts)."""
    q = np.zeros((m, m - 1))
    for j in range(1, m):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= math.sqrt(j * (j + 1))
    return q


def _solve_xi(s_matrix: jax.Array, d: jax.Array) -> jax.Array:
    """``argmin_{1ᵀξ=0} ‖S ξ + d‖`` (eq. 4), minimum-norm on a rank-deficient ``S``.

    Parameterising ``ξ = Q z`` with ``Q`` orthonormal on ``1^⊥`` removes the constraint;
    the SVD cut-off ``eps^(2/3) σ_max`` ignores directions that GMRES resolves only to
    rounding level.
    """
    m = d.shape[0]
    dtype = s_matrix.dtype
    q = jnp.asarray(_simplex_tangent_basis(m), dtype)
    a = s_matrix @ q
    u, sv, vt = jnp.linalg.svd(a, full_matrices=False)
    keep = sv > jnp.finfo(dtype).eps ** (2 / 3) * sv[0]
    inv = jnp.where(keep, 1 / jnp.where(keep, sv, 1), 0)
    z = vt.T @ (inv * (u.T @ (-d)))
    return q @ z


class _TangentConfig(NamedTuple):
    restart: int | None
    tol: float | None
    batched: bool


def _tangent_impl(loss_fn, params, alpha, d, args, damping, maxiter,
                  config: _TangentConfig) -> Tangent:
    losses, jac = value_and_jacobian(loss_fn)(params, *args)
    m = losses.shape[0]
    dtype = losses.dtype
    flat, unravel = ravel_pytree(params)
    n = flat.shape[0]
    rows = jax.vmap(lambda t: ravel_pytree(t)[0])(jac)  # [m, n]
    alpha = alpha.astype(dtype)
    weighted = _weighted_loss(loss_fn, alpha, args)

    def grad_flat(x):
        return ravel_pytree(jax.grad(weighted)(unravel(x)))[0]

    # One linearisation serves every matrix-vector product of every solve.
    _, lin = jax.linearize(grad_flat, flat)
    lam = jnp.asarray(damping, flat.dtype)

    def matvec(u):
        return lin(u) + lam * u

    restart = min(n, 30) if config.restart is None else min(config.restart, n)
    tol = _default(config.tol, flat.dtype, 1e-10, 1e-5)

    def solve(rhs):
        return _gmres(matvec, rhs, restart, maxiter, tol)

    rhs = rows.astype(flat.dtype)
    sol = jax.vmap(solve)(rhs) if config.batched else jax.lax.map(solve, rhs)
    w = sol.x  # [m, n], row i = (H_α + λI)⁻¹ ∇l_i
    s_matrix = jnp.matmul(rows, w.T, precision=jax.lax.Precision.HIGHEST).astype(dtype)
    d = d.astype(dtype)
    xi = _solve_xi(s_matrix, d)
    v_flat = -jnp.matmul(xi.astype(w.dtype), w, precision=jax.lax.Precision.HIGHEST)
    delta = -s_matrix @ xi

    finite = _all_finite(losses, s_matrix, xi, v_flat, delta)
    zero_jac = ~(jnp.max(jnp.abs(rows)) > 0)
    ok = finite & ~zero_jac
    xi = jnp.where(ok, xi, 0)
    delta = jnp.where(ok, delta, 0)
    v_flat = jnp.where(ok, v_flat, 0)
    s_matrix = jnp.where(finite, s_matrix, 0)
    its = sol.iterations
    hv = jnp.max(its) * m if config.batched else jnp.sum(its)
    cost = (m * COST_GRADIENT + COST_HVP * hv).astype(dtype)
    return Tangent(
        v=unravel(v_flat),
        xi=xi,
        delta_losses=delta,
        s_matrix=s_matrix,
        losses=losses,
        residuals=jnp.where(jnp.isfinite(sol.residual), sol.residual, jnp.inf).astype(dtype),
        iterations=its,
        converged=sol.converged,
        degenerate=~ok,
        finite=finite,
        cost=cost,
    )


def tangent(
    loss_fn: Callable[..., jax.Array],
    params,
    alpha,
    direction,
    *args,
    damping=0.0,
    maxiter=100,
    tol: float | None = None,
    restart: int | None = None,
    batched: bool = True,
) -> Tangent:
    """Tangent of the Pareto set at ``params`` that best follows a loss-space request.

    Solves ``(H_α + λI) w_i = ∇l_i`` for ``i = 1 … m`` with matrix-free GMRES on
    Hessian-vector products (``H_α = Σ α_i ∇²l_i``, eq. 2), forms ``S = J W``, picks
    ``ξ = argmin_{1ᵀξ=0} ‖Sξ + d‖`` (eq. 4) and returns ``v = −Wξ`` with its predicted
    loss change ``δl = −Sξ`` (eq. 3). ``params`` should be Pareto-critical with KKT
    weights ``alpha`` (e.g. the output of :func:`corrector`); elsewhere the result is
    the same linear algebra applied to the linearisation of ``F`` at ``(θ, α)`` and is
    only a first-order guess.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree ``θ`` (floating leaves).
      alpha: ``[m]`` KKT weights (on the simplex).
      direction: ``[m]`` requested loss change ``d`` (:func:`improve_direction`,
        :func:`toward_direction`).
      *args: data for ``loss_fn``.
      damping: ``λ ≥ 0``; ``H_α + λI`` regularises a singular Hessian (the tangent is
        then that of a proximally regularised problem).
      maxiter: cap on HVPs per solve (int ≥ 1, may be traced; default 100).
      tol: relative GMRES residual (default 1e-10 float64, 1e-5 float32).
      restart: Krylov dimension per cycle (default ``min(n, 30)``).
      batched: ``True``: the ``m`` solves run together under ``vmap`` (memory ``m``
        Krylov bases); ``False``: one after the other with ``lax.map``.

    Returns:
      :class:`Tangent`; floating fields in the loss dtype, ``v`` in the params' dtypes.
    """
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    alpha = check_float(alpha, "alpha")
    if alpha.shape != (m,):
        raise ValueError(f"`alpha` must have shape ({m},) to match m={m} tasks, got {alpha.shape}.")
    direction = check_float(direction, "direction")
    if direction.shape != (m,):
        raise ValueError(
            f"`direction` must have shape ({m},) to match m={m} tasks, got {direction.shape}."
        )
    _check_scalar(damping, "damping", nonnegative=True)
    if is_concrete(maxiter):
        _check_int(int(maxiter) if isinstance(maxiter, jax.Array) else maxiter, "maxiter", 1)
    if restart is not None:
        _check_int(restart, "restart", 1)
    if tol is not None:
        _check_scalar(tol, "tol", positive=True)
    if not isinstance(batched, bool):
        raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
    config = _TangentConfig(restart, tol, batched)
    return _tangent_impl(loss_fn, params, alpha, direction, args, damping, maxiter, config)


def predictor(params, tangent: Tangent, step) -> Any:
    """Predictor ``θ + step · v`` (``v = tangent.v``); the losses move by about
    ``step · tangent.delta_losses`` and the KKT weights by ``step · tangent.xi``.

    Args:
      params: pytree ``θ``.
      tangent: a :class:`Tangent` computed at ``params``.
      step: scalar ``σ``.

    Returns:
      Pytree like ``params`` (each leaf keeps its dtype).
    """
    _check_same_tree(params, tangent.v, "params", "tangent.v")
    step = jnp.asarray(step)
    if step.ndim != 0:
        raise ValueError(f"`step` must be a scalar, got shape {step.shape}.")
    return jax.tree_util.tree_map(
        lambda p, t: p + step.astype(jnp.result_type(p)) * t.astype(jnp.result_type(p)),
        params,
        tangent.v,
    )


# ------------------------------------------------------------------------- corrector


class CorrectorResult(NamedTuple):
    """Result of :func:`corrector`.

    Attributes:
      params: pytree, the last finite iterate.
      losses: ``[m]`` at ``params``.
      alpha: ``[m]`` min-norm (KKT) weights at ``params``.
      stationarity: ``[]`` ``‖Σ_i α_i ∇l_i‖₂``, the square root of the min-norm value
        (0 exactly at a Pareto-critical point).
      steps: int32 ``[]`` corrector steps taken.
      converged: bool ``[]`` the method's direction norm ``‖Σ β_i ∇l_i‖`` reached ``tol``
        (``β`` the MGDA or EPO weights).
      degenerate: bool ``[]`` a non-finite value appeared; the iteration stopped at the
        last finite iterate (or the input, if that is not finite: then ``converged`` is
        False).
      cost: ``[]`` gradient-evaluation equivalents.
    """

    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    steps: jax.Array
    converged: jax.Array
    degenerate: jax.Array
    cost: jax.Array


class _CorrectorConfig(NamedTuple):
    method: str
    steps: int
    line_search: bool
    max_backtracks: int
    eps: float  # EPO's balance threshold (a static float for epo_weights)


class _Eval(NamedTuple):
    params: Any
    losses: jax.Array
    alpha: jax.Array
    direction: Any  # Σ β_i ∇l_i, like params
    slopes: jax.Array  # [m] ∇l_iᵀ direction = (Cβ)_i
    dnorm: jax.Array  # ‖direction‖
    stationarity: jax.Array  # ‖Σ α_i ∇l_i‖
    finite: jax.Array


def _evaluate(loss_fn, params, args, method: str, preference, eps) -> _Eval:
    losses, jac = value_and_jacobian(loss_fn)(params, *args)
    dtype = losses.dtype
    gram = gramian(jac).astype(dtype)
    finite = _all_finite(losses, gram)
    safe_gram = jnp.where(finite, gram, 0)
    alpha = min_norm_weights(safe_gram).weights.astype(dtype)
    if method == "mgda":
        beta = alpha
    else:
        beta = epo_weights(safe_gram, jnp.where(finite, losses, 1), preference, eps=eps)
        beta = beta.weights.astype(dtype)
    slopes = safe_gram @ beta
    direction = combine(jac, beta)
    # Norms of the combined vectors, not sqrt(βᵀCβ): the Gramian form cancels
    # catastrophically near stationarity (its floor is about sqrt(eps)·‖∇l‖).
    dnorm = _tree_norm(direction)
    stat = dnorm if method == "mgda" else _tree_norm(combine(jac, alpha))
    return _Eval(params, losses, alpha, direction, slopes, dnorm, stat, finite)


def _tree_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _corrector_impl(loss_fn, params, args, preference, lr, tol,
                    config: _CorrectorConfig) -> CorrectorResult:
    evaluate = functools.partial(_evaluate, loss_fn, args=args, method=config.method,
                                 preference=preference, eps=config.eps)
    e0 = evaluate(params)
    m = e0.losses.shape[0]
    dtype = e0.losses.dtype
    lr = jnp.asarray(lr, dtype)
    tol = jnp.asarray(tol, dtype)
    armijo = 1e-4

    def shifted(p, t, direction):
        def leaf(x, g):
            dt = jnp.result_type(x)
            return x - t.astype(dt) * g.astype(dt)

        return jax.tree_util.tree_map(leaf, p, direction)

    def backtrack(e):
        # Armijo on every loss: l_i(θ − t d) ≤ l_i(θ) − c t ∇l_iᵀd (d is a common descent
        # direction for the min-norm weights, so a small enough t always passes). Near
        # stationarity the decrease t ∇l_iᵀd ≈ t‖d‖² falls below the rounding of l_i
        # (‖d‖ ≲ sqrt(eps |l_i|)); without the slack the test would then fail at random
        # and stall the iteration at ‖d‖ ≈ 1e-8 in float64.
        slack = 8 * jnp.finfo(dtype).eps * (jnp.abs(e.losses) + 1)

        def cond(c):
            t, j, ok = c
            return ~ok & (j < config.max_backtracks)

        def body(c):
            t, j, _ = c
            trial = loss_fn(shifted(e.params, t, e.direction), *args)
            ok = jnp.all(trial <= e.losses - armijo * t * e.slopes + slack)
            ok = ok & jnp.all(jnp.isfinite(trial))
            return jnp.where(ok, t, t / 2), j + 1, ok

        t, j, _ = jax.lax.while_loop(cond, body, (lr, jnp.int32(0), jnp.bool_(False)))
        return t, j

    def cond(c):
        e, k, _, bad = c
        return (e.dnorm > tol) & (k < config.steps) & ~bad

    def body(c):
        e, k, forwards, _ = c
        if config.line_search:
            t, j = backtrack(e)
        else:
            t, j = lr, jnp.int32(0)
        new = evaluate(shifted(e.params, t, e.direction))
        keep_new = new.finite
        e = jax.tree_util.tree_map(lambda a, b: jnp.where(keep_new, a, b), new, e)
        return e, k + 1, forwards + j, ~keep_new

    e, k, forwards, bad = jax.lax.while_loop(
        cond, body, (e0, jnp.int32(0), jnp.int32(0), ~e0.finite)
    )
    cost = (m * COST_GRADIENT * (k + 1) + COST_FORWARD * forwards).astype(dtype)
    converged = (e.dnorm <= tol) & e.finite
    return CorrectorResult(
        params=e.params,
        losses=e.losses,
        alpha=e.alpha,
        stationarity=jnp.where(e.finite, e.stationarity, jnp.inf),
        steps=k,
        converged=converged,
        degenerate=bad,
        cost=cost,
    )


def corrector(
    loss_fn: Callable[..., jax.Array],
    params,
    *args,
    method: str = "mgda",
    preference=None,
    steps: int = 200,
    lr=None,
    tol=None,
    line_search: bool = True,
    eps: float = 1e-4,
) -> CorrectorResult:
    """A few descent steps from a predicted point back to the Pareto set.

    ``method="mgda"``: ``θ ← θ − t Σ_i β_i ∇l_i`` with the min-norm weights
    ``β = argmin_{β∈Δ} ‖Σ β_i ∇l_i‖`` (Désidéri 2012; Sener & Koltun 2018, eq. 3). With
    ``line_search`` (default) ``t`` starts at ``lr`` and is halved until every loss
    satisfies Armijo's condition ``l_i(θ − t d) ≤ l_i(θ) − 10⁻⁴ t ∇l_iᵀd``, so every
    loss decreases monotonically and the limit dominates the start.

    ``method="epo"``: EPO search steps (Mahapatra & Rajan 2020, eq. 24) with fixed
    ``lr``: controlled ascent towards the ray ``r ⊙ l ∝ 1`` of ``preference``, then
    descent. EPO's balance test uses ``eps`` (a KL divergence), so the ray is reached
    only to ``μ ≤ eps``.

    The loop (``jax.lax.while_loop``) stops when ``‖Σ β_i ∇l_i‖ ≤ tol`` or after
    ``steps`` steps. A non-finite value stops it at the last finite iterate.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree start point.
      *args: data for ``loss_fn``.
      method: ``"mgda"`` or ``"epo"``.
      preference: ``[m]`` positive, required by ``"epo"``.
      steps: maximum number of steps (static int ≥ 0).
      lr: step size (initial step of the line search); default 1.0 for ``"mgda"``
        with line search, 0.1 otherwise.
      tol: target of ``‖Σ β_i ∇l_i‖₂``; default ``sqrt(eps_dtype)`` (1.5e-8 float64,
        3.5e-4 float32).
      line_search: Armijo backtracking (``"mgda"`` only; EPO is not a descent method).
      eps: EPO's non-uniformity threshold.

    Returns:
      :class:`CorrectorResult`. Cost: one Jacobian per step plus one, and 0.5 per
      line-search trial.
    """
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    if method not in _CORRECTOR_METHODS:
        raise ValueError(f"`method` must be one of {_CORRECTOR_METHODS}, got {method!r}.")
    if method == "epo":
        preference = check_preference(preference, m).astype(dtype)
    steps = _check_int(steps, "steps", 0)
    if not isinstance(line_search, bool):
        raise TypeError(f"`line_search` must be a bool, got {type(line_search).__name__}.")
    line_search = line_search and method == "mgda"
    lr = (1.0 if line_search else 0.1) if lr is None else lr
    _check_scalar(lr, "lr", positive=True)
    tol = _default(tol, dtype, float(np.sqrt(np.finfo(np.float64).eps)),
                   float(np.sqrt(np.finfo(np.float32).eps)))
    _check_scalar(tol, "tol", nonnegative=True)
    _check_eps(eps)
    config = _CorrectorConfig(method, steps, line_search, 30, float(eps))
    return _corrector_impl(loss_fn, params, args, preference, lr, tol, config)


# ----------------------------------------------------------------------------- trace


class Trace(NamedTuple):
    """Result of :func:`trace`: ``K = num_points`` slots, the first ``length`` valid.

    Point 0 is the corrected start. Slots past ``length`` repeat the last valid point
    (``valid`` is False there), so every array is finite and shapes are static.

    Attributes:
      params: pytree like ``params`` with a leading axis ``K``.
      losses: ``[K, m]``.
      alpha: ``[K, m]`` KKT (min-norm) weights.
      stationarity: ``[K]`` ``‖Σ α_i ∇l_i‖₂`` at each point.
      step: ``[K]`` predicted loss-space length ``σ ‖δl‖`` of the step that reached the
        point (0 for point 0).
      predicted_losses: ``[K, m]`` the predictor's first-order losses ``l + σ δl`` for
        that step (point 0: the corrected start's losses), to compare with ``losses``.
      predicted_alpha: ``[K, m]`` the predictor's KKT weights ``α + σ ξ``.
      gmres_iterations: int32 ``[K, m]`` HVPs of each tangent solve of that step.
      gmres_residual: ``[K, m]`` relative residuals of those solves.
      corrector_steps: int32 ``[K]``.
      rejected: int32 ``[K]`` attempts rejected (and shrunk) before acceptance.
      status: int32 ``[K]`` 0: free step; 1: shortened to the end of the front (a
        predicted KKT weight reached 0); 2: shortened to the target.
      cost: ``[K]`` gradient-evaluation equivalents spent to reach each point (tangent,
        every attempt's corrector; point 0: the initial correction).
      valid: bool ``[K]``.
      length: int32 ``[]`` number of valid points.
      stop_reason: int32 ``[]`` one of ``BUDGET``, ``END_OF_FRONT``, ``TARGET_REACHED``,
        ``NO_PROGRESS``, ``STEP_TOO_SMALL``, ``NON_FINITE``.
      cost_gradient_evals: ``[]`` total cost, including tangents computed at the last
        point to decide to stop.
    """

    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    step: jax.Array
    predicted_losses: jax.Array
    predicted_alpha: jax.Array
    gmres_iterations: jax.Array
    gmres_residual: jax.Array
    corrector_steps: jax.Array
    rejected: jax.Array
    status: jax.Array
    cost: jax.Array
    valid: jax.Array
    length: jax.Array
    stop_reason: jax.Array
    cost_gradient_evals: jax.Array


class _TraceStatic(NamedTuple):
    num_points: int
    mode: str  # "array" (a fixed request or "toward", chosen by a traced flag) or "callable"
    direction_fn: Callable | None
    tangent: _TangentConfig
    corrector: _CorrectorConfig
    max_shrinks: int


class _TraceNumeric(NamedTuple):
    toward: jax.Array  # bool: the request is toward_direction(l, preference, α)
    step_size: jax.Array
    damping: jax.Array
    maxiter: jax.Array
    lr: jax.Array
    corrector_tol: jax.Array
    alpha_tol: jax.Array
    target_tol: jax.Array
    end_tol: jax.Array


class _Buffers(NamedTuple):
    params: Any
    losses: jax.Array
    alpha: jax.Array
    stationarity: jax.Array
    step: jax.Array
    predicted_losses: jax.Array
    predicted_alpha: jax.Array
    gmres_iterations: jax.Array
    gmres_residual: jax.Array
    corrector_steps: jax.Array
    rejected: jax.Array
    status: jax.Array
    cost: jax.Array


def _clip_alpha(alpha, xi):
    """Largest ``σ ≥ 0`` keeping ``α + σ ξ ≥ 0`` (inf when no weight decreases)."""
    dec = xi < 0
    ratio = alpha / jnp.where(dec, -xi, 1)
    return jnp.min(jnp.where(dec, jnp.maximum(ratio, 0), jnp.inf))


def _clip_floor(losses, delta, floor):
    """Largest ``σ`` keeping ``l + σ δl ≥ floor`` on decreasing, floored tasks."""
    dec = (delta < 0) & jnp.isfinite(floor)
    ratio = (losses - floor) / jnp.where(dec, -delta, 1)
    return jnp.min(jnp.where(dec, jnp.maximum(ratio, 0), jnp.inf))


def _clip_ray(losses, delta, preference):
    """``σ`` minimising the distance of ``l + σ δl`` to the line of ``u = 1/r``."""
    u = 1 / preference
    uh = u / jnp.linalg.norm(u)
    pl = losses - (losses @ uh) * uh
    pd = delta - (delta @ uh) * uh
    pp = pd @ pd
    sigma = -(pl @ pd) / jnp.where(pp > 0, pp, 1)
    return jnp.where((pp > 0) & (sigma > 0), sigma, jnp.inf)


def _zeros_like_shape(tree):
    return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), tree)


def _trace_core(params, args, d_fixed, preference, floor, num, static: _TraceStatic, loss_fn):
    """The trace as one ``while_loop``. Iteration 0 corrects the start (zero tangent,
    ``σ = 0``) through the same code path as every later point, so the corrector and
    the tangent are each compiled once."""
    dtype = jnp.result_type(d_fixed)
    k_max = static.num_points
    ccfg = static.corrector
    m = d_fixed.shape[0]

    def correct(p, pref):
        return _corrector_impl(loss_fn, p, args, pref, num.lr, num.corrector_tol, ccfg)

    def compute_tangent(p, alpha, d):
        return _tangent_impl(loss_fn, p, alpha, d, args, num.damping, num.maxiter, static.tangent)

    def direction_at(losses, alpha):
        if static.mode == "callable":
            return jnp.asarray(static.direction_fn(losses), dtype)
        # "toward" is a traced switch, so fixed requests and preference moves share
        # one executable (e.g. every Navigator move).
        return jnp.where(num.toward, _toward(losses, preference, alpha), d_fixed)

    def target_reached(losses):
        tol = num.target_tol
        hit_floor = jnp.any(jnp.isfinite(floor) & (losses <= floor + tol * (1 + jnp.abs(floor))))
        return hit_floor | (num.toward & (_ray_sine(losses, preference) <= tol))

    def ray_pref(losses):
        # EPO corrector: the ray through the given (predicted) losses, r = 1/l.
        return 1 / jnp.maximum(losses, jnp.sqrt(jnp.finfo(dtype).tiny))

    zeros_m = jnp.zeros((m,), dtype)
    tangent_shape = jax.eval_shape(compute_tangent, params, zeros_m, zeros_m)
    pref_shape = zeros_m if ccfg.method == "epo" else None
    result_shape = jax.eval_shape(correct, params, pref_shape)

    buf = _Buffers(
        params=jax.tree_util.tree_map(lambda x: jnp.zeros((k_max,) + x.shape, x.dtype),
                                      result_shape.params),
        losses=jnp.zeros((k_max, m), dtype),
        alpha=jnp.zeros((k_max, m), dtype),
        stationarity=jnp.zeros((k_max,), dtype),
        step=jnp.zeros((k_max,), dtype),
        predicted_losses=jnp.zeros((k_max, m), dtype),
        predicted_alpha=jnp.zeros((k_max, m), dtype),
        gmres_iterations=jnp.zeros((k_max, m), jnp.int32),
        gmres_residual=jnp.zeros((k_max, m), dtype),
        corrector_steps=jnp.zeros((k_max,), jnp.int32),
        rejected=jnp.zeros((k_max,), jnp.int32),
        status=jnp.zeros((k_max,), jnp.int32),
        cost=jnp.zeros((k_max,), dtype),
    )

    class Carry(NamedTuple):
        k: jax.Array
        done: jax.Array
        reason: jax.Array
        s: jax.Array
        params: Any
        losses: jax.Array
        alpha: jax.Array
        buf: _Buffers
        total: jax.Array

    class Attempt(NamedTuple):
        tries: jax.Array
        accepted: jax.Array
        s_try: jax.Array
        sigma: jax.Array
        result: CorrectorResult
        cost: jax.Array

    def point_body(c: Carry):
        start = c.k == 0
        d = direction_at(c.losses, c.alpha)
        tan = jax.lax.cond(
            start,
            lambda: _zeros_like_shape(tangent_shape),
            lambda: compute_tangent(c.params, c.alpha, d),
        )
        delta = tan.delta_losses
        dn = jnp.linalg.norm(delta)
        reached = target_reached(c.losses)
        no_move = dn <= num.end_tol * jnp.linalg.norm(d)
        # The boundary of the Pareto set is where a KKT weight vanishes: stop there if
        # the tangent would push that weight below zero, or cannot move at all.
        low = c.alpha <= num.alpha_tol
        at_end = jnp.any(low & (tan.xi < 0)) | (no_move & jnp.any(low))
        bad = ~tan.finite
        stop_now = ~start & (bad | reached | at_end | no_move)
        reason_now = jnp.where(
            bad, NON_FINITE,
            jnp.where(reached, TARGET_REACHED, jnp.where(at_end, END_OF_FRONT, NO_PROGRESS)),
        ).astype(jnp.int32)

        sig_alpha = _clip_alpha(c.alpha, tan.xi)
        sig_target = _clip_floor(c.losses, delta, floor)
        sig_ray = _clip_ray(c.losses, delta, preference)
        sig_target = jnp.minimum(sig_target, jnp.where(num.toward, sig_ray, jnp.inf))
        sig_clip = jnp.minimum(sig_alpha, sig_target)
        kk = jnp.argmax(jnp.abs(d))
        safe_dn = jnp.where(dn > 0, dn, 1)

        def attempt_cond(a: Attempt):
            return ~a.accepted & (a.tries <= static.max_shrinks) & ~stop_now

        def attempt_body(a: Attempt):
            sigma = jnp.where(start, 0, jnp.minimum(a.s_try / safe_dn, sig_clip))
            pred = predictor(c.params, tan, sigma)
            extra = jnp.zeros((), dtype)
            if ccfg.method == "epo":
                pref = jnp.where(
                    start & num.toward, preference,
                    ray_pref(jnp.where(start, loss_fn(c.params, *args), c.losses + sigma * delta)),
                )
                extra = jnp.where(start, COST_FORWARD, 0).astype(dtype)
            else:
                pref = None
            res = correct(pred, pref)
            realised = res.losses - c.losses
            sign_ok = ~(realised[kk] * d[kk] < 0) | ~(delta[kk] * d[kk] > 0)
            # The start is recorded whatever happens; a failure there ends the trace.
            ok = start | (res.converged & ~res.degenerate & sign_ok)
            return Attempt(a.tries + 1, ok, jnp.where(ok, a.s_try, a.s_try / 2), sigma, res,
                           a.cost + res.cost + extra)

        a0 = Attempt(jnp.int32(0), jnp.bool_(False), c.s, jnp.zeros((), dtype),
                     _zeros_like_shape(result_shape), jnp.zeros((), dtype))
        a = jax.lax.while_loop(attempt_cond, attempt_body, a0)
        accepted = a.accepted & ~stop_now
        res = a.result
        point_cost = tan.cost + a.cost
        status = jnp.where(
            ~start & (a.sigma >= sig_clip),
            jnp.where(sig_alpha <= sig_target, _STATUS_ALPHA_CLIP, _STATUS_TARGET_CLIP),
            _STATUS_FREE,
        ).astype(jnp.int32)
        new_buf = _Buffers(
            params=jax.tree_util.tree_map(lambda b, x: b.at[c.k].set(x), c.buf.params, res.params),
            losses=c.buf.losses.at[c.k].set(res.losses),
            alpha=c.buf.alpha.at[c.k].set(res.alpha),
            stationarity=c.buf.stationarity.at[c.k].set(res.stationarity),
            step=c.buf.step.at[c.k].set(a.sigma * dn),
            predicted_losses=c.buf.predicted_losses.at[c.k].set(
                jnp.where(start, res.losses, c.losses + a.sigma * delta)),
            predicted_alpha=c.buf.predicted_alpha.at[c.k].set(
                jnp.where(start, res.alpha, c.alpha + a.sigma * tan.xi)),
            gmres_iterations=c.buf.gmres_iterations.at[c.k].set(tan.iterations),
            gmres_residual=c.buf.gmres_residual.at[c.k].set(tan.residuals),
            corrector_steps=c.buf.corrector_steps.at[c.k].set(res.steps),
            rejected=c.buf.rejected.at[c.k].set(a.tries - 1),
            status=c.buf.status.at[c.k].set(status),
            cost=c.buf.cost.at[c.k].set(point_cost),
        )
        pick = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda x, y: jnp.where(accepted, x, y), new, old)
        # Step control for the next point: shrink when the corrector struggled.
        struggled = res.steps > ccfg.steps // 2
        s_next = jnp.where(start, c.s, jnp.where(
            struggled, a.s_try / 2, jnp.minimum(num.step_size, a.s_try * 1.5)))
        k = c.k + accepted.astype(jnp.int32)
        start_failed = start & (res.degenerate | ~res.converged)
        # Landing on the target ends the move without another tangent.
        reached_after = accepted & target_reached(res.losses)
        reason = jnp.where(
            stop_now, reason_now,
            jnp.where(start_failed, jnp.where(res.degenerate, NON_FINITE, STEP_TOO_SMALL),
                      jnp.where(~accepted, STEP_TOO_SMALL,
                                jnp.where(reached_after, TARGET_REACHED, BUDGET))),
        ).astype(jnp.int32)
        done = stop_now | ~accepted | start_failed | reached_after | (k >= k_max)
        return Carry(
            k=k,
            done=done,
            reason=reason,
            s=jnp.where(accepted, s_next, c.s),
            params=pick(res.params, c.params),
            losses=pick(res.losses, c.losses),
            alpha=pick(res.alpha, c.alpha),
            buf=pick(new_buf, c.buf),
            total=c.total + point_cost,
        )

    carry0 = Carry(
        k=jnp.int32(0),
        done=jnp.bool_(False),
        reason=jnp.int32(BUDGET),
        s=jnp.asarray(num.step_size, dtype),
        params=params,
        losses=zeros_m,
        alpha=jnp.full((m,), 1 / m, dtype),
        buf=buf,
        total=jnp.zeros((), dtype),
    )
    out = jax.lax.while_loop(lambda c: ~c.done, point_body, carry0)
    length = out.k
    idx = jnp.minimum(jnp.arange(k_max), length - 1)
    b = jax.tree_util.tree_map(lambda x: x[idx], out.buf)
    return Trace(
        params=b.params,
        losses=b.losses,
        alpha=b.alpha,
        stationarity=b.stationarity,
        step=b.step,
        predicted_losses=b.predicted_losses,
        predicted_alpha=b.predicted_alpha,
        gmres_iterations=b.gmres_iterations,
        gmres_residual=b.gmres_residual,
        corrector_steps=b.corrector_steps,
        rejected=b.rejected,
        status=b.status,
        cost=b.cost,
        valid=jnp.arange(k_max) < length,
        length=length,
        stop_reason=out.reason,
        cost_gradient_evals=out.total,
    )


# Compiled once per (loss_fn, static configuration, shapes): repeated traces and every
# Navigator move on the same problem reuse the executable.
_trace_jit = jax.jit(_trace_core, static_argnames=("static", "loss_fn"))


def trace(
    loss_fn: Callable[..., jax.Array],
    params,
    direction,
    num_points: int,
    *args,
    preference=None,
    floor=None,
    step_size=0.1,
    corrector: str = "mgda",
    corrector_steps: int = 200,
    corrector_lr=None,
    corrector_tol=None,
    damping=0.0,
    gmres_maxiter: int = 100,
    gmres_tol: float | None = None,
    gmres_restart: int | None = None,
    batched: bool = True,
    max_shrinks: int = 6,
    alpha_tol=1e-4,
    target_tol=None,
    eps: float = 1e-4,
) -> Trace:
    """Trace the Pareto set from ``params`` following a loss-space preference.

    The start is first corrected onto the Pareto set (:func:`corrector`). Then, at each
    point, :func:`tangent` with the request ``d`` gives ``(v, ξ, δl)``; the predictor
    ``θ + σ v`` is corrected back and accepted or shrunk (module docstring: step
    control); the loop stops at the end of the front, at the target, or after
    ``num_points`` points. The whole loop is one ``jax.lax.while_loop``, compiled once
    per ``loss_fn``, static options and argument types (so repeated calls are cheap:
    a fixed request and ``"toward"`` share one executable; a weakly typed argument, e.g.
    ``jnp.asarray(1.0)``, and a strongly typed one compile separately) and usable under
    ``jax.jit`` and ``jax.vmap``.

    Args:
      loss_fn: ``loss_fn(params, *args) -> losses[m]``.
      params: pytree start (need not be Pareto-critical).
      direction: the request ``d``: an array ``[m]`` (fixed, only its direction matters,
        e.g. :func:`improve_direction`), a callable ``direction(losses) -> [m]``
        re-evaluated at each point (static: a new function object recompiles), or the
        string ``"toward"``: :func:`toward_direction` with ``preference``, re-evaluated at
        each point, with steps shortened to land on the ray and a stop on it.
      num_points: number of points to record, start included (static int ≥ 1).
      *args: data for ``loss_fn`` (arrays).
      preference: ``[m]`` positive; required by ``"toward"``.
      floor: ``[m]`` optional lower bounds on the predicted losses (``-inf`` = none);
        reaching one stops the trace with ``TARGET_REACHED``.
      step_size: largest predicted loss change per step, Euclidean (``> 0``).
      corrector: ``"mgda"`` (back to Pareto-stationarity, every loss decreasing) or
        ``"epo"`` (EPO steps towards the ray through the predicted losses).
      corrector_steps, corrector_lr, corrector_tol: see :func:`corrector`
        (``steps``, ``lr``, ``tol``).
      damping, gmres_maxiter, gmres_tol, gmres_restart, batched: see :func:`tangent`.
      max_shrinks: rejected attempts per point before ``STEP_TOO_SMALL``.
      alpha_tol: a KKT weight at or below it that the tangent would lower ends the front.
      target_tol: tolerance of the target tests (ray: ``sin∠(l, 1/r)``; floor: relative);
        default ``sqrt(eps_dtype)``.
      eps: EPO's non-uniformity threshold for ``corrector="epo"``.

    Returns:
      :class:`Trace`.
    """
    _check_params(params)
    m, dtype = _num_tasks(loss_fn, params, args)
    num_points = _check_int(num_points, "num_points", 1)
    fn = None
    if isinstance(direction, str):
        if direction != "toward":
            raise ValueError(f"`direction` string must be 'toward', got {direction!r}.")
        mode, toward = "array", True
        preference = check_preference(preference, m).astype(dtype)
        d_fixed = jnp.zeros((m,), dtype)
    elif callable(direction):
        mode, fn, toward = "callable", direction, False
        d_fixed = jnp.zeros((m,), dtype)
    else:
        mode, toward = "array", False
        d_fixed = check_float(direction, "direction")
        if d_fixed.shape != (m,):
            raise ValueError(
                f"`direction` must have shape ({m},) to match m={m} tasks, got {d_fixed.shape}."
            )
        d_fixed = d_fixed.astype(dtype)
    if not toward:
        preference = jnp.ones((m,), dtype) if preference is None else check_preference(
            preference, m).astype(dtype)
    if floor is None:
        floor = jnp.full((m,), -jnp.inf, dtype)
    else:
        floor = jnp.asarray(floor)
        if floor.shape != (m,):
            raise ValueError(
                f"`floor` must have shape ({m},) to match m={m} tasks, got {floor.shape}."
            )
        floor = check_float(floor, "floor").astype(dtype)
    if corrector not in _CORRECTOR_METHODS:
        raise ValueError(f"`corrector` must be one of {_CORRECTOR_METHODS}, got {corrector!r}.")
    _check_scalar(step_size, "step_size", positive=True)
    _check_scalar(damping, "damping", nonnegative=True)
    _check_scalar(alpha_tol, "alpha_tol", nonnegative=True)
    _check_eps(eps)
    corrector_steps = _check_int(corrector_steps, "corrector_steps", 1)
    max_shrinks = _check_int(max_shrinks, "max_shrinks", 0)
    _check_int(gmres_maxiter, "gmres_maxiter", 1)
    if gmres_restart is not None:
        _check_int(gmres_restart, "gmres_restart", 1)
    if not isinstance(batched, bool):
        raise TypeError(f"`batched` must be a bool, got {type(batched).__name__}.")
    line_search = corrector == "mgda"
    lr = (1.0 if line_search else 0.1) if corrector_lr is None else corrector_lr
    _check_scalar(lr, "corrector_lr", positive=True)
    root_eps = float(np.sqrt(np.finfo(np.float64).eps)), float(np.sqrt(np.finfo(np.float32).eps))
    ctol = _default(corrector_tol, dtype, *root_eps)
    ttol = _default(target_tol, dtype, *root_eps)
    _check_scalar(ctol, "corrector_tol", nonnegative=True)
    _check_scalar(ttol, "target_tol", nonnegative=True)
    static = _TraceStatic(
        num_points=num_points,
        mode=mode,
        direction_fn=fn,
        tangent=_TangentConfig(gmres_restart, gmres_tol, batched),
        corrector=_CorrectorConfig(corrector, corrector_steps, line_search, 30, float(eps)),
        max_shrinks=max_shrinks,
    )
    as_dtype = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    numeric = _TraceNumeric(
        toward=jnp.asarray(toward),
        step_size=as_dtype(step_size),
        damping=as_dtype(damping),
        maxiter=jnp.asarray(gmres_maxiter, jnp.int32),
        lr=as_dtype(lr),
        corrector_tol=as_dtype(ctol),
        alpha_tol=as_dtype(alpha_tol),
        target_tol=as_dtype(ttol),
        end_tol=as_dtype(ttol),
    )
    # Weakly typed leaves (e.g. jnp.full(n, 0.5)) would otherwise recompile.
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.result_type(x)), params)
    return _trace_jit(params, tuple(args), d_fixed, preference, floor, numeric,
                      static=static, loss_fn=loss_fn)


# ------------------------------------------------------------------------- navigator


class Navigator:
    """Interactive exploration of the Pareto set: a stateful shell around :func:`trace`.

    ``nav = Navigator(loss_fn, params, *args, step_size=0.05)`` corrects ``params`` onto
    the Pareto set; then ``nav.improve(task, amount)`` moves along the front until task
    ``task``'s loss has dropped by ``amount`` (or the front ends), ``nav.toward(r)``
    moves to the front's point on the ray ``r ⊙ l ∝ 1`` (or as close as the front
    allows), and ``nav.undo()`` returns to where the last move started. Each move is one
    :func:`trace` call (compiled once per kind of move) and is kept in ``history``.

    Attributes:
      params: current parameters.
      losses, alpha: ``[m]`` at the current point.
      front: ``[N, m]`` numpy array of the loss vectors visited by the moves in the
        history, in order (the start first); an undone move's points are removed.
      history: list of :class:`Trace`, one per move (the first is the initial
        correction: a one-point trace with a zero request, whose ``stop_reason`` is
        therefore ``NO_PROGRESS`` or ``END_OF_FRONT``).
      cost: total gradient-evaluation equivalents spent (undone moves included).
    """

    def __init__(self, loss_fn: Callable[..., jax.Array], params, *args, **trace_options):
        for bad in ("direction", "num_points", "preference", "floor"):
            if bad in trace_options:
                raise TypeError(f"Navigator sets `{bad}` itself; do not pass it.")
        self._loss_fn = loss_fn
        self._args = args
        self._max_points = trace_options.pop("max_points", 50)
        _check_int(self._max_points, "max_points", 2)
        self._options = trace_options
        self.m, dtype = _num_tasks(loss_fn, params, args)
        # The initial correction is a trace with a zero request: it corrects the start,
        # finds no direction and stops; it shares the executable of `improve` moves.
        start = trace(loss_fn, params, jnp.zeros((self.m,), dtype), self._max_points, *args,
                      **trace_options)
        self.history: list[Trace] = [start]
        self.cost = float(start.cost_gradient_evals)

    def _last(self, field: str):
        t = self.history[-1]
        i = int(t.length) - 1
        return jax.tree_util.tree_map(lambda x: x[i], getattr(t, field))

    @property
    def params(self):
        return self._last("params")

    @property
    def losses(self) -> jax.Array:
        return self._last("losses")

    @property
    def alpha(self) -> jax.Array:
        return self._last("alpha")

    @property
    def front(self) -> np.ndarray:
        parts = [np.asarray(self.history[0].losses[:1])]
        for t in self.history[1:]:
            parts.append(np.asarray(t.losses[1:int(t.length)]))
        return np.concatenate(parts, axis=0)

    def _move(self, direction, **kwargs) -> Trace:
        t = trace(self._loss_fn, self.params, direction, self._max_points, *self._args,
                  **kwargs, **self._options)
        self.history.append(t)
        self.cost += float(t.cost_gradient_evals)
        return t

    def improve(self, task: int, amount) -> Trace:
        """Lower task ``task``'s loss by ``amount``, letting the others rise along the
        front. Returns the move's :class:`Trace` (``stop_reason`` says whether the
        target or the end of the front was reached)."""
        d = improve_direction(self.m, task, amount)
        _check_scalar(amount, "amount", positive=True)
        losses = self.losses
        floor = jnp.full((self.m,), -jnp.inf, losses.dtype).at[task].set(losses[task] - amount)
        return self._move(d.astype(losses.dtype), floor=floor)

    def toward(self, preference) -> Trace:
        """Move along the front to its point on the ray ``preference ⊙ l ∝ 1``."""
        preference = check_preference(preference, self.m)
        return self._move("toward", preference=preference)

    def undo(self):
        """Return to the point before the last move; returns the restored params."""
        if len(self.history) <= 1:
            raise ValueError("Nothing to undo: no move has been made.")
        self.history.pop()
        return self.params
