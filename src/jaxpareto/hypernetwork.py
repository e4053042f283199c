"""Controllable Pareto MTL: preference-conditioned hypernetworks.

One hypernetwork ``h_φ(r)`` maps a preference ``r ∈ Δ_m`` to the *parameters* of a
target network, so that after training any trade-off is one forward pass away
(Lin et al. 2020, "Controllable Pareto multi-task learning", arXiv 2010.06313; Navon et al.
2021, "Learning the Pareto front with hypernetworks", PHN). The target network is
anything written as ``apply(params, x)`` over a parameter pytree (plain dicts, flax
``FrozenDict``/dicts, equinox arrays split out with ``eqx.partition``...): the
hypernetwork only needs a *template* of that pytree (shapes and dtypes of its leaves).

Architecture (``init`` / ``apply``):

* preference encoder ``e = E(r̄)``, ``r̄ = r / Σ r``: an MLP ``m → hidden… → embed_dim``
  (activation after every hidden layer, none after the last) — PHN's "ray MLP"
  ``2 → 100 → 100 → 100``;
* **unchunked** (``chunk_size=None``), as PHN's ``LeNetHyper``: one linear head per
  target leaf, ``θ_leaf(r) = g_leaf · (b_leaf + W_leaf e)``;
* **chunked** (``chunk_size=c``), as PHN's ``ResnetHyper``: the flattened target
  ``θ ∈ R^N`` is cut into ``K = ⌈N / c⌉`` chunks; chunk ``k`` has a learned embedding
  ``z_k ∈ R^{chunk_embed_dim}`` and one shared MLP ``D`` emits it,
  ``θ_chunk_k(r) = D([e; z_k]) ∈ R^c``; the chunks are concatenated, cut to ``N`` and
  split into the leaves, each multiplied by ``g_leaf``. ``|φ| ≈ c·hidden + K·dim`` is
  independent of ``N`` up to the chunk embeddings, so ``φ`` can be far smaller than
  the target.

``g_leaf`` is a trained per-leaf gain (one scalar per target leaf) that starts at the
RMS of the template leaf (the RMS of the whole template for an all-zero leaf, 1 if
everything is zero). Everything else is then learned in units of each leaf's natural
scale, so one optimizer step size fits conv kernels and biases alike; the gain is a
parameter, not static metadata, so hypernetworks initialised from different templates
of the same shapes share compiled code and can be stacked with ``vmap``. The
unchunked heads' biases start at the template (``b_leaf = θ₀ / g_leaf``) and their
weights at ``N(0, init_scale² / embed_dim)``, so ``h_φ(r)`` starts as the
well-initialised template plus a small preference-dependent perturbation (PHN starts
its heads at PyTorch's default random init instead). The chunked decoder starts
random, emitting leaves of about the template's scale.

Training (``train_step``): each step samples ``K`` preferences ``r_k ~ Dir(α)`` and
moves ``φ`` along the average over ``k`` of a weighted sum of the task gradients
``∇_φ l_i(h_φ(r_k))``:

* ``"linear"``: weights ``r_k / Σ r_k`` — the gradient of ``(1/K) Σ_k Σ_i r̄_ki l_ki``
  in one backward pass (PHN-LS);
* ``"chebyshev"``: weights ``e_j``, ``j = argmax_i r_ki (l_ki − z_i)`` (or the smooth
  Tchebycheff weights), from the losses only, also one backward pass;
* ``"epo"`` or any :class:`jaxpareto.weighting.Weighting`: per preference the full
  Jacobian of the ``m`` losses w.r.t. ``φ`` (``m`` backward passes, vmapped over
  ``k``), its Gramian, the weighting's weights with ``preference=r_k`` through
  :func:`jaxpareto.transforms.aggregate` (PHN-EPO: the EPO LP over *all* hypernetwork
  parameters).

The averaged direction feeds any optax optimizer.

Evaluation (``evaluate``): models for a grid of preferences, their losses (and any
auxiliary metrics), the mean non-uniformity of ``r ⊙ l`` and the hypervolume.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpareto import _guard
from jaxpareto import jacobian as _jac
from jaxpareto import metrics as _metrics
from jaxpareto import transforms as _tx
from jaxpareto._validate import check_float, check_preference, is_concrete
from jaxpareto.weighting.base import Weighting
from jaxpareto.weighting.scalarization import LOSS_RULES, chebyshev_weights

__all__ = [
    "HyperParams",
    "StepInfo",
    "Evaluation",
    "init",
    "apply",
    "generate",
    "num_params",
    "sample_preferences",
    "train_step",
    "evaluate",
]

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
}
_RULES = ("linear", "chebyshev", "epo", *LOSS_RULES)


# ---------------------------------------------------------------------------
# Parameters.


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static description of the target and the hypernetwork (hashable: jit cache key)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    num_tasks: int
    chunk_size: int | None
    activation: str

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def target_size(self) -> int:
        return sum(self.sizes)


@dataclasses.dataclass(frozen=True, eq=False)
class HyperParams:
    """Parameters ``φ`` of a hypernetwork: a pytree whose leaves are the trainable arrays.

    The static description of the target (its tree structure, leaf shapes and dtypes)
    and of the architecture travels as pytree metadata, so ``apply(hparams, r)``
    needs nothing else and ``hparams`` can be given to ``jax.jit``, ``jax.grad``,
    optax and checkpointing like any pytree.

    Attributes:
      encoder: tuple of ``{"w": [d_in, d_out], "b": [d_out]}``, the preference MLP
        ``m → hidden… → embed_dim``.
      heads: unchunked: tuple (one per target leaf) of ``{"w": [embed_dim, size],
        "b": [size]}``; chunked: ``None``.
      chunk_embeddings: chunked: ``[num_chunks, chunk_embed_dim]``; else ``None``.
      decoder: chunked: tuple of dense layers ``embed_dim + chunk_embed_dim →
        chunk_hidden… → chunk_size``; else ``None``.
      gains: ``[num_leaves]`` per-leaf output gains ``g``.
      spec: static metadata (not a leaf).
    """

    encoder: tuple
    heads: tuple | None
    chunk_embeddings: jax.Array | None
    decoder: tuple | None
    gains: jax.Array
    spec: _Spec

    @property
    def num_tasks(self) -> int:
        return self.spec.num_tasks

    @property
    def chunked(self) -> bool:
        return self.spec.chunk_size is not None


jax.tree_util.register_dataclass(
    HyperParams,
    data_fields=["encoder", "heads", "chunk_embeddings", "decoder", "gains"],
    meta_fields=["spec"],
)


def num_params(tree: Any) -> int:
    """Number of scalars in a pytree (e.g. ``φ`` or a target template)."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a positive int, got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value}.")
    return int(value)


def _widths(hidden, name: str) -> tuple[int, ...]:
    if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(
            f"`{name}` must be an int or a sequence of ints, got {type(hidden).__name__}."
        )
    return tuple(_positive_int(h, f"{name}[{i}]") for i, h in enumerate(hidden))


def _dense(key, d_in: int, d_out: int, gain: float, dtype) -> dict:
    """Dense layer with ``w ~ N(0, gain / d_in)`` (He for ReLU layers), ``b = 0``."""
    std = math.sqrt(gain / d_in)
    return {
        "w": std * jax.random.normal(key, (d_in, d_out), dtype),
        "b": jnp.zeros((d_out,), dtype),
    }


def _mlp_init(key, widths: Sequence[int], dtype) -> tuple:
    keys = jax.random.split(key, len(widths) - 1)
    last = len(widths) - 2
    # Layers followed by the activation get gain 2, the final linear layer gain 1.
    return tuple(
        _dense(k, widths[i], widths[i + 1], 1.0 if i == last else 2.0, dtype)
        for i, k in enumerate(keys)
    )


def _mlp_apply(layers: tuple, x: jax.Array, act) -> jax.Array:
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            x = act(x)
    return x


def _leaf_rms(leaves, dtype) -> jax.Array:
    """RMS of every template leaf ``[num_leaves]``; all-zero (or non-finite) leaves
    borrow the RMS of the whole template, and 1 is used if that is zero too."""
    squares = jnp.stack([jnp.sum(jnp.square(l.astype(dtype))) for l in leaves])
    sizes = jnp.asarray([max(1, l.size) for l in leaves], dtype)
    rms = jnp.sqrt(squares / sizes)
    total = jnp.sqrt(jnp.sum(squares) / jnp.sum(sizes))
    usable = lambda x: jnp.isfinite(x) & (x > 0)  # noqa: E731
    fallback = jnp.where(usable(total), total, 1)
    return jnp.where(usable(rms), rms, fallback)


def init(
    key: jax.Array,
    target_params: Any,
    *,
    embed_dim: int = 100,
    hidden: int | Sequence[int] = (100, 100),
    chunk_size: int | None = None,
    num_tasks: int = 2,
    chunk_embed_dim: int | None = None,
    chunk_hidden: int | Sequence[int] | None = None,
    activation: str = "relu",
    init_scale: float = 0.1,
    dtype: Any = None,
) -> HyperParams:
    """Initialises a hypernetwork that emits pytrees shaped like ``target_params``.

    Args:
      key: PRNG key.
      target_params: template of the target network's parameters: any pytree of
        floating arrays (shapes, dtypes and values are read; the values seed the
        unchunked heads' biases and every leaf's initial gain ``g_leaf``).
      embed_dim: width of the preference embedding ``e``.
      hidden: hidden widths of the preference MLP (int or sequence; ``()`` = linear).
      chunk_size: ``None`` for one linear head per target leaf; a positive int for the
        chunked hypernetwork emitting ``chunk_size`` target scalars per chunk.
      num_tasks: ``m >= 2``, the length of the preference vectors.
      chunk_embed_dim: width of the learned chunk embeddings (default ``embed_dim``).
      chunk_hidden: hidden widths of the shared chunk MLP (default ``hidden``).
      activation: ``"relu"``, ``"tanh"``, ``"gelu"``, ``"elu"`` or ``"softplus"``.
      init_scale: ``>= 0``; std of the unchunked heads' weights times ``√embed_dim``,
        i.e. the initial size of the preference-dependent part relative to ``g_leaf``.
      dtype: float dtype of ``φ`` (default: the template leaves' result type). The
        generated leaves always have the template's dtypes.

    Returns:
      :class:`HyperParams` ``φ``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(target_params)
    if not leaves:
        raise ValueError(
            "`target_params` has no leaves; pass the target network's parameter pytree."
        )
    for leaf in leaves:
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"`target_params` has a leaf of dtype {dt}; a hypernetwork emits floating "
                "leaves only (split non-trainable leaves out of the template)."
            )
    embed_dim = _positive_int(embed_dim, "embed_dim")
    hidden = _widths(hidden, "hidden")
    num_tasks = _positive_int(num_tasks, "num_tasks")
    if num_tasks < 2:
        raise ValueError(
            f"`num_tasks` must be >= 2 (a preference needs two tasks), got {num_tasks}."
        )
    if chunk_size is not None:
        chunk_size = _positive_int(chunk_size, "chunk_size")
    chunk_embed_dim = (
        embed_dim if chunk_embed_dim is None else _positive_int(chunk_embed_dim, "chunk_embed_dim")
    )
    chunk_hidden = hidden if chunk_hidden is None else _widths(chunk_hidden, "chunk_hidden")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {tuple(_ACTIVATIONS)}, got {activation!r}.")
    if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale >= 0):
        raise ValueError(f"`init_scale` must be a finite float >= 0, got {init_scale!r}.")
    if dtype is None:
        dtype = jnp.result_type(*leaves)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")

    spec = _Spec(
        treedef=treedef,
        shapes=tuple(tuple(int(d) for d in np.shape(l)) for l in leaves),
        dtypes=tuple(jnp.result_type(l).name for l in leaves),
        num_tasks=num_tasks,
        chunk_size=chunk_size,
        activation=activation,
    )
    arch = (
        tuple(hidden),
        embed_dim,
        chunk_embed_dim,
        tuple(chunk_hidden),
        float(init_scale),
        dtype.name,
    )
    return _init_arrays(key, [jnp.asarray(l) for l in leaves], spec, arch)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _init_arrays(key, leaves, spec: _Spec, arch) -> HyperParams:
    """The random draws of :func:`init`, compiled once per architecture (eagerly, every
    differently shaped draw would be compiled on its own)."""
    hidden, embed_dim, chunk_embed_dim, chunk_hidden, init_scale, dtype = arch
    k_enc, k_out, k_emb = jax.random.split(key, 3)
    encoder = _mlp_init(k_enc, (spec.num_tasks, *hidden, embed_dim), dtype)
    gains = _leaf_rms(leaves, dtype)

    if spec.chunk_size is None:
        head_keys = jax.random.split(k_out, len(leaves))
        std = init_scale / math.sqrt(embed_dim)
        heads = tuple(
            {
                "w": std * jax.random.normal(k, (embed_dim, size), dtype),
                "b": jnp.ravel(leaf).astype(dtype) / gains[i],
            }
            for i, (k, leaf, size) in enumerate(zip(head_keys, leaves, spec.sizes))
        )
        return HyperParams(encoder, heads, None, None, gains, spec)

    num_chunks = -(-spec.target_size // spec.chunk_size)
    embeddings = jax.random.normal(k_emb, (num_chunks, chunk_embed_dim), dtype)
    decoder = _mlp_init(k_out, (embed_dim + chunk_embed_dim, *chunk_hidden, spec.chunk_size), dtype)
    return HyperParams(encoder, None, embeddings, decoder, gains, spec)


# ---------------------------------------------------------------------------
# Forward pass.


def _check_hparams(hparams) -> HyperParams:
    if not isinstance(hparams, HyperParams):
        raise TypeError(
            f"`hparams` must be HyperParams from jaxpareto.hypernetwork.init, got {type(hparams).__name__}."
        )
    return hparams


def _normalised_preference(preference, m: int, dtype) -> jax.Array:
    """``r / Σ r``; a (traced) preference with a non-finite or non-positive entry is
    replaced by the uniform one (a concrete one raises at trace time instead)."""
    r = jnp.asarray(preference)
    if r.ndim != 1:
        raise ValueError(
            f"`preference` must have shape ({m},); use jax.vmap for a batch of preferences, got {r.shape}."
        )
    r = check_preference(r, m).astype(dtype)
    ok = jnp.all(jnp.isfinite(r)) & jnp.all(r > 0)
    r = jnp.where(ok, r, jnp.ones_like(r))
    return r / jnp.sum(r)


def apply(hparams: HyperParams, preference: jax.Array) -> Any:
    """Target parameters ``h_φ(r)`` for one preference.

    The preference is normalised, ``r̄ = r / Σ r``: ``r`` and ``c·r`` (``c > 0``) state
    the same trade-off for linear, Chebyshev and EPO scalarizations, so they give the
    same model (unit rays ``(cos φ, sin φ)`` and simplex points are interchangeable).

    Args:
      hparams: ``φ`` from :func:`init`.
      preference: ``[m]``, positive. A concrete invalid preference raises
        ``ValueError``; a traced one with a non-finite or non-positive entry is
        replaced by the uniform preference (never NaN parameters).

    Returns:
      A pytree with the template's structure, leaf shapes and leaf dtypes. For a batch
      of preferences ``[P, m]`` use ``jax.vmap(apply, (None, 0))`` or :func:`generate`
      (every leaf gains a leading axis ``P``).
    """
    hparams = _check_hparams(hparams)
    dtype = hparams.encoder[0]["w"].dtype
    r = _normalised_preference(preference, hparams.num_tasks, dtype)
    return _forward(hparams, r)


@jax.jit
def _forward(hparams: HyperParams, r: jax.Array) -> Any:
    """``h_φ(r̄)`` for a normalised preference. Jitted so that eager calls compile one
    program instead of every operation separately; inlined inside an outer jit."""
    spec = hparams.spec
    act = _ACTIVATIONS[spec.activation]
    e = _mlp_apply(hparams.encoder, r, act)

    if hparams.heads is not None:
        flats = [head["b"] + e @ head["w"] for head in hparams.heads]
    else:
        chunk_embeddings = hparams.chunk_embeddings
        assert chunk_embeddings is not None  # chunked: no heads, chunk embeddings set
        num_chunks = chunk_embeddings.shape[0]
        inputs = jnp.concatenate(
            [jnp.broadcast_to(e, (num_chunks, e.shape[0])), chunk_embeddings], axis=1
        )
        flat = _mlp_apply(hparams.decoder, inputs, act).reshape(-1)
        offsets = np.cumsum((0,) + spec.sizes)
        flats = [flat[offsets[i] : offsets[i + 1]] for i in range(len(spec.sizes))]

    leaves = [
        (f * hparams.gains[i]).reshape(shape).astype(dt)
        for i, (f, shape, dt) in enumerate(zip(flats, spec.shapes, spec.dtypes))
    ]
    return jax.tree_util.tree_unflatten(spec.treedef, leaves)


def generate(hparams: HyperParams, preferences: jax.Array) -> Any:
    """A batch of target parameter pytrees for ``preferences: [P, m]`` (leaves ``[P, ...]``)."""
    preferences = jnp.asarray(preferences)
    m = _check_hparams(hparams).num_tasks
    if preferences.ndim != 2 or preferences.shape[1] != m:
        raise ValueError(f"`preferences` must have shape [P, {m}], got {preferences.shape}.")
    return jax.vmap(apply, in_axes=(None, 0))(hparams, preferences)


# ---------------------------------------------------------------------------
# Training.


def sample_preferences(
    key: jax.Array,
    num: int,
    num_tasks: int,
    alpha: float | jax.Array = 0.2,
    *,
    floor: float = 1e-4,
    dtype: Any = None,
) -> jax.Array:
    """``num`` preferences ``r ~ Dir(α)`` on the simplex, kept away from its boundary.

    PHN samples one ray per batch from ``Dir(0.2, 0.2)`` (here ``jax.random.dirichlet``).
    With ``α < 1`` the Dirichlet puts much of its mass near the vertices, where entries
    can be far below any useful preference (or round to 0); every entry is raised to at
    least ``floor`` and the vector renormalised, so each sample is a valid (strictly
    positive) preference.
    A traced ``alpha`` with a non-positive or non-finite entry is replaced by 1
    (uniform on the simplex).

    Args:
      key: PRNG key.
      num: number of preferences ``K >= 1`` (static).
      num_tasks: ``m >= 2`` (static).
      alpha: concentration, a positive scalar or ``[m]``.
      floor: smallest entry before renormalisation, ``0 < floor < 1/m``.
      dtype: float dtype (default: the default float).

    Returns:
      ``[num, m]``, rows positive and summing to 1.
    """
    num = _positive_int(num, "num")
    m = _positive_int(num_tasks, "num_tasks")
    if m < 2:
        raise ValueError(f"`num_tasks` must be >= 2, got {m}.")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1.0 / m):
        raise ValueError(f"`floor` must be in (0, 1/m) = (0, {1.0 / m}), got {floor!r}.")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
    alpha = jnp.asarray(alpha, dtype)
    if alpha.ndim == 0:
        alpha = jnp.full((m,), alpha)
    if alpha.shape != (m,):
        raise ValueError(f"`alpha` must be a scalar or have shape ({m},), got {alpha.shape}.")
    if is_concrete(alpha):
        a = np.asarray(alpha)
        if not (np.all(np.isfinite(a)) and np.all(a > 0)):
            raise ValueError(f"`alpha` must be finite and positive, got {a}.")
    alpha = jnp.where(jnp.isfinite(alpha) & (alpha > 0), alpha, 1)
    r = jax.random.dirichlet(key, alpha, (num,), dtype)
    # jax draws the Gammas in log space, so rows stay finite even for tiny α; guard anyway.
    r = jnp.where(jnp.all(jnp.isfinite(r), axis=1, keepdims=True), r, 1.0 / m)
    r = jnp.maximum(r, floor)
    return r / jnp.sum(r, axis=1, keepdims=True)


class StepInfo(NamedTuple):
    """Diagnostics of one :func:`train_step` update (``K`` preferences, ``m`` tasks).

    Attributes:
      preferences: ``[K, m]`` the sampled preferences (on the simplex).
      losses: ``[K, m]`` task losses of the generated models before the update.
      weights: ``[K, m]`` task weights used for each preference (after ``scale``).
      non_uniformity: ``[K]`` EPO non-uniformity ``μ_r(l)`` of ``r_k ⊙ l_k``.
      diagnostics: the weighting's state per preference (leading axis ``K``; e.g. EPO's
        LP status and fallback flags) for Jacobian rules, ``None`` for the linear and
        Chebyshev rules.
      skipped: bool scalar; ``True`` when the losses or the direction held a NaN/inf:
        then ``φ`` and the optimizer state are returned unchanged.
    """

    preferences: jax.Array
    losses: jax.Array
    weights: jax.Array
    non_uniformity: jax.Array
    diagnostics: Any
    skipped: jax.Array


def _scale_factor(scale, m: int) -> float:
    if isinstance(scale, str):
        if scale == "unit":
            return 1.0
        if scale == "num_tasks":
            return float(m)
        raise ValueError(f"`scale` must be 'unit', 'num_tasks' or a positive float, got {scale!r}.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"`scale` must be 'unit', 'num_tasks' or a positive float, got {scale!r}.")
    return float(scale)


def _resolve_rule(rule, epo_kwargs) -> Weighting | str:
    if isinstance(rule, Weighting):
        return rule
    if rule not in _RULES:
        raise ValueError(
            f"`rule` must be one of {_RULES} or a jaxpareto.weighting.Weighting, got {rule!r}."
        )
    if rule == "epo":
        # Imported here so that the module imports without the EPO solver's dependencies.
        from jaxpareto.weighting.epo import epo

        return epo(**(epo_kwargs or {}))
    return rule


def train_step(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    *,
    rule: str | Weighting = "linear",
    num_preferences: int = 1,
    alpha: float | jax.Array = 0.2,
    floor: float = 1e-4,
    scale: str | float = "unit",
    ideal: jax.Array | None = None,
    smoothing: float | None = None,
    epo_kwargs: dict | None = None,
) -> Callable[..., tuple[HyperParams, Any, StepInfo]]:
    """Builds one training step of a preference-conditioned hypernetwork.

    Each call samples ``K = num_preferences`` preferences ``r_k ~ Dir(α)``
    (:func:`sample_preferences`), generates ``θ_k = h_φ(r_k)`` and the task losses
    ``l_k = loss_fn(θ_k, *args) ∈ R^m`` on the same batch, and applies

    ``d = (1/K) Σ_k Σ_i s·w_ki ∇_φ l_ki``,   ``φ ← φ + optimizer(d)``

    with the weights of ``rule`` (``s`` from ``scale``):

    * ``"linear"``: ``w_k = r_k / Σ r_k`` (linear scalarization; one backward pass
      through ``Σ_k w_k·l_k``);
    * ``"chebyshev"``: Tchebycheff weights of ``r_k ⊙ (l_k − ideal)`` (hard max, or
      smooth with ``smoothing``; one backward pass);
    * ``"epo"``: EPO search weights (Mahapatra & Rajan 2020, eq. 24) from the Gramian of
      the Jacobian ``∂l_k/∂φ`` over all of ``φ``, as in PHN-EPO (``epo_kwargs`` go to
      :func:`jaxpareto.weighting.epo.epo`); PHN trains on ``Σ (m·w_i) l_i``, which is
      ``scale="num_tasks"``;
    * ``"pbi"``, ``"cosmos"``, ``"aasf"``, ``"aug_chebyshev"``, ``"pnorm"``: the raw
      gradient ``∂S/∂l`` of that scalarization at ``(l_k, r_k)`` with its default
      options (:mod:`jaxpareto.weighting.scalarization`; one backward pass);
    * a :class:`jaxpareto.weighting.Weighting`: the same Jacobian path with any
      weighting; ``preference=r_k`` is passed at update time.

    The weightings are used memorylessly (their state is re-initialised for every
    preference); their per-step diagnostics are returned in :class:`StepInfo`.

    Args:
      loss_fn: ``loss_fn(target_params, *args) -> losses[m]``.
      optimizer: optax transformation driving ``φ`` (``optimizer.init(hparams)``).
      rule: ``"linear"``, ``"chebyshev"``, ``"epo"`` or a ``Weighting``.
      num_preferences: ``K >= 1`` preferences per step (vmapped).
      alpha: Dirichlet concentration (PHN: 0.2), scalar or ``[m]``.
      floor: smallest preference entry (see :func:`sample_preferences`).
      scale: ``"unit"``, ``"num_tasks"`` or a positive float multiplying the weights.
      ideal: Chebyshev ideal point ``[m]`` (default 0).
      smoothing: smooth Tchebycheff temperature (``None``: hard max).
      epo_kwargs: options of the EPO weighting for ``rule="epo"``.

    Returns:
      ``step(hparams, opt_state, key, *args) -> (hparams, opt_state, StepInfo)``, a pure
      function to wrap in ``jax.jit`` (or to run inside ``jax.lax.scan``). A step whose
      losses or direction are not finite leaves ``hparams`` and ``opt_state`` unchanged
      and sets ``StepInfo.skipped``.
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError("`optimizer` must be an optax GradientTransformation (with init/update).")
    num_preferences = _positive_int(num_preferences, "num_preferences")
    if not (isinstance(floor, (int, float)) and floor > 0):
        raise ValueError(f"`floor` must be a positive float, got {floor!r}.")
    _scale_factor(scale, 2)  # validates `scale` now; the factor needs m, known at trace time
    if smoothing is not None and not (isinstance(smoothing, (int, float)) and smoothing > 0):
        raise ValueError(f"`smoothing` must be a positive float or None, got {smoothing!r}.")
    if epo_kwargs is not None and rule != "epo":
        raise ValueError(f"`epo_kwargs` apply to rule='epo' only, got rule={rule!r}.")
    if (ideal is not None or smoothing is not None) and rule != "chebyshev":
        raise ValueError(
            f"`ideal` and `smoothing` apply to rule='chebyshev' only, got rule={rule!r}."
        )
    resolved = _resolve_rule(rule, epo_kwargs)

    def step(hparams, opt_state, key, *args):
        hparams = _check_hparams(hparams)
        m = hparams.num_tasks
        dtype = hparams.encoder[0]["w"].dtype
        factor = _scale_factor(scale, m)
        prefs = sample_preferences(key, num_preferences, m, alpha, floor=floor, dtype=dtype)

        def losses_at(phi, r):
            losses = loss_fn(apply(phi, r), *args)
            if not hasattr(losses, "shape") or losses.shape != (m,):
                raise ValueError(
                    f"`loss_fn` must return a vector of m={m} task losses, got shape "
                    f"{getattr(losses, 'shape', type(losses))}."
                )
            return losses

        if isinstance(resolved, str):
            losses, vjp = jax.vjp(lambda phi: jax.vmap(lambda r: losses_at(phi, r))(prefs), hparams)
            if resolved == "linear":
                weights = prefs / jnp.sum(prefs, axis=1, keepdims=True)
            elif resolved in LOSS_RULES:
                weights = jax.vmap(LOSS_RULES[resolved])(losses, prefs)
            else:
                weights = jax.vmap(
                    lambda l, r: chebyshev_weights(l, r, ideal, smoothing=smoothing)
                )(losses, prefs)
            weights = factor * weights.astype(losses.dtype)
            (direction,) = vjp(weights / num_preferences)
            diagnostics = None
        else:
            agg = _tx.aggregate(resolved, num_tasks=m, scale=factor)
            agg_state = agg.init(hparams)

            def one(r):
                losses, jac = _jac.value_and_jacobian(losses_at)(hparams, r)
                d, state = agg.update(jac, agg_state, hparams, losses=losses, preference=r)
                return d, state, losses

            ds, states, losses = jax.vmap(one)(prefs)
            direction = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), ds)
            weights = states.weights
            diagnostics = states.inner

        updates, new_opt_state = optimizer.update(direction, opt_state, hparams)
        new_hparams = optax.apply_updates(hparams, updates)
        finite = _guard.all_finite(losses, direction)
        new_hparams = _guard.keep_if_finite(finite, new_hparams, hparams)
        new_opt_state = _guard.keep_if_finite(finite, new_opt_state, opt_state)
        info = StepInfo(
            preferences=prefs,
            losses=losses,
            weights=weights,
            non_uniformity=_metrics.non_uniformity(losses, prefs.astype(losses.dtype)),
            diagnostics=diagnostics,
            skipped=~finite,
        )
        return new_hparams, new_opt_state, info

    return step


# ---------------------------------------------------------------------------
# Evaluation.


class Evaluation(NamedTuple):
    """Models generated for a grid of preferences, evaluated.

    Attributes:
      preferences: ``[P, m]`` as given.
      losses: ``[P, m]``.
      aux: whatever ``loss_fn`` returned besides the losses (``has_aux``), batched
        over ``P``; else ``None``.
      non_uniformity: ``[P]`` ``μ_r(l) = KL(r̂⊙l ‖ 𝟙/m)`` per preference (0 = on the ray
        ``r⁻¹``).
      mean_non_uniformity: scalar mean of ``non_uniformity``.
      hypervolume: scalar hypervolume of the ``P`` loss vectors w.r.t. ``reference``
        (``None`` without a reference).
      reference: ``[m]`` the reference point used, or ``None``.
    """

    preferences: jax.Array
    losses: jax.Array
    aux: Any
    non_uniformity: jax.Array
    mean_non_uniformity: jax.Array
    hypervolume: jax.Array | None
    reference: jax.Array | None


def evaluate(
    hparams: HyperParams,
    loss_fn: Callable[..., Any],
    preferences: jax.Array,
    *args,
    reference: jax.Array | None = None,
    has_aux: bool = False,
    batch_size: int | None = None,
) -> Evaluation:
    """Generates one model per preference and evaluates it on ``*args``.

    Args:
      hparams: ``φ``.
      loss_fn: ``loss_fn(target_params, *args) -> losses[m]`` or ``(losses, aux)``
        with ``has_aux`` (e.g. per-task accuracies).
      preferences: ``[P, m]`` test preferences, positive (e.g. PHN's 25 rays
        ``circle_points(25, 0.1, π/2 − 0.1)`` normalised to sum 1, or interior
        Das–Dennis points for ``m >= 3``).
      *args: the evaluation data, shared by all models.
      reference: ``[m]`` hypervolume reference point (``jp.metrics.hypervolume``).
      has_aux: whether ``loss_fn`` returns ``(losses, aux)``.
      batch_size: models evaluated at once (``jax.lax.map``); ``None`` = all (vmap).

    Returns:
      :class:`Evaluation`. Jittable (with ``loss_fn``, ``has_aux`` and ``batch_size``
      static).
    """
    hparams = _check_hparams(hparams)
    m = hparams.num_tasks
    preferences = check_float(preferences, "preferences")
    if preferences.ndim != 2 or preferences.shape[1] != m:
        raise ValueError(f"`preferences` must have shape [P, {m}], got {preferences.shape}.")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")

    def one(r):
        out = loss_fn(apply(hparams, r), *args)
        return out if has_aux else (out, None)

    if batch_size is None:
        losses, aux = jax.vmap(one)(preferences)
    else:
        losses, aux = jax.lax.map(one, preferences, batch_size=batch_size)
    if losses.ndim != 2 or losses.shape[1] != m:
        raise ValueError(
            f"`loss_fn` must return m={m} losses per model, got shape {losses.shape[1:]}."
        )
    nu = _metrics.non_uniformity(losses, preferences.astype(losses.dtype))
    hv = None
    if reference is not None:
        reference = check_float(reference, "reference")
        hv = _metrics.hypervolume(losses, reference)
    return Evaluation(
        preferences=preferences,
        losses=losses,
        aux=aux if has_aux else None,
        non_uniformity=nu,
        mean_non_uniformity=jnp.mean(nu),
        hypervolume=hv,
        reference=reference,
    )
