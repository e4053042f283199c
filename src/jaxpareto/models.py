"""Reference models of the seed papers, as plain pure-JAX functions.

Why no flax / equinox: the library differentiates *pytrees of parameters* (Jacobians
with a leading task axis, Gramians summed over leaves, hypernetworks that emit a
parameter pytree), so the simplest model is an ``init(key) -> dict`` and an
``apply(params, x)``. That costs no dependency beyond jax, keeps every parameter a
visible leaf (the MGDA-UB step finds the head leaves from the encoder's jaxpr), and a
hypernetwork can generate the dict directly.

Models:

* LeNet-style shared encoder with one linear head per task, the ``RegressionModel`` of
  the Pareto MTL / EPO search Multi-MNIST experiments (Lin et al. 2019; Mahapatra &
  Rajan 2020): ``conv 9×9 1→10, relu, maxpool 2, conv 5×5 10→20, relu, maxpool 2,
  fc 500→50, relu``, heads ``50→10``. On a 36×36 canvas the spatial sizes are
  36 → 28 → 14 → 10 → 5, so the flattened feature has 5·5·20 = 500 entries.
* MLPs, and the River-Flow network of EPO search: ``64→32→16→8→8`` with tanh hidden
  layers and a per-task squared error.

Initialisation follows PyTorch's defaults used by the authors' code: every weight and
bias ``~ U(−1/√fan_in, 1/√fan_in)``. Parameters are float32 unless ``dtype`` says
otherwise; inputs are cast to the parameters' dtype inside the model (uint8 images
are scaled to ``[0, 1]`` there, so data stay uint8 until this point).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "lenet_init",
    "lenet_encode",
    "lenet_heads",
    "lenet_apply",
    "lenet_losses",
    "lenet_head_losses",
    "lenet_mtl_encode",
    "lenet_mtl_heads",
    "lenet_accuracy",
    "conv_valid",
    "cross_entropy",
    "mlp_init",
    "mlp_apply",
    "river_init",
    "river_apply",
    "river_losses",
    "RIVER_SIZES",
    "LENET_INPUT",
]

#: Side in pixels of the Multi-MNIST canvas the LeNet expects (``[B, 36, 36]`` images).
LENET_INPUT = 36
#: Layer widths of the River-Flow network of Mahapatra & Rajan (ICML 2020): 64 inputs,
#: hidden layers of 32, 16 and 8 units, 8 task outputs.
RIVER_SIZES = (64, 32, 16, 8, 8)
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}


def _check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    return dtype


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def _uniform_leaves(key, specs, dtype) -> list[jax.Array]:
    """One ``U(−1/√fan_in, 1/√fan_in)`` array per ``(shape, fan_in)`` in ``specs``.

    A single draw is sliced into the leaves: every distinct random call costs a
    compilation, and an init with one call compiles once per model size.
    """
    sizes = [int(np.prod(shape)) for shape, _ in specs]
    flat = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
    out, start = [], 0
    for (shape, fan_in), size in zip(specs, sizes):
        scale = np.asarray(1.0 / np.sqrt(fan_in), dtype)
        out.append(flat[start : start + size].reshape(shape) * scale)
        start += size
    return out


# ---------------------------------------------------------------------------- LeNet


def lenet_init(
    key: jax.Array, num_tasks: int = 2, *, num_classes: int = 10, dtype=jnp.float32
) -> dict:
    """Parameters of the two-stage LeNet with ``num_tasks`` linear heads.

    Returns a dict pytree::

        {"conv1": {"w": [9, 9, 1, 10], "b": [10]},      # HWIO
         "conv2": {"w": [5, 5, 10, 20], "b": [20]},
         "fc":    {"w": [500, 50], "b": [50]},
         "heads": {"w": [T, 50, C], "b": [T, C]}}        # T tasks, C classes

    The heads are stacked on a leading task axis so that ``lenet_heads`` is one
    ``einsum``; the encoder never reads ``params["heads"]``.
    """
    num_tasks = _check_positive_int(num_tasks, "num_tasks")
    num_classes = _check_positive_int(num_classes, "num_classes")
    t, c = num_tasks, num_classes
    specs = [
        ((9, 9, 1, 10), 81),
        ((10,), 81),
        ((5, 5, 10, 20), 250),
        ((20,), 250),
        ((500, 50), 500),
        ((50,), 500),
        ((t, 50, c), 50),
        ((t, c), 50),
    ]
    w1, b1, w2, b2, w3, b3, wh, bh = _uniform_leaves(key, specs, _check_dtype(dtype))
    return {
        "conv1": {"w": w1, "b": b1},
        "conv2": {"w": w2, "b": b2},
        "fc": {"w": w3, "b": b3},
        "heads": {"w": wh, "b": bh},
    }


def _images_to_float(images, dtype) -> jax.Array:
    """uint8 / integer images → ``[0, 1]``; floating images are used as given."""
    images = jnp.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (LENET_INPUT, LENET_INPUT):
        raise ValueError(
            f"`images` must have shape [B, {LENET_INPUT}, {LENET_INPUT}], got {images.shape}."
        )
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(dtype) / jnp.asarray(255, dtype)
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images.astype(dtype)
    raise TypeError(f"`images` must be integer (uint8) or floating, got {images.dtype}.")


@functools.cache
def _shift_matrices(k: int, width: int) -> np.ndarray:
    """``S[d, j_in, j_out] = 1`` iff ``j_in = j_out + d``: ``[k, width, width − k + 1]``."""
    out = width - k + 1
    s = np.zeros((k, width, out), np.float32)
    for d in range(k):
        s[d, np.arange(out) + d, np.arange(out)] = 1.0
    return s


def conv_valid(x: jax.Array, w: jax.Array) -> jax.Array:
    """``VALID`` stride-1 cross-correlation, NHWC × HWIO → NHWC, as one matmul.

    ``y[b, i, j, f] = Σ_{p, q, c} x[b, i + p, j + q, c] w[p, q, c, f]``, the same as
    ``lax.conv_general_dilated(x, w, (1, 1), "VALID", ("NHWC", "HWIO", "NHWC"))``,
    written as ``y[b, i] = Σ_p x[b, i + p] T_p`` with the block-Toeplitz matrices
    ``T_p[(j_in, c), (j, f)] = w[p, j_in − j, c, f]`` (zero outside
    ``0 ≤ j_in − j < k``), concatenated over ``p`` into one ``[k·W·C, W_out·F]``
    operand. On CPU this form and its gradients run as large GEMMs, several times
    faster than XLA:CPU's convolution and its transposes for LeNet-sized layers.

    Args:
      x: ``[B, H, W, C]``; w: ``[k, k, C, F]``.

    Returns:
      ``[B, H − k + 1, W − k + 1, F]``.
    """
    k, _, c, f = w.shape
    b, h, width, _ = x.shape
    ho, wo = h - k + 1, width - k + 1
    shifts = jnp.asarray(_shift_matrices(k, width), w.dtype)
    toeplitz = jnp.einsum("dJo,pdcf->pJcof", shifts, w).reshape(k * width * c, wo * f)
    rows = jnp.concatenate([x[:, p : p + ho].reshape(b, ho, width * c) for p in range(k)], axis=-1)
    return (rows @ toeplitz).reshape(b, ho, wo, f)


def _conv_relu_pool(x, w, b, conv: str):
    if conv == "matmul":
        y = jax.nn.relu(conv_valid(x, w) + b)
        bs, h, wd, c = y.shape
        return y.reshape(bs, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
    y = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    y = jax.nn.relu(y + b)
    # A concrete -inf init value lets jax recognise the max monoid (reduce_window_max),
    # which has a gradient rule; a traced init value would fall back to the generic,
    # non-differentiable reduce_window.
    return jax.lax.reduce_window(
        y,
        np.array(-np.inf, y.dtype),
        jax.lax.max,
        window_dimensions=(1, 2, 2, 1),
        window_strides=(1, 2, 2, 1),
        padding="VALID",
    )


def _lenet_conv(conv: str | None) -> Literal["matmul", "xla"]:
    """The convolution formulation: ``"matmul"`` on CPU, XLA's convolution elsewhere."""
    if conv is None:
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    if conv not in ("matmul", "xla"):
        raise ValueError(f"`conv` must be 'matmul', 'xla' or None, got {conv!r}.")
    return conv


def lenet_encode(
    params: dict, images, *, conv: Literal["matmul", "xla"] | None = None
) -> jax.Array:
    """Shared representation ``z = relu(fc(pool(relu(conv2(pool(relu(conv1(x))))))))``.

    Args:
      params: from :func:`lenet_init`.
      images: ``[B, 36, 36]``, uint8 (scaled by 1/255 here) or float in ``[0, 1]``.
      conv: how the convolutions are computed: ``"matmul"`` (:func:`conv_valid`, the
        fastest XLA formulation on CPU, also inside ``lax.scan``), ``"xla"``
        (``lax.conv_general_dilated`` + ``reduce_window``, the fastest on GPU/TPU), or
        ``None`` (default) for the backend's choice at trace time. Both give the same
        function and gradients up to float rounding.

    Returns:
      ``z: [B, 50]`` in the parameters' dtype.
    """
    conv = _lenet_conv(conv)
    dtype = params["fc"]["w"].dtype
    x = _images_to_float(images, dtype)[..., None]  # [B, 36, 36, 1]
    x = _conv_relu_pool(x, params["conv1"]["w"], params["conv1"]["b"], conv)  # [B, 14, 14, 10]
    x = _conv_relu_pool(x, params["conv2"]["w"], params["conv2"]["b"], conv)  # [B, 5, 5, 20]
    x = x.reshape(x.shape[0], -1)  # [B, 500]
    return jax.nn.relu(x @ params["fc"]["w"] + params["fc"]["b"])


def lenet_heads(params: dict, z: jax.Array) -> jax.Array:
    """Per-task logits ``[T, B, C]`` from the representation ``z: [B, 50]``."""
    return jnp.einsum("bh,thc->tbc", z, params["heads"]["w"]) + params["heads"]["b"][:, None, :]


def lenet_apply(params: dict, images) -> jax.Array:
    """Logits ``[T, B, C]`` = ``lenet_heads(params, lenet_encode(params, images))``."""
    return lenet_heads(params, lenet_encode(params, images))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy per task.

    Args:
      logits: ``[T, B, C]``.
      labels: integer ``[B, T]`` (column ``t`` is task ``t``'s class).

    Returns:
      ``[T]``: ``−(1/B) Σ_b log softmax(logits[t, b])[labels[b, t]]``.
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`labels` must be integer class indices, got {labels.dtype}.")
    num_tasks, batch = logits.shape[0], logits.shape[1]
    if labels.shape != (batch, num_tasks):
        raise ValueError(
            f"`labels` must have shape [B, T] = {(batch, num_tasks)}, got {labels.shape}."
        )
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels.T[..., None], axis=-1)[..., 0]  # [T, B]
    return -jnp.mean(picked, axis=1)


def lenet_head_losses(params: dict, z: jax.Array, labels) -> jax.Array:
    """Per-task cross-entropy ``[T]`` from the representation ``z: [B, 50]``."""
    return cross_entropy(lenet_heads(params, z), labels)


def lenet_losses(params: dict, images, labels) -> jax.Array:
    """Per-task mean cross-entropy ``[T]`` of the LeNet on a batch.

    ``images: [B, 36, 36]`` uint8, ``labels: [B, T]`` int. Differentiate with
    ``jp.value_and_jacobian(lenet_losses)(params, images, labels)``.
    """
    return lenet_head_losses(params, lenet_encode(params, images), labels)


def lenet_mtl_encode(params: dict, batch) -> jax.Array:
    """``encode(params, batch) -> z`` for ``jp.mtl_value_and_grad``; ``batch = (images,
    labels)``."""
    images, _ = batch
    return lenet_encode(params, images)


def lenet_mtl_heads(params: dict, z: jax.Array, batch) -> jax.Array:
    """``heads(params, z, batch) -> losses[T]`` for ``jp.mtl_value_and_grad``."""
    _, labels = batch
    return lenet_head_losses(params, z, labels)


def lenet_accuracy(params: dict, images, labels) -> jax.Array:
    """Per-task accuracy ``[T]``: fraction of ``argmax`` logits equal to the label."""
    logits = lenet_apply(params, images)
    labels = jnp.asarray(labels)
    if labels.shape != (logits.shape[1], logits.shape[0]):
        raise ValueError(
            f"`labels` must have shape [B, T] = {(logits.shape[1], logits.shape[0])}, "
            f"got {labels.shape}."
        )
    hits = jnp.argmax(logits, axis=-1) == labels.T  # [T, B]
    return jnp.mean(hits.astype(logits.dtype), axis=1)


# ----------------------------------------------------------------------------- MLPs


def mlp_init(key: jax.Array, sizes: Sequence[int], *, dtype=jnp.float32) -> list[dict]:
    """Dense layers ``sizes[0] → sizes[1] → … → sizes[-1]``.

    Returns a list of ``{"w": [d_in, d_out], "b": [d_out]}``. The activation is not a
    parameter (a string leaf would break ``jax.grad`` over the pytree), so it is an
    argument of :func:`mlp_apply`.
    """
    sizes = tuple(int(s) if isinstance(s, np.integer) else s for s in sizes)
    if len(sizes) < 2:
        raise ValueError(f"`sizes` needs at least an input and an output size, got {sizes}.")
    for s in sizes:
        _check_positive_int(s, "sizes")
    specs = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        specs += [((d_in, d_out), d_in), ((d_out,), d_in)]
    leaves = _uniform_leaves(key, specs, _check_dtype(dtype))
    return [{"w": w, "b": b} for w, b in zip(leaves[0::2], leaves[1::2])]


def mlp_apply(params: Sequence[dict], x: jax.Array, activation: str = "tanh") -> jax.Array:
    """``x: [..., d_in] → [..., d_out]``; ``activation`` after every layer but the last
    (linear output). ``activation`` is one of ``tanh, relu, sigmoid, gelu, softplus,
    identity``."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {tuple(_ACTIVATIONS)}, got {activation!r}.")
    act = _ACTIVATIONS[activation]
    x = jnp.asarray(x)
    if x.shape[-1:] != params[0]["w"].shape[:1]:
        raise ValueError(
            f"`x` must end in the input size {params[0]['w'].shape[0]}, got shape {x.shape}."
        )
    x = x.astype(params[0]["w"].dtype)
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def river_init(key: jax.Array, *, dtype=jnp.float32) -> list[dict]:
    """The EPO River-Flow network ``64→32→16→8→8`` (2 816 parameters)."""
    return mlp_init(key, RIVER_SIZES, dtype=dtype)


def river_apply(params: Sequence[dict], x: jax.Array) -> jax.Array:
    """Predictions ``[B, 8]`` from features ``[B, 64]`` (tanh hidden layers)."""
    return mlp_apply(params, x, "tanh")


def river_losses(params: Sequence[dict], x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-task mean squared error ``[8]``: ``l_k = (1/B) Σ_b (f(x_b)_k − y_bk)²``."""
    pred = river_apply(params, x)
    y = jnp.asarray(y)
    if y.shape != pred.shape:
        raise ValueError(f"`y` must have shape {pred.shape}, got {y.shape}.")
    return jnp.mean((pred - y.astype(pred.dtype)) ** 2, axis=0)
