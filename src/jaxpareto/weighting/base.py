"""The weighting protocol: an optax-like pair of pure functions over the Gramian.

A weighting maps the Gramian ``C = G Gᵀ`` (``[m, m]``), the losses ``l`` (``[m]``) and
optionally a preference ``r`` (``[m]``) to task weights ``w`` (``[m]``); the update
direction is ``Gᵀ w`` (:func:`jaxpareto.combine`). Its state is a NamedTuple that holds
the last weights and the solver's diagnostics, so it can be logged, checkpointed and
carried through ``jax.lax.scan``.

Jacobian weightings
-------------------
A few methods need more than the Gramian: they act on the coordinates of the task
gradients (TrimmedMean's coordinate-wise trimmed mean, GradDrop's per-coordinate sign
dropout), so their update is not ``Gᵀw`` for any ``w``. They are still a pair of pure,
jittable functions, marked by the last field of :class:`Weighting`,
``needs="jacobian"``:

* ``init(num_tasks, dtype=float32) -> state`` as for every weighting;
* ``update(jac, state, *, losses=None, preference=None, gram=None) -> (direction, state)``
  where ``jac`` is the Jacobian pytree (every leaf ``[m, ...]``, or a plain ``[m, n]``
  matrix) and ``direction`` is one gradient-shaped pytree (every leaf ``[...]``, the
  task axis removed); ``gram`` is the Gramian when the caller has it already.
  ``state.weights`` holds per-task diagnostics documented by the method.

:func:`jaxpareto.aggregate` (and every ``jp.<name>`` shorthand) dispatches on
``needs``: a Gramian weighting gets the Gramian and returns weights, a Jacobian
weighting gets the Jacobian and returns the direction; the finite guard, ``scale`` and
the state handling are the same. A Jacobian weighting cannot run on the Gramian
engine's :class:`jaxpareto.GramianVJP` (there is no Jacobian), which raises a
``TypeError`` naming the method.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxpareto._validate import check_preference


class InitFn(Protocol):
    def __call__(self, num_tasks: int, dtype: Any = ...) -> NamedTuple: ...


class UpdateFn(Protocol):
    def __call__(
        self,
        gram: jax.Array,
        state: NamedTuple,
        *,
        losses: jax.Array | None = None,
        preference: jax.Array | None = None,
    ) -> tuple[jax.Array, NamedTuple]: ...


class Weighting(NamedTuple):
    """A weighting: a pair of pure functions plus the task count when it is fixed.

    Attributes:
      init: ``init(num_tasks, dtype=float32) -> state``.
      update: ``update(gram, state, *, losses=None, preference=None) -> (weights, state)``.
      num_tasks: ``m`` when the weighting was built for a fixed number of tasks (e.g.
        from the length of its preference), else ``None``.
      needs: ``"gramian"`` (default: ``update`` takes the Gramian, returns weights) or
        ``"jacobian"`` (``update`` takes the Jacobian pytree, returns the direction; see
        the module docstring).
    """

    init: Callable[..., NamedTuple]
    update: Callable[..., tuple[jax.Array, NamedTuple]]
    num_tasks: int | None = None
    needs: str = "gramian"


def full_precision(fn: Callable) -> Callable:
    """Trace ``fn`` with ``jax.default_matmul_precision("highest")``.

    The solvers pivot on small ``m × m`` products whose accuracy matters (LP ratio
    tests, KKT checks); on GPU/TPU the default float32 matmul may run in TF32/bf16
    passes, which is too coarse for them and costs nothing to avoid at this size.
    """
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def check_state_matches(gram: jax.Array, state: NamedTuple) -> None:
    """Trace-time check that a weighting's state was built for ``m = gram.shape[0]``."""
    if state.weights.shape != (gram.shape[0],):
        raise ValueError(
            f"`gram` has m={gram.shape[0]} tasks but the state holds "
            f"{state.weights.shape[0]} weights."
        )


def check_num_tasks(num_tasks) -> int:
    """A weighting's ``init`` argument: a static int ``>= 1`` (one task is allowed
    everywhere: its weight is 1 and the update is the gradient)."""
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, numbers.Integral) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be an int >= 1, got {num_tasks!r}.")
    return int(num_tasks)


def single_task(gram: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """The ``m = 1`` answer shared by every weighting: ``(weights [1] = 1, finite)``.

    With one task every method reduces to the gradient itself (``Δ_1 = {1}``; the
    projections, balances and dual problems are trivial), so the weight is 1 whatever
    the Gramian; ``finite`` says whether the Gramian was usable for the status flags.
    """
    return jnp.ones((1,), dtype), jnp.all(jnp.isfinite(gram))


def factory_preference(preference):
    """A factory's optional default ``preference``: ``None``, or a checked vector ``[m]``
    (positive, finite; :func:`jaxpareto._validate.check_preference`)."""
    if preference is None:
        return None
    preference = jnp.asarray(preference)
    if preference.ndim != 1:
        raise ValueError(f"`preference` must be a vector [m], got shape {preference.shape}.")
    return check_preference(preference, preference.shape[0])
