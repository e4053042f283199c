"""Shared pieces of the field weightings (Krum, TrimmedMean, the baselines, ConFIG,
GradVac, GradDrop, FairGrad): status codes, the common state, finite guards.

The status codes are those of :class:`jaxpareto.status.Status` when that module exists;
until then the same names map to fixed small integers (``SUCCESSFUL = 0``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_FALLBACK = {
    "SUCCESSFUL": 0,
    "INFEASIBLE": 1,
    "MAX_ITER": 2,
    "NUMERICAL_ERROR": 3,
    "NONFINITE_INPUT": 4,
    "DEGENERATE": 5,
}


def status_code(name: str) -> int:
    """The integer of ``Status.<name>`` (:mod:`jaxpareto.status`, else a fixed fallback)."""
    try:
        from jaxpareto.status import Status  # noqa: PLC0415

        return int(getattr(Status, name))
    except (ImportError, AttributeError):
        return _FALLBACK[name]


def status_array(name: str) -> jax.Array:
    """``Status.<name>`` as an int32 scalar array."""
    return jnp.asarray(status_code(name), jnp.int32)


def pick_status(nonfinite: jax.Array, degenerate: jax.Array, ok: str = "SUCCESSFUL") -> jax.Array:
    """``NONFINITE_INPUT`` if ``nonfinite``, else ``DEGENERATE`` if ``degenerate``, else ``ok``."""
    return jnp.where(
        nonfinite,
        status_array("NONFINITE_INPUT"),
        jnp.where(degenerate, status_array("DEGENERATE"), status_array(ok)),
    )


class FieldState(NamedTuple):
    """State of the stateless field weightings (Krum, the baselines, ConFIG, FairGrad,
    TrimmedMean, GradDrop's key lives in :class:`KeyState`).

    Attributes:
      weights: ``[m]`` last weights.
      status: int32 ``[]`` a :class:`jaxpareto.status.Status` code of the last update.
      converged: bool ``[]`` the last update's solver converged (always True for the
        closed-form methods unless the input was unusable).
      iterations: int32 ``[]`` solver iterations of the last update (0: closed form).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array


class KeyState(NamedTuple):
    """State of a randomised field weighting (``random``, GradDrop).

    Attributes:
      weights: ``[m]`` last weights.
      status: int32 ``[]`` status code of the last update.
      converged: bool ``[]`` always True (no solver).
      iterations: int32 ``[]`` 0.
      key: the PRNG key of the next update (split at every update).
    """

    weights: jax.Array
    status: jax.Array
    converged: jax.Array
    iterations: jax.Array
    key: jax.Array


def field_state(weights: jax.Array, status=None, converged=None, iterations=None) -> FieldState:
    return FieldState(
        weights=weights,
        status=status_array("SUCCESSFUL") if status is None else status,
        converged=jnp.asarray(True) if converged is None else converged,
        iterations=jnp.zeros((), jnp.int32) if iterations is None else iterations,
    )


def default_key(seed):
    """An int seed or a PRNG key → a key (checked)."""
    import numpy as np  # noqa: PLC0415

    if isinstance(seed, (bool, float)) or not (
        isinstance(seed, (int, np.integer)) or hasattr(seed, "shape")
    ):
        raise TypeError(f"`seed` must be an int or a PRNG key, got {type(seed).__name__}.")
    return jax.random.PRNGKey(int(seed)) if isinstance(seed, (int, np.integer)) else seed


def check_nonneg_int(value, name: str) -> int:
    import numbers  # noqa: PLC0415

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    return int(value)


def check_positive_int(value, name: str) -> int:
    import numbers  # noqa: PLC0415

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
    return int(value)


def check_fixed_m(num_tasks, m: int, what: str) -> None:
    if num_tasks is not None and num_tasks != m:
        raise ValueError(f"`num_tasks`={num_tasks} but the state was built for m={m} ({what}).")
