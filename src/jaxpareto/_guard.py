"""The finite-step guard, written once (modelled on :func:`optax.apply_if_finite`).

A training step whose losses, Jacobian/Gramian or update hold a NaN or inf must not
reach the parameters or the optimiser state: the step is skipped (the update is zero,
the state keeps its previous value) and counted. optax's ``apply_if_finite`` does the
same for one transformation; here the test is done on the small tensors the caller
already has (the ``[m]`` losses, the ``m × m`` Gramian, the direction), so it adds no
pass over an ``m × n`` Jacobian and no collective on sharded parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["all_finite", "keep_if_finite", "zero_unless_finite"]


def all_finite(*trees) -> jax.Array:
    """bool ``[]``: every leaf of every tree is finite (``None`` trees are skipped)."""
    ok = jnp.asarray(True)
    for tree in trees:
        for leaf in jax.tree_util.tree_leaves(tree):
            ok = ok & jnp.all(jnp.isfinite(leaf))
    return ok


def keep_if_finite(finite: jax.Array, new, old):
    """``new`` where ``finite`` else ``old``, leaf by leaf (the state rule of
    ``optax.apply_if_finite``: a bad step leaves the state as it was)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)


def zero_unless_finite(finite: jax.Array, tree, fill: float = 0.0):
    """``tree`` where ``finite`` else every leaf filled with ``fill`` (0: the skipped
    update; NaN where the caller wants the failure to propagate)."""
    return jax.tree_util.tree_map(lambda x: jnp.where(finite, x, jnp.full_like(x, fill)), tree)
