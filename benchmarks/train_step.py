"""One training step: jaxpareto's methods vs TorchJD vs plain-PyTorch reference code.

Models (float32, the same function and the same initial weights on both sides):

* ``mlp``: shared MLP ``256 → 1024 → 768`` (ReLU) and ``m`` heads ``768 → 16 → 1``
  (≈1.07M params at m=2, 1.17M at m=10), squared error, batch 256, ``m ∈ {2, 10}``;
* ``lenet``: the Multi-MNIST LeNet of Pareto MTL / EPO search (``jp.models.lenet_*``:
  conv 9×9 1→10, pool, conv 5×5 10→20, pool, fc 500→50, heads 50→10), 36×36 uint8
  images, batch 256, m = 2.

Every step ends with an Adam update (lr 1e-3). jaxpareto (one ``jax.jit`` per step):

* ``jp_summed``: ``jax.grad`` of ``Σ_i l_i`` — one backward pass, the cheapest step;
* ``jp_jacobian``: ``jp.value_and_jacobian`` only (the m backward passes every
  Jacobian method needs, nothing else);
* ``jp_linear`` (LS on the Jacobian), ``jp_mgda``, ``jp_epo``: Jacobian → Gramian →
  weights → combine → Adam, through ``optax.chain(jp.<method>(...), optax.adam)``;
* ``jp_mgda_ub``: ``jp.mtl_value_and_grad`` with MGDA on the shared representation;
* ``jp_famo``, ``jp_uw``, ``jp_dwa``: the loss-based weightings (FAMO, uncertainty
  weighting, DWA) through ``jp.loss_vjp`` — one forward pass, the weights from the
  losses, one reverse pass — reported as ÷ ``jp_summed`` (goal ≤ 1.05).

Peers (eager PyTorch on the CPU, ``torch.set_num_threads`` = the cores XLA uses):

* ``torch_summed``: ``Σ_i l_i`` ``.backward()`` — the framework baseline;
* ``torchjd_mgda`` / ``torchjd_upgrad``: ``torchjd.autojac.backward(losses)`` then
  ``jac_to_grad(params, MGDA() / UPGrad())`` (Jacobian over all parameters);
* ``torchjd_mtl_mgda`` / ``torchjd_mtl_upgrad``: ``torchjd.autojac.mtl_backward``
  (Jacobian over the shared parameters, head gradients summed) + ``jac_to_grad``;
* ``torch_epo_ref``: the EPO search reference training step, re-written: for each
  task a forward pass and ``l_i.backward()`` collecting the flattened gradient, ``G Gᵀ``
  to numpy, the cvxpy LP (``benchmarks.epo_lp.ReferenceEpoLP``, GLPK when installed),
  then a forward/backward of ``Σ m α_i l_i``;
* ``torch_mgda_ub_ref``: the MGDA-UB reference step, re-written: the representation
  without gradient, one head backward per task for ``∇_z l_i``, the numpy
  projected-gradient min-norm solver (``benchmarks.min_norm``), then a forward/backward
  of ``Σ α_i l_i``.

Ratios (same run): each jaxpareto Jacobian method ÷ ``jp_jacobian`` (the solver's
overhead; physical limit 1.0), ``jp_mgda_ub ÷ jp_summed``, and peer ÷ jaxpareto for the
matching step. A profile splits the jaxpareto steps into separately jitted parts
(Jacobian, Gramian, weights, combine, Adam) so a missed target shows where time goes.
Checks: both frameworks give the same losses and Gramian at the initial weights.

Run: ``python -m benchmarks.train_step [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxpareto as jp
from benchmarks.epo_lp import ReferenceEpoLP, reference_solver
from benchmarks.min_norm import np_projected_gradient
from benchmarks.timing import (
    NOT_INSTALLED, add_threads_arg, fmt_ratio, fmt_time, interleaved_times, median_time, peer, ratio,
    set_threads, write,
)

BATCH = 256
LR = 1e-3


# ---------------------------------------------------------------------------- problems


def mlp_problem(num_tasks: int, key, in_dim: int = 256, hidden=(1024, 768), head: int = 16,
                batch: int = BATCH):
    """Shared MLP ``in → hidden…`` and ``m`` heads ``hidden[-1] → head → 1``."""
    ks = jax.random.split(key, 8)
    sizes = (in_dim, *hidden)
    f32 = jnp.float32  # float32 whether or not x64 is on

    def normal(k, shape, fan_in):
        return jax.random.normal(k, shape, f32) / np.float32(np.sqrt(fan_in))

    params = {
        "shared": [
            {"w": normal(ks[i], (a, b), a), "b": jnp.zeros(b, f32)}
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        ],
        "heads": {
            "w1": normal(ks[4], (num_tasks, hidden[-1], head), hidden[-1]),
            "w2": normal(ks[5], (num_tasks, head), head),
        },
    }
    x = jax.random.normal(ks[6], (batch, in_dim), f32)
    y = jax.random.normal(ks[7], (batch, num_tasks), f32)

    def encode(p, b):
        h = b[0]
        for layer in p["shared"]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        return h

    def heads(p, z, b):
        hid = jax.nn.relu(jnp.einsum("bd,tdk->tbk", z, p["heads"]["w1"]))
        out = jnp.einsum("tbk,tk->tb", hid, p["heads"]["w2"])
        return jnp.mean((out - b[1].T) ** 2, axis=1)

    return params, (x, y), encode, heads


def lenet_problem(key, batch: int = BATCH):
    params = jp.models.lenet_init(key, num_tasks=2)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    images = jax.random.randint(k1, (batch, 36, 36), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(k2, (batch, 2), 0, 10)
    return params, (images, labels), jp.models.lenet_mtl_encode, jp.models.lenet_mtl_heads


# ---------------------------------------------------------------------------- jaxpareto


def jax_steps(params, batch, encode, heads, num_tasks: int):
    """Jitted steps ``(fn, state)`` of every jaxpareto method, and the profile parts."""
    adam = optax.adam(LR)

    def loss_fn(p, b):
        return heads(p, encode(p, b), b)

    def summed(p, s, b):
        g = jax.grad(lambda q: jnp.sum(loss_fn(q, b)))(p)
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    def with_transform(tx):
        def step(p, s, b):
            losses, jac = jp.value_and_jacobian(loss_fn)(p, b)
            u, s = tx.update(jac, s, p, losses=losses)
            return optax.apply_updates(p, u), s
        return step

    r = jnp.linspace(1.0, 2.0, num_tasks)
    txs = {
        "jp_linear": optax.chain(jp.linear(r), adam),
        "jp_mgda": optax.chain(jp.mgda(num_tasks=num_tasks), adam),
        "jp_epo": optax.chain(jp.epo(r), adam),
        "jp_upgrad": optax.chain(jp.aggregate(jp.weighting.upgrad(), num_tasks=num_tasks), adam),
    }
    ub_weighting = jp.weighting.mgda()
    ub_step = jp.mtl_value_and_grad(encode, heads, ub_weighting)

    def mgda_ub(p, s, b):
        adam_state, w_state = s
        (_, g), w_state = ub_step(p, b, w_state)
        u, adam_state = adam.update(g, adam_state, p)
        return optax.apply_updates(p, u), (adam_state, w_state)

    steps = {
        "jp_summed": (jax.jit(summed), adam.init(params)),
        "jp_mgda_ub": (jax.jit(mgda_ub), (adam.init(params), ub_weighting.init(num_tasks))),
    }
    for name, tx in txs.items():
        steps[name] = (jax.jit(with_transform(tx)), tx.init(params))

    def loss_based(tx):
        def step(p, s, b):
            u, s = tx.update(jp.loss_vjp(loss_fn)(p, b), s, p)
            return optax.apply_updates(p, u), s
        return step

    for name, lw in (("jp_famo", jp.famo), ("jp_uw", jp.uncertainty), ("jp_dwa", jp.dwa)):
        tx = optax.chain(lw(num_tasks), adam)
        steps[name] = (jax.jit(loss_based(tx)), tx.init(params))
    jac_fn = jax.jit(lambda p, b: jp.value_and_jacobian(loss_fn)(p, b))

    def adam_apply(g, s, p):
        u, s = adam.update(g, s, p)
        return optax.apply_updates(p, u), s

    parts = {
        "gramian": jax.jit(jp.gramian),
        "weights_mgda": jax.jit(lambda c: jp.min_norm_weights(c).weights),
        "weights_epo": jax.jit(lambda c, l: jp.epo_weights(c, l, r).weights),
        "combine": jax.jit(jp.combine),
        "adam": jax.jit(adam_apply),
    }
    return steps, jac_fn, parts, loss_fn


def profile_parts(parts, jac_fn, params, batch, repeats, with_epo=True):
    """Median time of each separately jitted part of a Jacobian-method step."""
    losses, jac = jac_fn(params, batch)
    gram = parts["gramian"](jac)
    w = parts["weights_mgda"](gram)
    grads = parts["combine"](jac, w)
    state = optax.adam(LR).init(params)
    out = {
        "gramian": median_time(lambda: parts["gramian"](jac), repeats)["median_s"],
        "weights_mgda": median_time(lambda: parts["weights_mgda"](gram), repeats)["median_s"],
        "combine": median_time(lambda: parts["combine"](jac, w), repeats)["median_s"],
        "adam": median_time(lambda: parts["adam"](grads, state, params), repeats)["median_s"],
    }
    if with_epo:
        out["weights_epo"] = median_time(lambda: parts["weights_epo"](gram, losses), repeats)["median_s"]
    return out, np.asarray(gram, np.float64), np.asarray(losses, np.float64)


# ---------------------------------------------------------------------------- torch


def torch_model(torch, kind: str, params, num_tasks: int):
    """The same function as the JAX model, with the same weights (copied).

    Every parameter lives in a leaf module that is *called* (``Affine``, ``Conv``,
    ``Heads``), so TorchJD's autogram ``Engine`` can hook each layer; ``gram_modules``
    lists them.
    """
    nn = torch.nn
    f = torch.nn.functional
    t = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731

    class Affine(nn.Module):
        def __init__(self, w, b):
            super().__init__()
            self.w, self.b = nn.Parameter(t(w)), nn.Parameter(t(b))

        def forward(self, x):
            return x @ self.w + self.b

    class Conv(nn.Module):
        def __init__(self, w, b):  # HWIO (JAX) -> OIHW (torch)
            super().__init__()
            self.w = nn.Parameter(t(np.transpose(np.asarray(w), (3, 2, 0, 1))))
            self.b = nn.Parameter(t(b))

        def forward(self, x):
            return f.conv2d(x, self.w, self.b)

    if kind == "mlp":
        class MlpHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.w1 = nn.Parameter(t(params["heads"]["w1"]))
                self.w2 = nn.Parameter(t(params["heads"]["w2"]))

            def forward(self, z):
                hid = torch.relu(torch.einsum("bd,tdk->tbk", z, self.w1))
                return torch.einsum("tbk,tk->tb", hid, self.w2)

        class Mlp(nn.Module):
            def __init__(self):
                super().__init__()
                self.shared = nn.ModuleList([Affine(l["w"], l["b"]) for l in params["shared"]])
                self.head_module = MlpHeads()

            @property
            def head_params(self):
                return [self.head_module.w1, self.head_module.w2]

            def gram_modules(self):
                return [*self.shared, self.head_module]

            def encode(self, b):
                h = b[0]
                for layer in self.shared:
                    h = torch.relu(layer(h))
                return h

            def heads(self, z, b):
                return torch.mean((self.head_module(z) - b[1].T) ** 2, dim=1)

            def heads_list(self, z, b):
                # Separate per-task graphs (TorchJD's mtl_backward differentiates each
                # task's loss w.r.t. its own parameters, one graph per task).
                w1, w2 = self.head_params
                return [torch.mean((torch.relu(z @ w1[i]) @ w2[i] - b[1][:, i]) ** 2)
                        for i in range(num_tasks)]

        return Mlp()

    class LeNetHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(t(params["heads"]["w"]))
            self.b = nn.Parameter(t(params["heads"]["b"]))

        def forward(self, z):
            return torch.einsum("bh,thc->tbc", z, self.w) + self.b[:, None, :]

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv(params["conv1"]["w"], params["conv1"]["b"])
            self.conv2 = Conv(params["conv2"]["w"], params["conv2"]["b"])
            self.fc = Affine(params["fc"]["w"], params["fc"]["b"])
            self.head_module = LeNetHeads()

        @property
        def head_params(self):
            return [self.head_module.w, self.head_module.b]

        def gram_modules(self):
            return [self.conv1, self.conv2, self.fc, self.head_module]

        def encode(self, b):
            x = b[0].float().div(255.0).unsqueeze(1)
            x = f.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = f.max_pool2d(torch.relu(self.conv2(x)), 2)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # JAX flattens NHWC
            return torch.relu(self.fc(x))

        def heads(self, z, b):
            logp = torch.log_softmax(self.head_module(z), dim=-1)
            picked = torch.gather(logp, 2, b[1].T.unsqueeze(-1)).squeeze(-1)
            return -picked.mean(dim=1)

        def heads_list(self, z, b):
            w, bias = self.head_params
            return [f.cross_entropy(z @ w[i] + bias[i], b[1][:, i]) for i in range(num_tasks)]

    return LeNet()


def torch_steps(torch, torchjd, cp, model, batch, num_tasks: int):
    """Closures performing one full step (with Adam) of every torch method available."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    params = list(model.parameters())
    head_ids = {id(p) for p in model.head_params}
    shared = [p for p in model.parameters() if id(p) not in head_ids]

    def losses_of():
        return model.heads(model.encode(batch), batch)

    def summed():
        opt.zero_grad()
        losses_of().sum().backward()
        opt.step()

    steps = {"torch_summed": summed}
    if torchjd is not None:
        from torchjd.aggregation import MGDA, UPGrad
        from torchjd.autojac import backward, jac_to_grad, mtl_backward

        def jd(aggregator):
            def step():
                opt.zero_grad()
                backward(losses_of())
                jac_to_grad(params, aggregator)
                opt.step()
            return step

        def jd_mtl(aggregator):
            def step():
                opt.zero_grad()
                z = model.encode(batch)
                mtl_backward(model.heads_list(z, batch), features=z)
                jac_to_grad(shared, aggregator)
                opt.step()
            return step

        steps.update(torchjd_mgda=jd(MGDA()), torchjd_mtl_mgda=jd_mtl(MGDA()))
        try:  # UPGrad needs the optional qpsolvers (torchjd[quadprog_projector])
            steps.update(torchjd_upgrad=jd(UPGrad()), torchjd_mtl_upgrad=jd_mtl(UPGrad()))
        except ImportError:
            pass
        # autogram: the Gramian layer by layer from hooks, weights, one backward(w).
        from torchjd.aggregation import MGDAWeighting, UPGradWeighting
        from torchjd.autogram import Engine

        # A copy of the model of its own: the engine hooks every forward pass of its
        # modules, and the other methods' passes (some without a backward) must not
        # reach it.
        ag_model = copy.deepcopy(model)
        ag_opt = torch.optim.Adam(ag_model.parameters(), lr=LR)
        engine = Engine(*ag_model.gram_modules(), batch_dim=None)

        def autogram(weighting):
            def step():
                ag_opt.zero_grad()
                losses = ag_model.heads(ag_model.encode(batch), batch)
                losses.backward(weighting(engine.compute_gramian(losses)))
                ag_opt.step()
            return step

        steps["torchjd_autogram_mgda"] = autogram(MGDAWeighting())
        try:
            steps["torchjd_autogram_upgrad"] = autogram(UPGradWeighting())
        except ImportError:
            pass

    r = np.linspace(1.0, 2.0, num_tasks)

    def per_task_gradients():
        rows, values = [], []
        for i in range(num_tasks):
            opt.zero_grad()
            losses = losses_of()
            values.append(float(losses[i].detach()))
            losses[i].backward()
            rows.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
        return torch.stack(rows), np.array(values)

    if cp is not None:
        lp = ReferenceEpoLP(cp, num_tasks, reference_solver(cp))

        def epo_ref():
            g, values = per_task_gradients()
            gg = (g @ g.T).numpy().astype(np.float64)
            try:
                alpha, _ = lp.solve(gg, values, r)
            except Exception:  # noqa: BLE001 - the reference's "patch": α = r / Σ r
                alpha = None
            if alpha is None:
                alpha = r / r.sum()
            alpha = torch.as_tensor(num_tasks * alpha, dtype=torch.float32)
            opt.zero_grad()
            (losses_of() * alpha).sum().backward()
            opt.step()

        steps["torch_epo_ref"] = epo_ref

    def mgda_ub_ref():
        with torch.no_grad():
            rep = model.encode(batch)
        z = rep.detach().requires_grad_(True)
        rows = []
        for i in range(num_tasks):
            opt.zero_grad()
            if z.grad is not None:
                z.grad = None
            model.heads(z, batch)[i].backward()
            rows.append(z.grad.detach().flatten().clone())
        zg = torch.stack(rows)
        alpha = np_projected_gradient((zg @ zg.T).numpy().astype(np.float64))
        opt.zero_grad()
        (losses_of() * torch.as_tensor(alpha, dtype=torch.float32)).sum().backward()
        opt.step()

    steps["torch_mgda_ub_ref"] = mgda_ub_ref
    return steps, per_task_gradients, losses_of


# ---------------------------------------------------------------------------- benchmark

LOSS_METHODS = ("jp_famo", "jp_uw", "jp_dwa")
JP_METHODS = ("jp_summed", "jp_jacobian", "jp_linear", "jp_mgda", "jp_epo", "jp_upgrad",
              "jp_mgda_ub", *LOSS_METHODS)
PEER_METHODS = ("torch_summed", "torchjd_mgda", "torchjd_upgrad", "torchjd_autogram_mgda",
                "torchjd_autogram_upgrad", "torchjd_mtl_mgda", "torchjd_mtl_upgrad",
                "torch_epo_ref", "torch_mgda_ub_ref")
# (peer, jaxpareto) pairs whose ratio is printed: peer time ÷ jaxpareto time.
PAIRS = (
    ("torch_summed", "jp_summed"),
    ("torchjd_mgda", "jp_mgda"),
    ("torchjd_upgrad", "jp_upgrad"),
    ("torchjd_autogram_mgda", "jp_mgda"),
    ("torchjd_autogram_upgrad", "jp_upgrad"),
    ("torchjd_mtl_mgda", "jp_mgda_ub"),
    ("torchjd_mtl_upgrad", "jp_mgda_ub"),
    ("torch_epo_ref", "jp_epo"),
    ("torch_mgda_ub_ref", "jp_mgda_ub"),
)


def bench_model(kind, params, batch, encode, heads, num_tasks, repeats, torch, torchjd, cp,
                quick=False):
    n = sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(params))
    row = {"model": kind, "num_tasks": num_tasks, "num_params": n,
           "batch": int(jax.tree_util.tree_leaves(batch)[0].shape[0])}
    steps, jac_fn, parts, _ = jax_steps(params, batch, encode, heads, num_tasks)
    fns = {"jp_jacobian": lambda: jac_fn(params, batch)}
    for method, (fn, state) in steps.items():
        fns[method] = lambda fn=fn, state=state: fn(params, state, batch)
    prof, gram, losses = profile_parts(parts, jac_fn, params, batch, repeats, with_epo=not quick)
    if torch is not None:
        model = torch_model(torch, kind, params, num_tasks)
        tbatch = tuple(torch.as_tensor(np.array(a)) for a in batch)
        if kind == "lenet":
            tbatch = (tbatch[0], tbatch[1].long())
        tsteps, per_task, losses_of = torch_steps(torch, torchjd, cp, model, tbatch, num_tasks)
        # Same function and weights: losses and Gramian agree at the initial weights.
        g, tl = per_task()
        tgram = (g.double() @ g.double().T).numpy()
        row["check"] = {
            "losses_max_rel_diff": float(np.max(np.abs(tl - losses) / np.abs(losses))),
            "gram_max_rel_diff": float(np.max(np.abs(tgram - gram)) / np.max(np.abs(gram))),
        }
        fns.update(tsteps)
    # Every method of this model, jaxpareto and peers, timed in interleaved rounds.
    t = {k: v["median_s"] for k, v in interleaved_times(fns, repeats).items()}
    for method in PEER_METHODS:
        t.setdefault(method, NOT_INSTALLED)
    row["time_s"] = t
    prof["jacobian"] = t["jp_jacobian"]
    prof["sum_of_parts_mgda"] = sum(prof[k] for k in ("jacobian", "gramian", "weights_mgda",
                                                      "combine", "adam"))
    row["profile_s"] = prof
    q = {f"{m}/jp_jacobian": ratio(t[m], t["jp_jacobian"])
         for m in ("jp_linear", "jp_mgda", "jp_epo", "jp_upgrad")}
    # How far the Jacobian is from the VJP-count limit: m backward passes (each ~2
    # forward passes) and one forward, against a summed step of one forward + one
    # backward, is (1 + 2m)/3 summed steps.
    q["jp_jacobian/vjp_limit"] = ratio(t["jp_jacobian"], (1 + 2 * num_tasks) / 3 * t["jp_summed"])
    q["jp_mgda_ub/jp_summed"] = ratio(t["jp_mgda_ub"], t["jp_summed"])
    q["jp_epo/jp_summed"] = ratio(t["jp_epo"], t["jp_summed"])
    for m in LOSS_METHODS:  # loss-based: no Jacobian, goal ≤ 1.05
        q[f"{m}/jp_summed"] = ratio(t[m], t["jp_summed"])
    for peer_name, mine in PAIRS:
        q[f"{peer_name}/{mine}"] = ratio(t[peer_name], t[mine])
    row["ratio"] = q
    return row


def format_rows(rows) -> str:
    lines = []
    for r in rows:
        t, q = r["time_s"], r["ratio"]
        lines.append(f"{r['model']} m={r['num_tasks']} n={r['num_params']} batch={r['batch']}")
        lines.append("  " + "  ".join(f"{k}={fmt_time(t[k])}" for k in JP_METHODS))
        lines.append("  " + "  ".join(f"{k}={fmt_time(t[k])}" for k in PEER_METHODS))
        lines.append("  overhead: " + "  ".join(
            f"{k}={fmt_ratio(q[k])}" for k in ("jp_linear/jp_jacobian", "jp_mgda/jp_jacobian",
                                               "jp_epo/jp_jacobian", "jp_upgrad/jp_jacobian",
                                               "jp_mgda_ub/jp_summed", "jp_jacobian/vjp_limit")))
        lines.append("  loss-based/summed: " + "  ".join(
            f"{k}/jp_summed={fmt_ratio(q[k + '/jp_summed'])}" for k in LOSS_METHODS))
        lines.append("  peer/jaxpareto: " + "  ".join(
            f"{p}/{m}={fmt_ratio(q[f'{p}/{m}'])}" for p, m in PAIRS))
        lines.append("  profile: " + "  ".join(f"{k}={fmt_time(v)}" for k, v in r["profile_s"].items()))
        if "check" in r:
            lines.append(f"  check: {r['check']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="training-step times vs TorchJD / PyTorch")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default=None, help="results directory")
    add_threads_arg(parser)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    # float32 steps; x64 stays as the caller set it (the models create float32 arrays).
    torch, cp = peer("torch"), peer("cvxpy")
    torchjd = peer("torchjd.autojac") if torch is not None else None
    key = jax.random.PRNGKey(0)
    repeats = args.repeats or (3 if args.quick else 20)
    rows = []
    if args.quick:
        prob = mlp_problem(2, key, in_dim=8, hidden=(16, 8), head=4, batch=16)
        rows.append(bench_model("mlp", *prob, 2, repeats, torch, torchjd, cp, quick=True))
    else:
        for m in (2, 10):
            rows.append(bench_model("mlp", *mlp_problem(m, key), m, repeats, torch, torchjd, cp))
        rows.append(bench_model("lenet", *lenet_problem(key), 2, repeats, torch, torchjd, cp))
    print(format_rows(rows))
    payload = {
        "benchmark": "train_step",
        "description": "one training step (float32, Adam): jaxpareto vs TorchJD vs PyTorch references",
        "quick": args.quick,
        "repeats": repeats,
        "threads": threads,
        "peers": {
            "torch": NOT_INSTALLED if torch is None else torch.__version__,
            "torchjd": NOT_INSTALLED if torchjd is None else _version("torchjd"),
            "cvxpy": NOT_INSTALLED if cp is None else cp.__version__,
            "cvxpy_solver": NOT_INSTALLED if cp is None else (reference_solver(cp) or "cvxpy default"),
        },
        "rows": rows,
    }
    path = write("train_step" + ("_quick" if args.quick else ""), payload, args.out)
    print(f"wrote {path}")
    return payload


def _version(name):
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    main()
