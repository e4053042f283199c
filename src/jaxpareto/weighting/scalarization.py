"""Scalarizations: linear (weighted sum) and Tchebycheff (Chebyshev) weightings.

These are the baselines users compare against. Both are written as weights on the
task gradients so they share the optax plumbing with MGDA / EPO:

* linear scalarization ``L(θ) = Σ_i r_i l_i(θ)`` has gradient ``Σ_i r_i ∇l_i``, so its
  weights are ``r / Σ r`` (normalised to the simplex; the direction is unchanged);
* the (weighted) Tchebycheff scalarization ``L(θ) = max_i r_i (l_i(θ) − z_i)`` has the
  (sub)gradient ``r_k ∇l_k`` with ``k = argmax_i r_i (l_i − z_i)``; its weights are the
  indicator ``e_k`` (simplex-normalised);
* the smooth Tchebycheff scalarization (Lin et al. 2024, "Smooth Tchebycheff
  scalarization for multi-objective optimization", eq. 6)
  ``L_μ(θ) = μ log Σ_i exp(r_i (l_i − z_i) / μ)`` has gradient
  ``Σ_i softmax(r ⊙ (l − z) / μ)_i r_i ∇l_i``; its weights are that vector normalised.

A linear scalarization reaches only the convex hull of the front: on a concave front
(e.g. the EPO synthetic problem) every weight vector lands on an end point.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpareto._guard import all_finite
from jaxpareto._validate import check_preference, check_vector, working_dtype
from jaxpareto.weighting.base import (
    Weighting,
    core_fields,
    factory_preference,
    pick_status,
    weighting_factory,
)


class ScalarizationState(NamedTuple):
    """State of a scalarization weighting.

    Attributes:
      weights: ``[m]`` the last weights.
      status: int32 ``[]`` a :class:`~jaxpareto.status.Status`: ``NONFINITE_INPUT`` when
        the losses (or the Gramian) held a NaN/inf, else ``SUCCESSFUL`` (closed form).
      converged: bool ``[]`` True unless the input was non-finite.
      iterations: int32 ``[]`` 0 (closed form).
      invalid_preference: bool ``[]`` the preference had to be replaced (non-finite or
        non-positive entries at run time).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    invalid_preference: jax.Array


def _state(w, invalid, gram=None, losses=None) -> ScalarizationState:
    """The state after an update: the status reads the inputs' finiteness."""
    finite = all_finite(gram, losses)
    return ScalarizationState(
        w, pick_status(nonfinite=~finite), finite, jnp.zeros((), jnp.int32), invalid
    )


def _safe_preference(preference: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Run-time guard for a traced preference: invalid -> uniform, flagged."""
    ok = jnp.all(jnp.isfinite(preference)) & jnp.all(preference > 0)
    uniform = jnp.ones_like(preference)
    return jnp.where(ok, preference, uniform), ~ok


def linear_weights(preference: jax.Array) -> jax.Array:
    """Weights of linear scalarization: ``r / Σ r``.

    Args:
      preference: ``[m]`` positive.

    Returns:
      ``[m]`` on the simplex. A (traced) preference with non-finite or non-positive
      entries gives uniform weights.
    """
    preference = jnp.asarray(preference)
    if preference.ndim != 1:
        raise ValueError(f"`preference` must be a vector [m], got shape {preference.shape}.")
    preference = check_preference(preference, preference.shape[0])
    r, _ = _safe_preference(preference)
    return r / jnp.sum(r)


def chebyshev_weights(
    losses: jax.Array,
    preference: jax.Array,
    ideal: jax.Array | None = None,
    *,
    smoothing: float | None = None,
) -> jax.Array:
    """Weights of the (smooth) Tchebycheff scalarization ``max_i r_i (l_i − z_i)``.

    Args:
      losses: ``[m]``.
      preference: ``[m]`` positive.
      ideal: ``[m]`` ideal point ``z`` (default zeros).
      smoothing: ``None`` for the hard max (weights ``e_k``, ``k`` the argmax, first
        index on ties); a positive ``μ`` for the smooth Tchebycheff scalarization of
        Lin et al. (2024) (weights ``∝ softmax(r ⊙ (l − z) / μ) ⊙ r``).

    Returns:
      ``[m]`` on the simplex. Non-finite entries of ``r ⊙ (l − z)`` are replaced by the
      largest finite entry (0 if none) so that the weights stay finite.
    """
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(f"`losses` must be a vector [m], got shape {losses.shape}.")
    m = losses.shape[0]
    losses = check_vector(losses, m, "losses")
    preference = check_preference(preference, m)
    if smoothing is not None and not smoothing > 0:
        raise ValueError(f"`smoothing` must be positive or None, got {smoothing!r}.")
    dtype = working_dtype(losses, preference)
    losses = losses.astype(dtype)
    r, _ = _safe_preference(preference.astype(dtype))
    z = jnp.zeros(m, dtype) if ideal is None else check_vector(ideal, m, "ideal").astype(dtype)
    gap = r * (losses - z)
    finite = jnp.isfinite(gap)
    gap = jnp.where(finite, gap, jnp.max(jnp.where(finite, gap, -jnp.inf), initial=0.0))
    if smoothing is None:
        return jax.nn.one_hot(jnp.argmax(gap), m, dtype=dtype)
    w = jax.nn.softmax(gap / smoothing) * r
    return w / jnp.sum(w)


def _init(num_tasks: int, dtype=jnp.float32) -> ScalarizationState:
    if num_tasks < 1:
        raise ValueError(f"`num_tasks` must be >= 1, got {num_tasks}.")
    return ScalarizationState(
        **core_fields(num_tasks, dtype), invalid_preference=jnp.asarray(False)
    )


def _resolve_preference(default, given, m):
    if given is None:
        if default is None:
            return jnp.ones(m)
        return default
    return check_preference(given, m)


@weighting_factory
def linear(preference: jax.Array | None = None) -> Weighting:
    """Linear scalarization as a weighting: weights ``r / Σ r`` (uniform without ``r``).

    ``update`` accepts a run-time ``preference`` that overrides the one given here.
    """
    preference = factory_preference(preference)

    def update(gram, state, *, losses=None, preference=None):
        m = state.weights.shape[0]
        r = _resolve_preference(_default, preference, m)
        r, invalid = _safe_preference(r.astype(state.weights.dtype))
        w = r / jnp.sum(r)
        return w, _state(w, invalid, gram, losses)

    _default = preference
    return Weighting(_init, update, None if preference is None else preference.shape[0])


@weighting_factory(legacy_positional=("ideal",))
def chebyshev(
    preference: jax.Array | None = None,
    ideal: jax.Array | None = None,
    *,
    smoothing: float | None = None,
) -> Weighting:
    """Tchebycheff scalarization as a weighting (see :func:`chebyshev_weights`).

    ``update`` needs ``losses``; a run-time ``preference`` overrides the one given here.
    """
    preference = factory_preference(preference)
    if smoothing is not None and not smoothing > 0:
        raise ValueError(f"`smoothing` must be positive or None, got {smoothing!r}.")

    def update(gram, state, *, losses=None, preference=None):
        if losses is None:
            raise ValueError("`losses` is required by the chebyshev weighting (pass value=losses).")
        m = state.weights.shape[0]
        r = _resolve_preference(_default, preference, m)
        _, invalid = _safe_preference(jnp.asarray(r))
        w = chebyshev_weights(losses, r, ideal, smoothing=smoothing).astype(state.weights.dtype)
        return w, _state(w, invalid, gram, losses)

    _default = preference
    return Weighting(_init, update, None if preference is None else preference.shape[0])


def smooth_chebyshev_weights(
    losses: jax.Array,
    preference: jax.Array | None = None,
    ideal: jax.Array | None = None,
    *,
    smoothing: float = 0.1,
) -> jax.Array:
    """Weights of the smooth Tchebycheff scalarization (Lin et al. 2024, eq. 6).

    ``L_μ(θ) = μ log Σ_i exp(r_i (l_i(θ) − z_i) / μ)`` has the gradient
    ``Σ_i p_i r_i ∇l_i`` with ``p = softmax(r ⊙ (l − z) / μ)``; the weights are
    ``p ⊙ r`` normalised to the simplex (the direction is unchanged). As ``μ → 0`` they
    tend to the hard Tchebycheff weights ``e_k``; ``L_μ`` overestimates the max by at
    most ``μ log m``.

    Args:
      losses: ``[m]``.
      preference: ``[m]`` positive ``r``; default ones.
      ideal: ``[m]`` ideal point ``z``; default zeros.
      smoothing: ``μ > 0`` (default 0.1, a choice for losses of order one, not a value
        from the paper: scale it with the losses).

    Returns:
      ``[m]`` on the simplex (see :func:`chebyshev_weights` for the guards).
    """
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(f"`losses` must be a vector [m], got shape {losses.shape}.")
    if preference is None:
        preference = jnp.ones(
            losses.shape, losses.dtype if jnp.issubdtype(losses.dtype, jnp.floating) else float
        )
    if smoothing is None or not smoothing > 0:
        raise ValueError(f"`smoothing` must be a positive float, got {smoothing!r}.")
    return chebyshev_weights(losses, preference, ideal, smoothing=smoothing)


@weighting_factory(legacy_positional=("ideal",))
def smooth_chebyshev(
    preference: jax.Array | None = None,
    ideal: jax.Array | None = None,
    *,
    smoothing: float = 0.1,
) -> Weighting:
    """Smooth Tchebycheff scalarization (Lin et al. 2024) as a weighting:
    ``chebyshev(preference, ideal, smoothing=smoothing)`` with a required ``μ > 0``
    (see :func:`smooth_chebyshev_weights`)."""
    if smoothing is None or not smoothing > 0:
        raise ValueError(f"`smoothing` must be a positive float, got {smoothing!r}.")
    return chebyshev(preference, ideal=ideal, smoothing=smoothing)


# ---------------------------------------------------------------------------------------
# Scalarizations from the decomposition literature, as weightings whose weights are the
# *raw* gradient ``∂S/∂l`` of the scalarization ``S(l)`` (not normalised: the update is
# ``Σ_i (∂S/∂l_i) ∇l_i = ∇_θ S(l(θ))`` exactly, and PBI / COSMOS weights can be negative).
# Kinks (a max, a zero norm) get a documented subgradient; a non-finite loss vector gives
# the linear weights ``r`` (finite), and the transforms skip such a step anyway.


def _scal_inputs(losses, preference, ideal):
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(f"`losses` must be a vector [m], got shape {losses.shape}.")
    m = losses.shape[0]
    losses = check_vector(losses, m, "losses")
    if preference is None:
        preference = jnp.ones((m,), losses.dtype)
    preference = check_preference(preference, m)
    dtype = working_dtype(losses, preference)
    r, _ = _safe_preference(preference.astype(dtype))
    z = jnp.zeros(m, dtype) if ideal is None else check_vector(ideal, m, "ideal").astype(dtype)
    l = losses.astype(dtype)
    finite = jnp.all(jnp.isfinite(l)) & jnp.all(jnp.isfinite(z))
    x = jnp.where(finite, l - z, 0)
    return x, r, finite


def _one_task(x):
    """The ``m = 1`` weight of every weighting: exactly 1 (the update is the gradient;
    :func:`jaxpareto.weighting.base.single_task`). ``m`` is a static shape, so this is
    decided at trace time."""
    return jnp.ones((1,), x.dtype)


def _soft_argmax(v, smoothing):
    if smoothing is None:
        return jax.nn.one_hot(jnp.argmax(v), v.shape[0], dtype=v.dtype)
    return jax.nn.softmax(v / smoothing)


def _check_positive(value, name):
    if value is None or not value > 0:
        raise ValueError(f"`{name}` must be a positive float, got {value!r}.")
    return float(value)


def _check_nonneg(value, name):
    if value is None or not value >= 0:
        raise ValueError(f"`{name}` must be a float >= 0, got {value!r}.")
    return float(value)


def pbi_weights(losses, preference=None, ideal=None, *, penalty: float = 5.0) -> jax.Array:
    """∂S/∂l of penalty-based boundary intersection (Zhang & Li, IEEE TEC 2007, MOEA/D,
    eq. 7; pymoo's ``PBI``): with ``r̂ = r / ‖r‖`` and ``v = l − z``,

        d₁ = ⟨v, r̂⟩,   d₂ = ‖v − d₁ r̂‖,   S = d₁ + θ d₂,
        ∂S/∂l = r̂ + θ (v − d₁ r̂) / d₂.

    On the ray (``d₂ = 0``, where ``S`` has a kink) the subgradient ``r̂`` is used.

    Args:
      losses: ``[m]``; preference: ``[m]`` positive (default ones); ideal: ``[m]``
        ``z`` (default zeros); penalty: ``θ ≥ 0`` (default 5, MOEA/D's and pymoo's).
    """
    penalty = _check_nonneg(penalty, "penalty")
    x, r, finite = _scal_inputs(losses, preference, ideal)
    rh = r / jnp.linalg.norm(r)
    d1 = x @ rh
    res = x - d1 * rh
    d2 = jnp.linalg.norm(res)
    tiny = jnp.finfo(x.dtype).tiny
    w = rh + penalty * jnp.where(d2 > jnp.sqrt(tiny), res / jnp.where(d2 > 0, d2, 1), 0)
    return jnp.where(finite, w, r)


def cosmos_weights(losses, preference=None, *, penalty: float = 1.0) -> jax.Array:
    """∂S/∂l of the COSMOS objective (Ruchte & Grabocka, ICDM 2021, "Scalable Pareto
    front approximation for deep multi-objective learning", eq. 4):

        S = rᵀl − λ cos(r, l),
        ∂S/∂l = r − λ (r / (‖r‖‖l‖) − (rᵀl) l / (‖r‖‖l‖³)).

    At ``l = 0`` (cosine undefined) the cosine term's subgradient 0 is used.

    Args:
      losses: ``[m]``; preference: ``[m]`` positive (default ones); penalty: ``λ ≥ 0``
        (default 1, a choice: the paper tunes λ per problem).
    """
    penalty = _check_nonneg(penalty, "penalty")
    x, r, finite = _scal_inputs(losses, preference, None)
    nl, nr = jnp.linalg.norm(x), jnp.linalg.norm(r)
    tiny = jnp.finfo(x.dtype).tiny
    safe = jnp.where(nl > jnp.sqrt(tiny), nl, 1)
    dcos = r / (nr * safe) - (r @ x) * x / (nr * safe**3)
    w = r - penalty * jnp.where(nl > jnp.sqrt(tiny), dcos, 0)
    return jnp.where(finite, w, r)


def aasf_weights(
    losses, preference=None, ideal=None, *, rho: float = 1e-4, smoothing: float | None = None
) -> jax.Array:
    """∂S/∂l of the augmented achievement scalarizing function (Wierzbicki 1980, "The use
    of reference objectives in multiobjective optimization"; pymoo's ``AASF``):

        S = max_i (l_i − z_i) / r_i + ρ Σ_i (l_i − z_i) / r_i,
        ∂S/∂l = e_k / r_k + ρ / r,    k = argmax_i (l_i − z_i) / r_i.

    ``r`` acts as a reference *direction* (division, as in pymoo), unlike the
    Tchebycheff weights. Ties take the first index; ``smoothing = μ > 0`` replaces
    ``e_k`` by ``softmax(((l − z)/r) / μ)`` (the gradient of the log-sum-exp smoothing).

    One task (``m = 1``): the weight is exactly 1 (the update is the gradient), not the
    positive multiple ``(1 + ρ) / r`` of it that ``∂S/∂l`` would give.

    Args:
      losses, preference (positive, default ones), ideal (default zeros);
      rho: augmentation ``ρ ≥ 0``; smoothing: ``None`` (hard max) or ``μ > 0``.
    """
    rho = _check_nonneg(rho, "rho")
    if smoothing is not None:
        smoothing = _check_positive(smoothing, "smoothing")
    x, r, finite = _scal_inputs(losses, preference, ideal)
    if x.shape[0] == 1:
        return _one_task(x)
    v = x / r
    w = _soft_argmax(v, smoothing) / r + rho / r
    return jnp.where(finite, w, r)


def aug_chebyshev_weights(
    losses, preference=None, ideal=None, *, rho: float = 1e-3, smoothing: float | None = None
) -> jax.Array:
    """∂S/∂l of the augmented weighted Tchebycheff scalarization (Steuer & Choo,
    Math. Programming 1983, "An interactive weighted Tchebycheff procedure for multiple
    objective programming", eq. 3)::

        S = max_i r_i |l_i − z_i| + ρ Σ_i |l_i − z_i|,
        ∂S/∂l = r_k sgn(l_k − z_k) e_k + ρ sgn(l − z).

    The augmentation removes the weakly Pareto-optimal solutions of the plain
    Tchebycheff problem. ``sgn(0) = 0`` and ties take the first index (subgradients);
    ``smoothing = μ > 0`` replaces ``e_k`` by the softmax of ``r ⊙ |l − z| / μ``.

    One task (``m = 1``): the weight is exactly 1 (the update is the gradient), not
    ``(r + ρ) sgn(l − z)``.

    Args:
      losses, preference (positive, default ones), ideal (default zeros);
      rho: ``ρ ≥ 0``; smoothing: ``None`` or ``μ > 0``.
    """
    rho = _check_nonneg(rho, "rho")
    if smoothing is not None:
        smoothing = _check_positive(smoothing, "smoothing")
    x, r, finite = _scal_inputs(losses, preference, ideal)
    if x.shape[0] == 1:
        return _one_task(x)
    s = jnp.sign(x)
    w = _soft_argmax(r * jnp.abs(x), smoothing) * r * s + rho * s
    return jnp.where(finite, w, r)


def pnorm_weights(losses, preference=None, ideal=None, *, p: float = 2.0) -> jax.Array:
    """∂S/∂l of the weighted ``p``-norm scalarization (compromise programming, Yu 1973;
    Miettinen 1999, Sec. 3.4): ``S = ‖r ⊙ (l − z)‖_p``, ``p ≥ 1``, with gradient::

        ∂S/∂l_i = r_i sgn(x_i) |x_i|^{p−1} / S^{p−1},   x = r ⊙ (l − z).

    ``p = 1`` is the linear scalarization (on ``l ≥ z``) and ``p → ∞`` Tchebycheff. At
    ``S = 0`` the subgradient 0 is used.

    Args:
      losses, preference (positive, default ones), ideal (default zeros); p: ``≥ 1``.
    """
    if p is None or not p >= 1:
        raise ValueError(f"`p` must be a float >= 1, got {p!r}.")
    p = float(p)
    x, r, finite = _scal_inputs(losses, preference, ideal)
    y = r * x
    a = jnp.abs(y)
    scale = jnp.max(a)
    tiny = jnp.finfo(x.dtype).tiny
    ok = scale > tiny
    u = a / jnp.where(ok, scale, 1)  # scaled to avoid overflow of |x|^p
    norm_u = jnp.sum(u**p) ** (1 / p)
    w = r * jnp.sign(y) * u ** (p - 1) / jnp.where(ok, norm_u, 1) ** (p - 1)
    w = jnp.where(ok, w, 0)
    return jnp.where(finite, w, r)


def _loss_weighting(fn, preference, name, num_tasks=None, **options) -> Weighting:
    default = factory_preference(preference)
    fixed = None if default is None else default.shape[0]
    if num_tasks is not None and fixed is not None and num_tasks != fixed:
        raise ValueError(f"`num_tasks`={num_tasks} disagrees with len(preference)={fixed}.")

    def update(gram, state, *, losses=None, preference=None):
        if losses is None:
            raise ValueError(f"`losses` is required by the {name} weighting (pass losses=).")
        m = state.weights.shape[0]
        r = _resolve_preference(default, preference, m)
        _, invalid = _safe_preference(jnp.asarray(r))
        w = fn(losses, r, **options).astype(state.weights.dtype)
        return w, _state(w, invalid, gram, losses)

    return Weighting(_init, update, fixed if num_tasks is None else num_tasks)


@weighting_factory
def pbi(preference=None, *, num_tasks=None, ideal=None, penalty: float = 5.0) -> Weighting:
    """PBI as a weighting: raw weights :func:`pbi_weights` (``update`` needs ``losses``;
    a run-time ``preference`` overrides the one given here)."""
    _check_nonneg(penalty, "penalty")
    return _loss_weighting(
        lambda l, r, **o: pbi_weights(l, r, ideal, **o),
        preference,
        "pbi",
        num_tasks,
        penalty=penalty,
    )


@weighting_factory
def cosmos(preference=None, *, num_tasks=None, penalty: float = 1.0) -> Weighting:
    """COSMOS as a weighting: raw weights :func:`cosmos_weights` (needs ``losses``)."""
    _check_nonneg(penalty, "penalty")
    return _loss_weighting(cosmos_weights, preference, "cosmos", num_tasks, penalty=penalty)


@weighting_factory
def aasf(
    preference=None,
    *,
    num_tasks=None,
    ideal=None,
    rho: float = 1e-4,
    smoothing: float | None = None,
) -> Weighting:
    """AASF as a weighting: raw weights :func:`aasf_weights` (needs ``losses``); one
    task (``m = 1``) gives the weight 1 (the update is the gradient)."""
    _check_nonneg(rho, "rho")
    if smoothing is not None:
        _check_positive(smoothing, "smoothing")
    return _loss_weighting(
        lambda l, r, **o: aasf_weights(l, r, ideal, **o),
        preference,
        "aasf",
        num_tasks,
        rho=rho,
        smoothing=smoothing,
    )


@weighting_factory
def aug_chebyshev(
    preference=None,
    *,
    num_tasks=None,
    ideal=None,
    rho: float = 1e-3,
    smoothing: float | None = None,
) -> Weighting:
    """Augmented Tchebycheff as a weighting: raw weights :func:`aug_chebyshev_weights`;
    one task (``m = 1``) gives the weight 1 (the update is the gradient)."""
    _check_nonneg(rho, "rho")
    if smoothing is not None:
        _check_positive(smoothing, "smoothing")
    return _loss_weighting(
        lambda l, r, **o: aug_chebyshev_weights(l, r, ideal, **o),
        preference,
        "aug_chebyshev",
        num_tasks,
        rho=rho,
        smoothing=smoothing,
    )


@weighting_factory
def pnorm(preference=None, *, num_tasks=None, ideal=None, p: float = 2.0) -> Weighting:
    """Weighted ``p``-norm as a weighting: raw weights :func:`pnorm_weights`."""
    if p is None or not p >= 1:
        raise ValueError(f"`p` must be a float >= 1, got {p!r}.")
    return _loss_weighting(
        lambda l, r, **o: pnorm_weights(l, r, ideal, **o), preference, "pnorm", num_tasks, p=p
    )


# Loss-only rules for :func:`jaxpareto.hypernetwork.train_step` (``rule=<name>``): each
# maps ``(losses [m], preference [m]) -> weights [m]`` with the defaults above.
LOSS_RULES = {
    "pbi": pbi_weights,
    "cosmos": cosmos_weights,
    "aasf": aasf_weights,
    "aug_chebyshev": aug_chebyshev_weights,
    "pnorm": pnorm_weights,
}
