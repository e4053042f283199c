"""Training machinery of the demo: many small networks trained at once, one compile each.

This module is the engine behind ``examples/demo.py``; everything in it uses the public
API (``import jaxpareto as jp``) plus jax / optax.

Batched training. The five preference models of a method are one pytree with a leading
model axis ``K``; a *per-model* step ``(params, opt_state, agg_state, batch, preference,
index) -> ...`` is ``jax.vmap``-ed over that axis, and ``jax.lax.scan`` runs a chunk of
steps inside one ``jax.jit``. The data are arguments of the jitted chunk (never closed-over
constants), so every data set with the same shapes reuses the compiled program; images
stay ``uint8`` on the device and are scaled in the model.

Methods (``METHODS``), each for preferences ``r = (r_1, …, r_m) > 0``:

* ``"epo"``: EPO search (Mahapatra & Rajan 2020, eq. 24), run-time preference ``r``;
  Jacobian of all parameters (``jp.value_and_jacobian``) as in the authors' code, trained
  on ``Σ (m β_j) l_j`` (``scale="num_tasks"``, the reference scaling);
* ``"pmtl"``: Pareto MTL (Lin et al. 2019) with reference vectors ``u_k ∝ 1/r_k`` (the
  EPO authors' comparison: PMTL's ``u`` points *at* the loss vector, EPO's ``r`` asks for
  ``r ⊙ l ∝ 1``), sub-region ``k`` a traced index so that one program serves all ``K``;
  full Jacobian, ``scale="num_tasks"`` as in the PMTL code;
* ``"linear"``: linear scalarization with weights ``w = jp.linear_weights(r) = r / Σ r``.
  Its direction ``Σ_j w_j ∇l_j`` is the gradient of ``Σ_j w_j l_j``, so it costs one
  backward pass (no Jacobian);
* ``"mgda_ub"``: MGDA-UB (Sener & Koltun 2018): ``jp.mtl_value_and_grad(encode, heads,
  jp.weighting.mgda())`` — min-norm weights of the Jacobian w.r.t. the shared
  representation; no preference, one model;
* ``"single"``: one network per task trained on that task's loss alone (``K = m``).

Fast LeNet. XLA's CPU convolutions are slow inside a ``while`` loop (what ``lax.scan``
lowers to): measured on the 2-core machine (jax 0.10.2), the gradient of
``jp.models.lenet_losses`` on a batch of 256 took about 4× longer inside ``scan`` than
in a plain jitted call (~2 s against ~0.45 s, other jobs sharing the cores), and the
``reduce_window`` max-pool gradient is slow as well. :func:`lenet_losses` here computes *the same function* with
the same parameter pytree (``jp.models.lenet_init``) using only matmuls: each ``k × k``
convolution is ``k`` row-shifted slices of the input times a block-Toeplitz matrix built
from the kernel by an ``einsum`` with fixed shift matrices, and 2×2 max pooling is a
reshape + max. ``tests/test_demo.py`` checks it against ``jp.models.lenet_losses``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp

METHODS = ("epo", "pmtl", "linear", "mgda_ub", "single")
METHOD_LABELS = {
    "epo": "EPO",
    "pmtl": "PMTL",
    "linear": "LinScalar",
    "mgda_ub": "MGDA-UB",
    "single": "single-task",
}


# ------------------------------------------------------------------ fast LeNet

# The matmul formulation of the LeNet convolutions (jp.models.conv_valid), pinned here
# so that the experiment runs the same program on every backend.
conv_valid = jp.models.conv_valid
lenet_encode = functools.partial(jp.models.lenet_encode, conv="matmul")


def lenet_losses(params: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-task mean cross-entropy ``[T]``; equals ``jp.models.lenet_losses``."""
    return jp.models.lenet_head_losses(params, lenet_encode(params, images), labels)


def _encode(params, batch):
    return lenet_encode(params, batch[0])


def _heads(params, z, batch):
    return jp.models.lenet_head_losses(params, z, batch[1])


# ------------------------------------------------------------------ methods


class Method(NamedTuple):
    """A training method as pure functions of ONE model (vmapped by the trainer).

    ``init(params, preference, index) -> agg_state`` and
    ``grad(params, agg_state, batch, preference, index) -> (losses, grads, agg_state,
    weights)``; ``batch = (images, labels)``.
    """

    name: str
    init: Callable[..., Any]
    grad: Callable[..., Any]


def pmtl_references(preferences: np.ndarray) -> np.ndarray:
    """PMTL reference vectors matching EPO preferences: ``u_k = r_k⁻¹ / ‖r_k⁻¹‖``."""
    inv = 1.0 / np.asarray(preferences, np.float64)
    return inv / np.linalg.norm(inv, axis=1, keepdims=True)


def make_method(
    name: str,
    loss_fn: Callable[..., jax.Array],
    num_tasks: int,
    *,
    preferences: np.ndarray | None = None,
    pmtl_init_steps: int = 0,
    encode: Callable | None = None,
    heads: Callable | None = None,
) -> Method:
    """Build a :class:`Method`.

    Args:
      name: one of :data:`METHODS`.
      loss_fn: ``loss_fn(params, inputs, targets) -> losses[m]``.
      num_tasks: ``m``.
      preferences: ``[K, m]`` (needed by ``"pmtl"``, whose sub-regions are its rows).
      pmtl_init_steps: PMTL's initialisation budget (updates).
      encode, heads: shared-representation split, required by ``"mgda_ub"``
        (``encode(params, batch) -> z``, ``heads(params, z, batch) -> losses``).
    """
    if name not in METHODS:
        raise ValueError(f"`name` must be one of {METHODS}, got {name!r}.")

    def jac_fn(params, batch):
        return jp.value_and_jacobian(loss_fn)(params, *batch)

    if name in ("epo", "pmtl"):
        if name == "epo":
            # Restricted descent (App. B) is the EPO authors' default in their runs.
            def make_tx(index):
                del index
                return jp.aggregate(jp.weighting.epo(descent="restricted"),
                                    num_tasks=num_tasks, scale="num_tasks")
        else:
            if preferences is None:
                raise ValueError("`preferences` is required by the pmtl method.")
            refs = pmtl_references(preferences)  # the library casts to its float dtype

            def make_tx(index):
                # Built inside the vmapped function: `index` is traced, one program
                # serves every sub-region.
                return jp.pmtl(refs, index=index, scale="num_tasks", init_steps=pmtl_init_steps)

        def init(params, preference, index):
            return make_tx(index).init(params)

        def grad(params, state, batch, preference, index):
            losses, jac = jac_fn(params, batch)
            direction, state = make_tx(index).update(
                jac, state, params, losses=losses, preference=preference)
            return losses, direction, state, state.weights

        return Method(name, init, grad)

    if name == "linear":
        # Σ_j w_j l_j with w = r / Σ r has the gradient Σ_j w_j ∇l_j: one backward pass.
        def init(params, preference, index):
            del params, preference, index
            return ()

        def grad(params, state, batch, preference, index):
            del index
            weights = jp.linear_weights(preference)

            def scalarized(p):
                losses = loss_fn(p, *batch)
                return jnp.dot(weights.astype(losses.dtype), losses), losses

            (_, losses), grads = jax.value_and_grad(scalarized, has_aux=True)(params)
            return losses, grads, state, weights

        return Method(name, init, grad)

    if name == "mgda_ub":
        if encode is None or heads is None:
            raise ValueError("`encode` and `heads` are required by the mgda_ub method.")
        weighting = jp.weighting.mgda()
        step = jp.mtl_value_and_grad(encode, heads, weighting)

        def init(params, preference, index):
            del preference, index
            return weighting.init(num_tasks, jax.tree_util.tree_leaves(params)[0].dtype)

        def grad(params, state, batch, preference, index):
            del preference, index
            (losses, grads), state = step(params, batch, state)
            return losses, grads, state, state.weights

        return Method(name, init, grad)

    # single-task: model `index` trains on task `index` alone.
    def init(params, preference, index):
        del params, preference, index
        return ()

    def grad(params, state, batch, preference, index):
        del preference
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        onehot = jax.nn.one_hot(index, num_tasks, dtype=dtype)

        def task_loss(p):
            losses = loss_fn(p, *batch)
            return jnp.dot(onehot, losses), losses

        (_, losses), grads = jax.value_and_grad(task_loss, has_aux=True)(params)
        return losses, grads, state, onehot

    return Method(name, init, grad)


# ------------------------------------------------------------------ trainer


class TrainState(NamedTuple):
    """Carry of the training scan, every leaf with a leading model axis ``K``."""

    params: Any
    opt_state: Any
    agg_state: Any


class Trainer(NamedTuple):
    """``init(params[K], preferences[K, m], indices[K]) -> TrainState`` and the jitted
    ``chunk(state, idx[S, B], inputs, targets, preferences, indices) -> (state, losses
    [S, K, m], weights[S, K, m])`` running ``S`` steps with ``lax.scan``."""

    init: Callable[..., TrainState]
    chunk: Callable[..., Any]


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``"adam"`` (demo default) or ``"sgd"`` (plain SGD, no momentum: the EPO paper)."""
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate)
    raise ValueError(f"`optimizer` must be 'adam' or 'sgd', got {name!r}.")


def make_trainer(method: Method, optimizer: optax.GradientTransformation) -> Trainer:
    """Vectorise ``method`` over models and scan it over minibatches."""

    def init_one(params, preference, index):
        return TrainState(params, optimizer.init(params), method.init(params, preference, index))

    def step_one(state, batch, preference, index):
        losses, grads, agg, weights = method.grad(
            state.params, state.agg_state, batch, preference, index)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, agg), (losses, weights)

    step_all = jax.vmap(step_one, in_axes=(0, None, 0, 0))

    @jax.jit
    def init(params, preferences, indices):
        return jax.vmap(init_one)(params, preferences, indices)

    @jax.jit
    def chunk(state, idx, inputs, targets, preferences, indices):
        def body(carry, rows):
            return step_all(carry, (inputs[rows], targets[rows]), preferences, indices)

        return jax.lax.scan(body, state, idx)

    return Trainer(init, chunk)


def epoch_schedule(key: jax.Array, num_examples: int, batch_size: int, epochs: int) -> np.ndarray:
    """``[epochs · ⌊N/B⌋, B]`` int32 minibatch rows, a fresh permutation per epoch."""
    keys = jax.random.split(key, epochs)
    return np.concatenate(
        [np.asarray(jp.data.epoch_indices(k, num_examples, batch_size)) for k in keys])


def chunk_length(total_steps: int, target_updates: int = 20) -> int:
    """The largest divisor of ``total_steps`` not above ``total_steps / target_updates``
    (so the progress bar moves ~``target_updates`` times and every chunk has the same
    static length: one compile)."""
    cap = max(1, total_steps // max(1, target_updates))
    return max(d for d in range(1, cap + 1) if total_steps % d == 0)


def run_training(
    trainer: Trainer,
    state: TrainState,
    schedule: np.ndarray,
    inputs: jax.Array,
    targets: jax.Array,
    preferences: jax.Array,
    indices: jax.Array,
    *,
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[TrainState, np.ndarray, np.ndarray]:
    """Run every row of ``schedule`` through ``trainer.chunk``, ``chunk`` steps a call.

    Returns the final state and the per-chunk mean training losses ``[C, K, m]`` and
    last weights ``[C, K, m]`` (host numpy).
    """
    total = schedule.shape[0]
    if total % chunk:
        raise ValueError(f"`chunk`={chunk} must divide the number of steps {total}.")
    loss_log, weight_log = [], []
    for start in range(0, total, chunk):
        state, (losses, weights) = trainer.chunk(
            state, jax.device_put(schedule[start:start + chunk]), inputs, targets,
            preferences, indices)
        # Reduced on the host: an eager jnp op would cost a compile per shape.
        loss_log.append(np.asarray(losses).mean(axis=0))
        weight_log.append(np.asarray(weights)[-1])
        if progress is not None:
            progress(chunk)
    return state, np.stack(loss_log), np.stack(weight_log)


# ------------------------------------------------------------------ evaluation


def make_lenet_evaluator(eval_batch: int = 512) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``evaluate(params[K], images[N], labels[N, T]) -> (losses [K, T], accuracies
    [K, T])`` over the whole set, in chunks of ``eval_batch`` (zero-padded, masked).

    One jitted program per set size evaluates one model; the ``K`` models go through it
    in turn, so methods with different ``K`` share the compile.
    """

    @jax.jit
    def one_model(params, images, labels, mask):
        def chunk_sums(args):
            x, y, w = args
            logits = jp.models.lenet_heads(params, lenet_encode(params, x))  # [T, B, C]
            logp = jax.nn.log_softmax(logits, axis=-1)
            picked = jnp.take_along_axis(logp, y.T[..., None], axis=-1)[..., 0]  # [T, B]
            hits = (jnp.argmax(logits, axis=-1) == y.T).astype(logp.dtype)
            w = w.astype(logp.dtype)
            return -jnp.sum(picked * w, axis=1), jnp.sum(hits * w, axis=1)

        ce, hits = jax.lax.map(chunk_sums, (images, labels, mask))
        total = jnp.sum(mask).astype(ce.dtype)
        return jnp.sum(ce, axis=0) / total, jnp.sum(hits, axis=0) / total

    def evaluate(params, images, labels):
        n = images.shape[0]
        num_chunks = math.ceil(n / eval_batch)
        pad = num_chunks * eval_batch - n
        images = np.concatenate([np.asarray(images), np.zeros((pad,) + images.shape[1:], images.dtype)])
        labels = np.concatenate([np.asarray(labels), np.zeros((pad,) + labels.shape[1:], labels.dtype)])
        mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
        shape = lambda a: jax.device_put(a.reshape((num_chunks, eval_batch) + a.shape[1:]))
        images, labels, mask = shape(images), shape(labels), shape(mask)
        params = jax.tree_util.tree_map(np.asarray, params)  # host slicing: no compiles
        num_models = jax.tree_util.tree_leaves(params)[0].shape[0]
        out = [one_model(jax.tree_util.tree_map(lambda a: a[k], params), images, labels, mask)
               for k in range(num_models)]
        return np.stack([np.asarray(o[0]) for o in out]), np.stack([np.asarray(o[1]) for o in out])

    return evaluate
