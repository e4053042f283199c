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

from jaxpareto._validate import check_preference, check_vector, working_dtype
from jaxpareto.weighting.base import Weighting, factory_preference


class ScalarizationState(NamedTuple):
    """State of a scalarization weighting: the last weights and whether the preference
    had to be replaced (non-finite or non-positive entries at run time)."""

    weights: jax.Array
    invalid_preference: jax.Array


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
        weights=jnp.full((num_tasks,), 1.0 / num_tasks, dtype),
        invalid_preference=jnp.asarray(False),
    )


def _resolve_preference(default, given, m):
    if given is None:
        if default is None:
            return jnp.ones(m)
        return default
    return check_preference(given, m)


def linear(preference: jax.Array | None = None) -> Weighting:
    """Linear scalarization as a weighting: weights ``r / Σ r`` (uniform without ``r``).

    ``update`` accepts a run-time ``preference`` that overrides the one given here.
    """
    preference = factory_preference(preference)

    def update(gram, state, *, losses=None, preference=None):
        del losses
        m = state.weights.shape[0]
        r = _resolve_preference(_default, preference, m)
        r, invalid = _safe_preference(r.astype(state.weights.dtype))
        w = r / jnp.sum(r)
        return w, ScalarizationState(w, invalid)

    _default = preference
    return Weighting(_init, update, None if preference is None else preference.shape[0])


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
        del gram
        if losses is None:
            raise ValueError("`losses` is required by the chebyshev weighting (pass value=losses).")
        m = state.weights.shape[0]
        r = _resolve_preference(_default, preference, m)
        _, invalid = _safe_preference(jnp.asarray(r))
        w = chebyshev_weights(losses, r, ideal, smoothing=smoothing).astype(state.weights.dtype)
        return w, ScalarizationState(w, invalid)

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
    return chebyshev(preference, ideal, smoothing=smoothing)
