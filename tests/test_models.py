"""Tests of jaxpareto.models: the LeNet of the Multi-MNIST experiments and the MLPs.

Oracles: a numpy/scipy re-implementation of the LeNet forward pass (``scipy.signal``
correlation, reshape max-pooling), numpy log-sum-exp cross-entropy and MSE, central
finite differences in float64 for gradients, and ``jax.grad`` of the weighted sum for
the shared-representation step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxpareto import models as jm
from jaxpareto.jacobian import mtl_value_and_grad
from jaxpareto.weighting.base import Weighting


def _batch(seed, b=3, t=2):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(b, 36, 36)).astype(np.uint8)
    labels = rng.integers(0, 10, size=(b, t)).astype(np.int32)
    return images, labels


# ------------------------------------------------------------------ numpy oracle


def _np_conv_relu_pool(x, w, b):
    """x [H, W, Cin], w [kh, kw, Cin, Cout] → relu + 2×2 max-pool, [H', W', Cout]."""
    kh, kw, cin, cout = w.shape
    h, wd = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    y = np.zeros((h, wd, cout))
    for o in range(cout):
        for i in range(cin):
            y[:, :, o] += signal.correlate2d(x[:, :, i], w[:, :, i, o], mode="valid")
        y[:, :, o] += b[o]
    y = np.maximum(y, 0)
    return y.reshape(h // 2, 2, wd // 2, 2, cout).max(axis=(1, 3))


def _np_lenet_logits(params, images):
    p = jax.tree_util.tree_map(np.asarray, params)
    out = []
    for img in images:
        x = img.astype(np.float64)[:, :, None] / 255.0
        x = _np_conv_relu_pool(x, p["conv1"]["w"], p["conv1"]["b"])
        x = _np_conv_relu_pool(x, p["conv2"]["w"], p["conv2"]["b"])
        z = np.maximum(x.reshape(-1) @ p["fc"]["w"] + p["fc"]["b"], 0)
        out.append(np.einsum("h,thc->tc", z, p["heads"]["w"]) + p["heads"]["b"])
    return np.stack(out, axis=1)  # [T, B, C]


def _np_cross_entropy(logits, labels):
    mx = logits.max(-1, keepdims=True)
    logz = mx[..., 0] + np.log(np.exp(logits - mx).sum(-1))
    t_idx, b_idx = np.meshgrid(np.arange(logits.shape[0]), np.arange(logits.shape[1]),
                               indexing="ij")
    return np.mean(logz - logits[t_idx, b_idx, labels.T], axis=1)


# ------------------------------------------------------------------------- LeNet


def test_lenet_parameter_shapes_and_init_bounds():
    params = jm.lenet_init(jax.random.PRNGKey(0), num_tasks=3)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
    assert shapes == {
        "conv1": {"w": (9, 9, 1, 10), "b": (10,)},
        "conv2": {"w": (5, 5, 10, 20), "b": (20,)},
        "fc": {"w": (500, 50), "b": (50,)},
        "heads": {"w": (3, 50, 10), "b": (3, 10)},
    }
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == jnp.float32
    for name, fan_in in (("conv1", 81), ("conv2", 250), ("fc", 500), ("heads", 50)):
        w = np.asarray(params[name]["w"])
        assert np.abs(w).max() <= 1 / np.sqrt(fan_in)
        assert np.abs(w).max() > 0.9 / np.sqrt(fan_in)  # uses the range, not a tiny scale


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_lenet_forward_matches_numpy_oracle(num_tasks):
    params = jm.lenet_init(jax.random.PRNGKey(1), num_tasks, dtype=jnp.float64)
    images, labels = _batch(0, b=2, t=num_tasks)
    logits = jm.lenet_apply(params, images)
    assert logits.shape == (num_tasks, 2, 10) and logits.dtype == jnp.float64
    expected = _np_lenet_logits(params, images)
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)
    losses = jm.lenet_losses(params, images, labels)
    assert losses.shape == (num_tasks,)
    np.testing.assert_allclose(losses, _np_cross_entropy(expected, labels), rtol=1e-10)


def test_encode_heads_compose_to_apply_and_losses():
    params = jm.lenet_init(jax.random.PRNGKey(2))
    images, labels = _batch(1, b=4)
    z = jm.lenet_encode(params, images)
    assert z.shape == (4, 50) and bool(jnp.all(z >= 0))
    np.testing.assert_array_equal(jm.lenet_heads(params, z), jm.lenet_apply(params, images))
    batch = (images, labels)
    np.testing.assert_array_equal(
        jm.lenet_mtl_heads(params, jm.lenet_mtl_encode(params, batch), batch),
        jm.lenet_losses(params, images, labels),
    )
    np.testing.assert_array_equal(
        jm.lenet_head_losses(params, z, labels), jm.lenet_losses(params, images, labels)
    )


def test_float32_params_give_float32_outputs_from_uint8():
    params = jm.lenet_init(jax.random.PRNGKey(3))
    images, labels = _batch(2)
    losses = jm.lenet_losses(params, images, labels)
    assert losses.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(losses)))
    # Float images in [0, 1] are taken as they are: same result as uint8/255.
    as_float = jm.lenet_losses(params, jnp.asarray(images, jnp.float32) / 255, labels)
    np.testing.assert_allclose(as_float, losses, rtol=1e-6)
    # Fresh network: roughly uniform predictions, cross-entropy near log(10).
    np.testing.assert_allclose(losses, np.log(10.0), rtol=0.2)


def test_lenet_gradient_matches_finite_differences():
    params = jm.lenet_init(jax.random.PRNGKey(4), dtype=jnp.float64)
    images, labels = _batch(3, b=3)
    weights = jnp.asarray([0.3, 0.7])

    @jax.jit
    def objective(p):
        return jnp.dot(weights, jm.lenet_losses(p, images, labels))

    grads = jax.jit(jax.grad(objective))(params)

    @jax.jit
    def central_difference(v, eps):
        step = lambda t: objective(jax.tree_util.tree_map(lambda a, b: a + t * b, params, v))
        return (step(eps) - step(-eps)) / (2 * eps)

    def one_hot(layer, leaf, idx):
        v = jax.tree_util.tree_map(np.zeros_like, params)
        v[layer][leaf][idx] = 1.0
        return v

    coords = [("conv1", "w", (4, 4, 0, 3)), ("conv2", "w", (2, 1, 5, 7)),
              ("conv2", "b", (11,)), ("fc", "w", (123, 17)), ("fc", "b", (9,)),
              ("heads", "w", (1, 5, 2)), ("heads", "b", (0, 4))]
    for layer, leaf, idx in coords:
        fd = central_difference(one_hot(layer, leaf, idx), 1e-6)
        np.testing.assert_allclose(grads[layer][leaf][idx], fd, rtol=1e-5, atol=1e-8)
    # One random direction through every parameter at once.
    rng = np.random.default_rng(5)
    v = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape), params)
    dot = sum(np.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(grads),
                                            jax.tree_util.tree_leaves(v)))
    np.testing.assert_allclose(dot, central_difference(v, 1e-6), rtol=1e-6)


class LenetTransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_losses_and_accuracy_under_jit(self):
        params = jm.lenet_init(jax.random.PRNGKey(6), dtype=jnp.float64)
        images, labels = _batch(4, b=5)
        losses = self.variant(jm.lenet_losses)(params, images, labels)
        logits = _np_lenet_logits(params, images)
        np.testing.assert_allclose(losses, _np_cross_entropy(logits, labels), rtol=1e-10)
        acc = self.variant(jm.lenet_accuracy)(params, images, labels)
        expected = np.mean(np.argmax(logits, -1) == labels.T, axis=1)
        np.testing.assert_allclose(acc, expected)


def test_lenet_vmap_over_parameter_sets_and_batches():
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    stacked = jax.vmap(lambda k: jm.lenet_init(k, dtype=jnp.float64))(keys)
    images, labels = _batch(5, b=2)
    losses = jax.jit(jm.lenet_losses)
    out = jax.jit(jax.vmap(jm.lenet_losses, in_axes=(0, None, None)))(stacked, images, labels)
    for k in range(3):
        single = jm.lenet_init(keys[k], dtype=jnp.float64)
        np.testing.assert_allclose(out[k], losses(single, images, labels), rtol=1e-12)
    params = jm.lenet_init(keys[0], dtype=jnp.float64)
    many_images = np.stack([_batch(s, b=2)[0] for s in range(3)])
    many_labels = np.stack([_batch(s, b=2)[1] for s in range(3)])
    out = jax.jit(jax.vmap(jm.lenet_losses, in_axes=(None, 0, 0)))(
        params, many_images, many_labels)
    for s in range(3):
        np.testing.assert_allclose(
            out[s], losses(params, many_images[s], many_labels[s]), rtol=1e-12)


def _fixed_weighting(w):
    w = jnp.asarray(w)

    def init(num_tasks, dtype=jnp.float32):
        return (jnp.zeros(num_tasks, dtype),)

    def update(gram, state, *, losses=None, preference=None):
        return w.astype(gram.dtype), (w.astype(gram.dtype),)

    return Weighting(init, update, w.shape[0])


@pytest.mark.parametrize("head_scaling", ["reference", "paper"])
def test_lenet_plugs_into_shared_representation_step(head_scaling):
    params = jm.lenet_init(jax.random.PRNGKey(8), dtype=jnp.float64)
    images, labels = _batch(6, b=3)
    w = jnp.asarray([0.25, 0.75])
    step = mtl_value_and_grad(jm.lenet_mtl_encode, jm.lenet_mtl_heads, _fixed_weighting(w),
                              head_scaling=head_scaling)
    (losses, grads), _ = jax.jit(step)(params, (images, labels), (jnp.zeros(2),))
    np.testing.assert_allclose(losses, jm.lenet_losses(params, images, labels), rtol=1e-12)
    weighted = jax.jit(jax.grad(lambda p: jnp.dot(w, jm.lenet_losses(p, images, labels))))(
        params)
    for name in ("conv1", "conv2", "fc"):
        for leaf in ("w", "b"):
            np.testing.assert_allclose(grads[name][leaf], weighted[name][leaf],
                                       rtol=1e-9, atol=1e-13)
    if head_scaling == "reference":
        expected_heads = weighted["heads"]
    else:  # each head gets its own task's unscaled gradient
        expected_heads = jax.jit(jax.grad(
            lambda p: jnp.sum(jm.lenet_losses(p, images, labels))))(params)["heads"]
    for leaf in ("w", "b"):
        np.testing.assert_allclose(grads["heads"][leaf], expected_heads[leaf],
                                   rtol=1e-9, atol=1e-13)


def test_lenet_validates_inputs():
    params = jm.lenet_init(jax.random.PRNGKey(9))
    images, labels = _batch(7)
    with pytest.raises(ValueError, match="images"):
        jm.lenet_losses(params, images[:, :28, :28], labels)
    with pytest.raises(ValueError, match="labels"):
        jm.lenet_losses(params, images, labels[:, :1])
    with pytest.raises(TypeError, match="labels"):
        jm.lenet_losses(params, images, labels.astype(np.float32))
    with pytest.raises(TypeError, match="images"):
        jm.lenet_losses(params, images.astype(bool), labels)
    with pytest.raises(ValueError, match="num_tasks"):
        jm.lenet_init(jax.random.PRNGKey(0), num_tasks=0)
    with pytest.raises(TypeError, match="dtype"):
        jm.lenet_init(jax.random.PRNGKey(0), dtype=jnp.int32)
    with pytest.raises(ValueError, match="labels"):
        jm.lenet_accuracy(params, images, labels.T)


# --------------------------------------------------------------------------- MLPs


def _np_mlp(params, x, act):
    h = np.asarray(x, np.float64)
    for i, layer in enumerate(params):
        h = h @ np.asarray(layer["w"]) + np.asarray(layer["b"])
        if i < len(params) - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("activation,np_act", [
    ("tanh", np.tanh), ("relu", lambda v: np.maximum(v, 0)),
    ("sigmoid", lambda v: 1 / (1 + np.exp(-v))), ("identity", lambda v: v)])
def test_mlp_matches_numpy(activation, np_act):
    params = jm.mlp_init(jax.random.PRNGKey(0), (5, 7, 3), dtype=jnp.float64)
    x = np.random.default_rng(0).normal(size=(4, 5))
    np.testing.assert_allclose(jm.mlp_apply(params, x, activation), _np_mlp(params, x, np_act),
                               rtol=1e-12)


def test_river_network_size_losses_and_gradient():
    params = jm.river_init(jax.random.PRNGKey(1), dtype=jnp.float64)
    assert [l["w"].shape for l in params] == [(64, 32), (32, 16), (16, 8), (8, 8)]
    assert sum(l.size for l in jax.tree_util.tree_leaves(params)) == 2816
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 64)), rng.normal(size=(16, 8))
    losses = jm.river_losses(params, x, y)
    pred = _np_mlp(params, x, np.tanh)
    np.testing.assert_allclose(losses, np.mean((pred - y) ** 2, axis=0), rtol=1e-12)
    # Jacobian rows vs central differences on a few coordinates (float64).
    jac = jax.jit(jax.jacrev(jm.river_losses))(params, x, y)

    @jax.jit
    def central_difference(v, eps):
        at = lambda t: jm.river_losses(
            jax.tree_util.tree_map(lambda a, b: a + t * b, params, v), x, y)
        return (at(eps) - at(-eps)) / (2 * eps)

    for layer, leaf, idx in ((0, "w", (10, 3)), (1, "b", (5,)), (3, "w", (2, 6))):
        v = jax.tree_util.tree_map(np.zeros_like, params)
        v[layer][leaf][idx] = 1.0
        np.testing.assert_allclose(jac[layer][leaf][(slice(None),) + idx],
                                   central_difference(v, 1e-6), rtol=1e-6, atol=1e-9)


class RiverTransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_river_losses_jit_and_float32(self):
        params = jm.river_init(jax.random.PRNGKey(2))
        rng = np.random.default_rng(2)
        x = rng.normal(size=(8, 64)).astype(np.float32)
        y = rng.normal(size=(8, 8)).astype(np.float32)
        losses = self.variant(jm.river_losses)(params, x, y)
        assert losses.shape == (8,) and losses.dtype == jnp.float32
        # float32 model vs a float64 oracle; GPUs run default-precision float32
        # matmuls in TF32 (~1e-4 relative), hence the tolerance.
        np.testing.assert_allclose(losses, np.mean((_np_mlp(params, x, np.tanh) - y) ** 2, 0),
                                   rtol=2e-3)


def test_river_vmap_over_parameter_sets():
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    stacked = jax.vmap(lambda k: jm.river_init(k, dtype=jnp.float64))(keys)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 64)), rng.normal(size=(6, 8))
    out = jax.vmap(jm.river_losses, in_axes=(0, None, None))(stacked, x, y)
    assert out.shape == (4, 8)
    for k in range(4):
        single = jm.river_init(keys[k], dtype=jnp.float64)
        np.testing.assert_allclose(out[k], np.mean((_np_mlp(single, x, np.tanh) - y) ** 2, 0),
                                   rtol=1e-12)


def test_mlp_validates_inputs():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="sizes"):
        jm.mlp_init(key, (5,))
    with pytest.raises(ValueError, match="sizes"):
        jm.mlp_init(key, (5, 0, 3))
    params = jm.mlp_init(key, (5, 3))
    with pytest.raises(ValueError, match="activation"):
        jm.mlp_apply(params, np.zeros((2, 5)), "swishy")
    with pytest.raises(ValueError, match="x"):
        jm.mlp_apply(params, np.zeros((2, 4)))
    river = jm.river_init(key)
    with pytest.raises(ValueError, match="y"):
        jm.river_losses(river, np.zeros((2, 64)), np.zeros((2, 7)))
