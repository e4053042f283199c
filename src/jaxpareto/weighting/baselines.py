"""The baselines ``random``, ``sum`` and ``constant`` with raw (unnormalised) weights.

These are TorchJD's ``Random``, ``Sum`` and ``Constant`` aggregators:

* ``sum``: ``w = 1`` (``d = Σ_i g_i``, the gradient of the summed loss);
* ``constant(weights)``: ``w`` fixed at construction, used as given (no normalisation,
  negative entries allowed);
* ``random``: ``w = softmax(z)``, ``z ~ N(0, I_m)`` drawn afresh at every update — the
  random loss weighting of Lin et al. (TMLR 2022, "Reasonable effectiveness of random
  weighting: a litmus test for multi-task learning", Algorithm 2), with TorchJD's
  standard-normal logits. The weights lie on the simplex (their expectation is
  ``1/m``); the state holds a PRNG key that is split at every update.

Their states start with the kit's core fields (:mod:`jaxpareto.weighting.base`):
``init`` gives ``weights = 1/m`` (the convention's starting point, also for ``sum`` and
``constant``, whose every update then holds ``1`` resp. the given weights), ``status =
SUCCESSFUL``, ``converged = True``, ``iterations = 0``. None of them reads the Gramian; a Gramian with a non-finite entry sets
``status = NONFINITE_INPUT`` but leaves the weights as they are (they never depend on
it). Properties: ``sum`` and ``constant`` are linear under task scaling and scale free;
``sum`` is permutation invariant, ``constant`` is not (its weights are attached to task
indices); ``random`` is permutation invariant in distribution only. None is
non-conflicting.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_gram
from jaxpareto.weighting._field import FieldState, KeyState, default_key
from jaxpareto.weighting.base import (
    Weighting,
    check_num_tasks,
    check_state_matches,
    core_fields,
    pick_status,
    weighting_factory,
)

__all__ = ["constant", "random", "random_weights", "sum"]


def _nonfinite_status(gram):
    return pick_status(nonfinite=~jnp.all(jnp.isfinite(gram)))


def _updated(weights, gram) -> FieldState:
    """The state after an update: the weights never depend on the Gramian, so they are
    exact (``converged``) whatever it holds; a non-finite one is only reported."""
    return FieldState(
        weights=weights,
        status=_nonfinite_status(gram),
        converged=jnp.asarray(True),
        iterations=jnp.zeros((), jnp.int32),
    )


@weighting_factory
def sum(*, num_tasks: int | None = None) -> Weighting:
    """Sum of the task gradients: ``w = 1`` (TorchJD ``Sum``), ``d = Σ_i g_i``.

    Args:
      num_tasks: optional fixed ``m``.

    Returns:
      ``Weighting``; ``update(gram, state, *, losses=None, preference=None)`` ignores the
      losses and preference. State: :class:`~jaxpareto.weighting._field.FieldState`
      (``weights = 1/m`` after ``init``, ``1`` after every update).
    """

    def init(num_tasks: int, dtype=jnp.float32) -> FieldState:
        return FieldState(**core_fields(num_tasks, dtype))

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        w = jnp.ones_like(state.weights)
        return w, _updated(w, gram)

    return Weighting(init, update, num_tasks)


@weighting_factory
def constant(weights, *, num_tasks: int | None = None) -> Weighting:
    """Fixed raw weights (TorchJD ``Constant``): ``d = Σ_i w_i g_i`` with ``w`` as given.

    Args:
      weights: ``[m]`` finite weights (any sign, not normalised); fixes ``m``.
      num_tasks: optional; must equal ``len(weights)``.

    Returns:
      ``Weighting`` with ``num_tasks = m``; state
      :class:`~jaxpareto.weighting._field.FieldState` (``weights = 1/m`` after ``init``,
      the given weights after every update).
    """
    w0 = jnp.asarray(weights)
    if w0.ndim != 1 or w0.shape[0] < 1:
        raise ValueError(f"`weights` must be a non-empty vector [m], got shape {w0.shape}.")
    if not jnp.issubdtype(w0.dtype, jnp.floating) and not jnp.issubdtype(w0.dtype, jnp.integer):
        raise TypeError(f"`weights` must be numeric, got dtype {w0.dtype}.")
    if not bool(jnp.all(jnp.isfinite(w0))):
        raise ValueError("`weights` must be finite.")
    m = int(w0.shape[0])
    if num_tasks is not None and num_tasks != m:
        raise ValueError(f"`num_tasks`={num_tasks} disagrees with len(weights)={m}.")

    def init(num_tasks: int, dtype=jnp.float32) -> FieldState:
        num_tasks = check_num_tasks(num_tasks)
        if num_tasks != m:
            raise ValueError(f"`num_tasks`={num_tasks} disagrees with len(weights)={m}.")
        return FieldState(**core_fields(num_tasks, dtype))

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        w = w0.astype(state.weights.dtype)
        return w, _updated(w, gram)

    return Weighting(init, update, m)


@functools.partial(jax.jit, static_argnames=("num_tasks", "dtype"))
def random_weights(key: jax.Array, num_tasks: int, dtype=jnp.float32) -> jax.Array:
    """``softmax(z)`` with ``z ~ N(0, I_m)`` drawn from ``key`` (TorchJD ``RandomWeighting``;
    Lin et al. 2022, Algorithm 2)."""
    z = jax.random.normal(key, (num_tasks,), dtype)
    return jax.nn.softmax(z)


@weighting_factory
def random(seed: int | jax.Array = 0, *, num_tasks: int | None = None) -> Weighting:
    """Random weights ``softmax(z)``, ``z ~ N(0, I)``, fresh at every update (TorchJD
    ``Random``; Lin et al., TMLR 2022, Algorithm 2).

    Args:
      seed: an int seed or a PRNG key (the state's key; ``init(..., key=k)`` overrides).
      num_tasks: optional fixed ``m``.

    Returns:
      ``Weighting``; state :class:`~jaxpareto.weighting._field.KeyState`.
    """
    key0 = default_key(seed)

    def init(num_tasks: int, dtype=jnp.float32, *, key=None) -> KeyState:
        return KeyState(**core_fields(num_tasks, dtype), key=key0 if key is None else key)

    def update(gram, state, *, losses=None, preference=None):
        del losses, preference
        gram = check_gram(gram, "gram", min_tasks=1)
        check_state_matches(gram, state)
        key, sub = jax.random.split(state.key)
        m = state.weights.shape[0]
        w = random_weights(sub, m, state.weights.dtype)
        return w, KeyState(
            weights=w,
            status=_nonfinite_status(gram),
            converged=jnp.asarray(True),
            iterations=state.iterations,
            key=key,
        )

    return Weighting(init, update, num_tasks)
