"""Multi-host EPO training on one machine: N processes over the loopback interface.

The parent starts ``--num-processes`` copies of this script. Each child calls
``jax.distributed.initialize`` with the coordinator on ``127.0.0.1:<free port>`` (bound
to 127.0.0.1 only), sees ``--devices-per-process`` CPU devices, builds one global mesh
over all processes' devices (``jp.sharding.make_mesh``), feeds its *own* slice of the
global batch (``jp.sharding.shard_batch``) and runs ``--steps`` jitted EPO steps — the
same step function as on one device. CPU collectives between processes go through gloo
(jax's default ``jax_cpu_collectives_implementation``), pinned to 127.0.0.1.

The parent runs the same steps in a single process on one device and checks that

* every process ends with bit-identical parameters, and
* they equal the single-process parameters to ``1e-12`` (float64) / ``1e-6`` (float32),
* no TCP socket of a child is bound to or connected to an address outside 127.0.0.0/8
  (read from ``/proc`` on Linux).

Exit status 0 when all hold, 1 otherwise; ``--json`` prints the figures as one JSON line.

Run: ``python examples/multihost.py [--num-processes 2] [--steps 20] [--dtype float64]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import shutil
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
NUM_TASKS = 3
SIZES = (16, 32, NUM_TASKS)
GLOBAL_BATCH = 64
PREFERENCE = (1.0, 2.0, 3.0)
LEARNING_RATE = 0.05


# ----------------------------------------------------------------- the training job


def _problem(dtype):
    """Parameters and the global batch, the same in every process (fixed seeds)."""
    import jax

    import jaxpareto as jp

    params = jp.models.mlp_init(jax.random.PRNGKey(0), SIZES, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((GLOBAL_BATCH, SIZES[0])).astype(dtype)
    w = rng.standard_normal((SIZES[0], NUM_TASKS)).astype(dtype)
    y = (np.tanh(x @ w) + 0.1 * rng.standard_normal((GLOBAL_BATCH, NUM_TASKS))).astype(dtype)
    return params, (x, y)


def _make_step():
    import jax
    import jax.numpy as jnp
    import optax

    import jaxpareto as jp

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((jp.models.mlp_apply(params, x) - y) ** 2, axis=0)

    tx = optax.chain(jp.epo(jnp.asarray(PREFERENCE)), optax.sgd(LEARNING_RATE))

    @jax.jit
    def step(params, opt_state, batch):
        losses, jac = jp.value_and_jacobian(loss_fn)(params, batch)
        updates, opt_state = tx.update(jac, opt_state, params, losses=losses)
        return optax.apply_updates(params, updates), opt_state, losses

    return tx, step


def train(params, batch, steps: int, mesh=None):
    """``steps`` EPO steps; with a mesh, ``batch`` is this process's slice."""
    import jax

    import jaxpareto as jp

    tx, step = _make_step()
    if mesh is not None:
        params = jp.sharding.shard_params(params, mesh)
        opt_state = jp.sharding.shard_state(tx.init(params), params)
        batch = jp.sharding.shard_batch(batch, mesh)
    else:
        opt_state = tx.init(params)
    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(loss)
    return params, losses


def _to_host(tree):
    """Full values of (possibly multi-process) arrays, as float64-exact numpy."""
    import jax
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)

    return [fetch(l) for l in jax.tree_util.tree_leaves(tree)]


# ------------------------------------------------------------------ socket checking


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = pathlib.Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode(addr: str) -> str:
    host, port = addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # /proc/net/tcp6: four little-endian 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
    return f"{ip}:{int(port, 16)}"


def _is_loopback(endpoint: str) -> bool:
    ip = endpoint.rsplit(":", 1)[0]
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1") or ip.startswith("::ffff:127.")


def tcp_endpoints(pid: int | None = None) -> list[tuple[str, str]]:
    """(local, remote) of every TCP socket the process ``pid`` holds (Linux only).

    A listening socket has no remote end; it is reported as ``(local, "")``."""
    pid = os.getpid() if pid is None else pid
    inodes = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        path = pathlib.Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                listening = cols[3] == "0A"  # TCP_LISTEN
                found.append((_decode(cols[1]), "" if listening else _decode(cols[2])))
    return found


# --------------------------------------------------------------------------- child


def _pin_gloo_to_loopback() -> bool:
    """Make the CPU client's gloo collectives use 127.0.0.1.

    Left alone, gloo binds to the address the machine's host name resolves to, which
    need not be loopback. jax 0.10 has no public option for it, so this re-registers
    the CPU backend factory with gloo collectives built for ``hostname=127.0.0.1``
    (private API, before the backend starts; returns False where that is not possible).
    """
    try:
        from jax._src import distributed, xla_bridge
        from jax._src.lib import _jax

        collectives = _jax.make_gloo_tcp_collectives(
            distributed_client=distributed.global_state.client, hostname=LOOPBACK
        )
        xla_bridge.register_backend_factory(
            "cpu", functools.partial(xla_bridge.make_cpu_client, collectives=collectives),
            priority=0, fail_quietly=False,
        )
        return True
    except Exception:  # noqa: BLE001 — any failure means: fall back to jax's default
        return False


def child(args) -> int:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    address = f"{LOOPBACK}:{args.port}"
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        coordinator_bind_address=address,
        initialization_timeout=120,
    )
    pinned = _pin_gloo_to_loopback()
    import jaxpareto as jp
    import jaxpareto.sharding  # noqa: F401  (jp.sharding before the lead's export)

    t0 = time.perf_counter()
    params, (x, y) = _problem(np.dtype(args.dtype))
    per_process = GLOBAL_BATCH // args.num_processes
    rows = slice(args.process_id * per_process, (args.process_id + 1) * per_process)
    mesh = jp.sharding.make_mesh(model=args.model)
    params, losses = train(params, (x[rows], y[rows]), args.steps, mesh)
    leaves = _to_host(params)
    losses = np.stack([_to_host(l)[0] for l in losses])
    elapsed = time.perf_counter() - t0
    endpoints = tcp_endpoints()
    np.savez(
        args.out,
        losses=losses,
        **{f"leaf{i}": leaf for i, leaf in enumerate(leaves)},
    )
    info = {
        "process_id": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "mesh": dict(mesh.shape),
        "gloo_pinned_to_loopback": pinned,
        "tcp_endpoints": endpoints,
        "seconds": elapsed,
    }
    pathlib.Path(args.out + ".json").write_text(json.dumps(info))
    jax.distributed.shutdown()
    return 0


# -------------------------------------------------------------------------- parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def parent(args) -> int:
    tmp = tempfile.mkdtemp(prefix="jaxpareto-multihost-")
    try:
        return _run_parent(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_parent(args, tmp: str) -> int:
    port = _free_port()
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices_per_process}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    outs = [os.path.join(tmp, f"process{i}") for i in range(args.num_processes)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", "--process-id", str(i), "--port", str(port),
             "--num-processes", str(args.num_processes), "--steps", str(args.steps),
             "--dtype", args.dtype, "--model", str(args.model), "--out", outs[i]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(args.num_processes)
    ]

    # The single-process reference, computed here while the children run.
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):  # CPU, like the children
        params, batch = _problem(np.dtype(args.dtype))
        ref_params, ref_losses = train(params, batch, args.steps)
    ref_leaves = [np.asarray(l) for l in jax.tree_util.tree_leaves(ref_params)]
    ref_losses = np.stack([np.asarray(l) for l in ref_losses])

    logs, codes = [], []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            for p in procs:  # only the children started above
                p.kill()
            out, _ = proc.communicate()
        logs.append(out)
        codes.append(proc.returncode)
    wall = time.perf_counter() - t0
    if any(codes):
        for i, (code, log) in enumerate(zip(codes, logs)):
            print(f"--- process {i} exited with {code}:\n{log[-4000:]}", file=sys.stderr)
        return 1

    results = [dict(np.load(o + ".npz")) for o in outs]
    infos = [json.loads(pathlib.Path(o + ".json").read_text()) for o in outs]
    leaves = [[r[f"leaf{i}"] for i in range(len(ref_leaves))] for r in results]

    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                   for x, y in zip(a, b))

    between = max(max_diff(leaves[0], other) for other in leaves[1:])
    bitwise = all(np.array_equal(x, y) for other in leaves[1:] for x, y in zip(leaves[0], other))
    vs_single = max(max_diff(ref_leaves, l) for l in leaves)
    losses_vs_single = max(float(np.max(np.abs(r["losses"] - ref_losses))) for r in results)
    foreign = [e for info in infos for pair in info["tcp_endpoints"] for e in pair
               if e and not _is_loopback(e)]
    tol = 1e-12 if args.dtype == "float64" else 1e-6
    summary = {
        "num_processes": args.num_processes,
        "devices_per_process": args.devices_per_process,
        "global_devices": infos[0]["devices"],
        "mesh": infos[0]["mesh"],
        "steps": args.steps,
        "dtype": args.dtype,
        "bitwise_identical_across_processes": bitwise,
        "max_diff_between_processes": between,
        "max_diff_vs_single_process": vs_single,
        "max_loss_diff_vs_single_process": losses_vs_single,
        "tolerance": tol,
        "final_losses": ref_losses[-1].tolist(),
        "first_losses": ref_losses[0].tolist(),
        "gloo_pinned_to_loopback": all(i["gloo_pinned_to_loopback"] for i in infos),
        "tcp_sockets_checked": sum(len(i["tcp_endpoints"]) for i in infos),
        "non_loopback_endpoints": foreign,
        "child_seconds": [i["seconds"] for i in infos],
        "wall_seconds": wall,
    }
    ok = bitwise and vs_single <= tol and losses_vs_single <= tol and not foreign
    summary["ok"] = ok
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:38s} {value}")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--devices-per-process", type=int, default=4)
    ap.add_argument("--model", type=int, default=1, help="size of the mesh's model axis")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.num_processes < 1 or GLOBAL_BATCH % args.num_processes:
        ap.error(f"--num-processes must divide the global batch {GLOBAL_BATCH}")
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
