"""Scale-out with :mod:`jax.sharding`: data-parallel and model-sharded training steps.

The jitted training step does not change; only where its inputs live does::

    mesh = jp.sharding.make_mesh(model=1)             # every device on the "data" axis
    params = jp.sharding.shard_params(params, mesh)   # replicated when model == 1
    opt_state = jp.sharding.shard_state(tx.init(params), params)
    batch = jp.sharding.shard_batch(batch, mesh)      # leading axis split over "data"
    params, opt_state, losses = step(params, opt_state, batch)   # the same jitted step

Why this is enough. Under ``jax.jit`` XLA's SPMD partitioner propagates the input
shardings through the program:

* **Data parallel** (``model=1``). Per-task losses are batch means, so on each device
  the backward passes give a partial Jacobian of the local batch; the only collective
  the partitioner needs is the all-reduce of the ``m × n`` Jacobian (fused with the
  ``m`` losses into one tuple all-reduce). The Gramian, the ``m × m`` LP / QP and
  ``combine`` then run replicated. For the shared-representation step
  (``jp.mtl_value_and_grad``, MGDA-UB) the representation Jacobian is per-sample and
  stays batch-sharded: its Gramian is contracted locally, and what is all-reduced is
  the ``m × m`` Gramian, the ``m`` per-task head gradients (heads only), the losses
  and the final gradient — never an ``m × n`` block of the shared parameters.
* **Model-sharded parameters** (``model > 1``). ``jp.gramian`` contracts each leaf with
  a ``tensordot`` over its parameter axes; with the Jacobian sharded like the
  parameters every device contracts its own block and the partitioner reduces only the
  ``m × m`` partial Gramians over the ``model`` axis (the Jacobian blocks themselves
  are all-reduced over ``data`` only, each device its own shard). ``jp.combine``
  contracts over the (unsharded) task axis, so its output keeps the parameters'
  sharding with no collective. The model's own forward/backward passes need the
  usual tensor-parallel activation reductions, which depend on the model and its
  layout (:func:`param_specs`), not on jaxpareto.

The helpers below only place arrays (and read compiled HLO); none of them is needed
inside the step. They work across processes after ``jax.distributed.initialize``:
``shard_batch`` takes each process's *local* slice of the batch, ``replicate`` /
``shard_params`` take the same full value on every process (e.g. from the same seed).

Meshes from :func:`make_mesh` use ``AxisType.Auto`` (the partitioner chooses
intermediate shardings). ``jax.make_mesh`` defaults to ``AxisType.Explicit`` in recent
jax; data parallel works there too, but a model-sharded matmul whose contracting axis
is sharded then needs an explicit ``out_sharding`` in the user's model code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

#: Name of the mesh axis the batch is split over (data parallelism).
DATA = "data"
#: Name of the mesh axis the parameters are sharded over (model parallelism).
MODEL = "model"

__all__ = [
    "DATA",
    "MODEL",
    "Collective",
    "collectives",
    "make_mesh",
    "batch_sharding",
    "shard_batch",
    "replicate",
    "param_specs",
    "param_shardings",
    "shard_params",
    "shard_state",
    "place",
]


# --------------------------------------------------------------------------- meshes


def make_mesh(
    data: int | None = None,
    model: int = 1,
    *,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A ``("data", "model")`` mesh over ``devices`` (default: all global devices).

    Args:
      data: size of the ``"data"`` axis (default ``len(devices) // model``).
      model: size of the ``"model"`` axis (``1``: pure data parallel).
      devices: the devices, default ``jax.devices()`` (all processes' devices after
        ``jax.distributed.initialize``).

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(data, model)`` with ``AxisType.Auto``
      axes, laid out by :func:`jax.make_mesh` (topology-aware on TPU/GPU).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if isinstance(model, bool) or not isinstance(model, (int, np.integer)) or model < 1:
        raise ValueError(f"make_mesh: `model` must be a positive int, got {model!r}.")
    if data is None:
        if n % model:
            raise ValueError(f"make_mesh: `model`={model} does not divide the {n} devices.")
        data = n // model
    if isinstance(data, bool) or not isinstance(data, (int, np.integer)) or data < 1:
        raise ValueError(f"make_mesh: `data` must be a positive int, got {data!r}.")
    if data * model != n:
        raise ValueError(
            f"make_mesh: `data` × `model` = {data} × {model} must equal the {n} devices."
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((int(data), int(model)), (DATA, MODEL), auto, devices=devices)


def _axis_size(mesh: Mesh, axis: str, name: str = "axis") -> int:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if axis not in mesh.shape:
        raise ValueError(f"`{name}` {axis!r} is not an axis of the mesh {dict(mesh.shape)}.")
    return mesh.shape[axis]


# --------------------------------------------------------------------------- placement


def _is_global(leaf) -> bool:
    """A jax.Array some of whose shards live in other processes."""
    return isinstance(leaf, jax.Array) and not leaf.is_fully_addressable


def _place_leaf(leaf, sharding: NamedSharding):
    if jax.process_count() == 1 or _is_global(leaf):
        return jax.device_put(leaf, sharding)
    # Several processes: every process holds the full value; each builds its own shards.
    host = np.asarray(jax.device_get(jnp.asarray(leaf)))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree: Any, shardings: Any) -> Any:
    """Puts every leaf of ``tree`` on its sharding (a pytree prefix of ``tree``).

    With one process this is :func:`jax.device_put`. With several, each leaf must be
    the same full value on every process (arrays already spread over processes are
    resharded by ``device_put``).
    """
    return jax.tree_util.tree_map(
        lambda s, sub: jax.tree_util.tree_map(lambda l: _place_leaf(l, s), sub),
        shardings,
        tree,
        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding),
    )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of ``tree`` replicated on all devices of ``mesh`` (``P()``)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    return place(tree, NamedSharding(mesh, PartitionSpec()))


def batch_sharding(mesh: Mesh, axis: str = DATA) -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: leading (batch) axis split over ``axis``."""
    _axis_size(mesh, axis)
    return NamedSharding(mesh, PartitionSpec(axis))


def shard_batch(batch: Any, mesh: Mesh, axis: str = DATA) -> Any:
    """Places a batch with its leading axis split over the mesh axis ``axis``.

    Every leaf is ``[B, ...]``. With one process ``batch`` is the global batch and
    ``B`` must be divisible by ``mesh.shape[axis]``. With several processes (after
    ``jax.distributed.initialize``) each process passes its own *local* slice
    ``[B_local, ...]``; the global batch is their concatenation in process order
    (:func:`jax.make_array_from_process_local_data`).

    Returns:
      A pytree like ``batch`` of global ``jax.Array`` s sharded ``P(axis)``.
    """
    size = _axis_size(mesh, axis)
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("`batch` has no leaves.")
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("`batch` leaves need a leading batch axis; got a scalar leaf.")
    multi = jax.process_count() > 1

    def put(leaf):
        if multi and not _is_global(leaf):
            return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))
        if np.shape(leaf)[0] % size:
            raise ValueError(
                f"`batch` leaf of shape {np.shape(leaf)}: the batch axis must be divisible "
                f"by the {size} devices of mesh axis {axis!r}."
            )
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(put, batch)


# --------------------------------------------------------------------- model sharding


def _matrix_spec(shape: tuple[int, ...], size: int, axis: str) -> PartitionSpec:
    """Split the largest dimension divisible by ``size`` (the last one on ties)."""
    best = None
    for d, n in enumerate(shape):
        if n % size == 0 and (best is None or n >= shape[best]):
            best = d
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * best + [axis]))


def param_specs(params: Any, mesh: Mesh, axis: str = MODEL) -> Any:
    """Default partition specs splitting parameters over the mesh axis ``axis``.

    A shape rule for dense layers, so that optimizer moments get the same specs as
    their parameters:

    * a leaf with two or more dimensions is split along its largest dimension
      divisible by ``k = mesh.shape[axis]`` (the last such dimension on ties);
    * a vector (bias) is split when its length is the last dimension of a matrix that
      the first rule splits along its last dimension (a bias follows the output
      features of a column-split layer); other vectors and scalars are replicated;
    * on a mesh without ``axis``, or with ``k == 1``, everything is replicated.

    For an MLP block ``[d, h] → [h, d']`` with ``h`` the largest size this is the
    column-then-row split of tensor parallelism (Shoeybi et al. 2019, Megatron-LM): the
    only activation collective is one all-reduce of the block's output, and one
    training step returns parameters with the same shardings (no recompilation). A
    shape rule cannot know a deeper model's layer order; pass your own ``specs`` to
    :func:`shard_params` for that.

    Args:
      params: the parameter pytree (only leaf shapes are read).
      mesh: a :class:`~jax.sharding.Mesh` or :class:`~jax.sharding.AbstractMesh`
        (only its axis sizes are read, so a layout can be planned without devices).
      axis: the model axis name.

    Returns:
      A pytree like ``params`` of :class:`jax.sharding.PartitionSpec`.
    """
    if not isinstance(mesh, (Mesh, AbstractMesh)):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    size = mesh.shape.get(axis, 1)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [tuple(np.shape(l)) for l in leaves]
    if size == 1:
        return jax.tree_util.tree_unflatten(treedef, [PartitionSpec() for _ in shapes])
    matrix = {s: _matrix_spec(s, size, axis) for s in shapes if len(s) >= 2}
    column_outputs = {s[-1] for s, spec in matrix.items() if len(spec) == len(s)}

    def spec(shape):
        if len(shape) >= 2:
            return matrix[shape]
        if len(shape) == 1 and shape[0] in column_outputs:
            return PartitionSpec(axis)
        return PartitionSpec()

    return jax.tree_util.tree_unflatten(treedef, [spec(s) for s in shapes])


def param_shardings(params: Any, mesh: Mesh, axis: str = MODEL) -> Any:
    """:func:`param_specs` as :class:`~jax.sharding.NamedSharding` s on ``mesh``."""
    return jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s),
        param_specs(params, mesh, axis),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def shard_params(params: Any, mesh: Mesh, axis: str = MODEL, *, specs: Any = None) -> Any:
    """Places ``params`` on ``mesh``, split over the mesh axis ``axis``.

    Args:
      params: the parameter pytree (the same full value on every process).
      mesh: the mesh; on a mesh whose ``axis`` has size 1 (or is absent) the
        parameters are replicated, which is the data-parallel layout.
      axis: the model axis name.
      specs: optional pytree (a prefix of ``params``) of
        :class:`jax.sharding.PartitionSpec`; default :func:`param_specs`.

    Returns:
      ``params`` as global arrays with :class:`~jax.sharding.NamedSharding` s.
    """
    if specs is None:
        specs = param_specs(params, mesh, axis)
    elif not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    shardings = jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )
    return place(params, shardings)


def shard_state(state: Any, params: Any) -> Any:
    """Places an optimizer state next to already placed ``params``.

    Every sub-tree of ``state`` with the structure and leaf shapes of ``params``
    (optax's moments ``mu``, ``nu``, traces, ...) gets the parameters' shardings; every
    other leaf (step counts, the ``[m]`` task weights and diagnostics of
    :func:`jaxpareto.aggregate`) is replicated on the parameters' mesh.
    """
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    if not p_leaves:
        raise ValueError("`params` has no leaves.")
    p_shardings = []
    for leaf in p_leaves:
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, NamedSharding):
            raise ValueError(
                "`params` must be placed on a mesh first (e.g. with shard_params); got a "
                f"leaf with sharding {sharding!r}."
            )
        p_shardings.append(sharding)
    mesh = p_shardings[0].mesh
    p_shapes = [tuple(np.shape(l)) for l in p_leaves]
    replicated = NamedSharding(mesh, PartitionSpec())

    def like_params(node) -> bool:
        leaves, treedef = jax.tree_util.tree_flatten(node)
        return treedef == p_def and [tuple(np.shape(l)) for l in leaves] == p_shapes

    def shardings_for(node):
        if like_params(node):
            return jax.tree_util.tree_unflatten(p_def, p_shardings)
        return jax.tree_util.tree_map(lambda _: replicated, node)

    return place(state, jax.tree_util.tree_map(shardings_for, state, is_leaf=like_params))


# ------------------------------------------------------------------------ HLO reading


class Collective(NamedTuple):
    """One collective instruction of a compiled XLA program.

    Attributes:
      op: ``"all-reduce"``, ``"all-gather"``, ``"reduce-scatter"``,
        ``"collective-permute"``, ``"all-to-all"``, ... (async ``-start`` forms are
        reported under the base name).
      shapes: the result shapes (one per operand of a tuple collective) as
        ``(dtype, dims)`` pairs, e.g. ``(("f32", (3, 3)),)``.
      group_size: devices per replica group where the HLO states it plainly, else
        ``None``.
      text: the instruction line.
    """

    op: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    group_size: int | None
    text: str


_COLLECTIVE_OPS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "collective-permute",
    "all-to-all",
    "ragged-all-to-all",
    "collective-broadcast",
)
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.+?)\s+"
    r"(?P<op>" + "|".join(re.escape(o) for o in _COLLECTIVE_OPS) + r")(?:-start)?\("
)
_SHAPE = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")


def _group_size(line: str) -> int | None:
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return int(iota.group(2))
    explicit = re.search(r"replica_groups=\{\{([0-9,]*)\}", line)
    if explicit:
        return len([t for t in explicit.group(1).split(",") if t])
    # Mesh form: replica_groups=mesh['axis_0'=a,...], device_ids=(...) {'axis_k',...}
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\].*?\{('[^}]*')\}", line)
    if mesh:
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
        names = re.findall(r"'(\w+)'", mesh.group(2))
        if names and all(n in sizes for n in names):
            return math.prod(int(sizes[n]) for n in names)
    return None


def collectives(hlo_text: str) -> list[Collective]:
    """The collective instructions of compiled HLO text, in program order.

    Use it to check what a sharded step communicates::

        text = jax.jit(step).lower(params, opt_state, batch).compile().as_text()
        for c in jp.sharding.collectives(text):
            print(c.op, c.shapes, c.group_size)

    Args:
      hlo_text: ``Compiled.as_text()`` (post-optimisation HLO).

    Returns:
      A list of :class:`Collective`.
    """
    if not isinstance(hlo_text, str):
        raise TypeError(f"`hlo_text` must be a str, got {type(hlo_text).__name__}.")
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        shapes = tuple(
            (dtype, tuple(int(d) for d in dims.split(",") if d))
            for dtype, dims in _SHAPE.findall(match.group("type"))
        )
        found.append(Collective(match.group("op"), shapes, _group_size(line), line.strip()))
    return found
