"""Results table of ``benchmarks/README.md`` from ``benchmarks/results/*.json``.

Known result files (``epo_lp``, ``min_norm``, ``train_step``, ``scaling``) get their own
tables with the ratios measured in the same run, and a "targets" list states which of
the issue's targets are met. Any other results JSON (other scripts, older runs such as
``step_time_h100.json``) is tabulated generically: its ``rows`` (or the first list of
dicts it holds) become a table of their scalar fields, nested dicts flattened one level.
Quick (smoke) results, ``*_quick.json``, are skipped.

The generated text replaces what lies between ``<!-- results:begin -->`` and
``<!-- results:end -->`` in the README (appended if the markers are missing).

Run: ``python -m benchmarks.report [--results DIR] [--readme PATH] [--no-readme]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from benchmarks.timing import RESULTS, fmt_ratio, fmt_time

README = pathlib.Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SPECIAL = ("epo_lp", "min_norm", "train_step", "scaling", "solver_scaling", "run_all")


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _num(x) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def _machine_line(d) -> str:
    m = d.get("machine", {})
    v = m.get("versions", {})
    threads = m.get("threads", {})
    cores = threads.get("process_cores", m.get("usable_cores", m.get("cpu_count")))
    return (f"*{m.get('cpu_model') or m.get('device_kind', '?')}, backend {m.get('backend', '?')}"
            f" ({m.get('device_kind', '')}), {cores} core(s) used of {m.get('cpu_count')};"
            f" jax {v.get('jax', m.get('jax'))}, torch {v.get('torch', '?')},"
            f" torchjd {v.get('torchjd', '?')}, cvxpy {v.get('cvxpy', '?')}"
            + (f" (solver: {d['peers']['cvxpy_solver']})" if "cvxpy_solver" in d.get("peers", {}) else "")
            + f", repeats {d.get('repeats')}.*")


# ----------------------------------------------------------------- known benchmarks


def epo_section(d) -> str:
    head = ["m", "jp f64", "jp f32", "jp vmap/pref", "cvxpy re-solve", "cvxpy build+solve",
            "HiGHS", "cvxpy re-solve ÷ jp", "cvxpy build ÷ jp", "HiGHS ÷ jp", "jp ÷ jit floor",
            "max obj. gap (jp64 / jp32 / cvxpy)"]
    rows = []
    for r in d["rows"]:
        t, q = r["time_s"], r["ratio"]
        gaps = " / ".join(_num(r.get(k)) for k in ("gap_jp64", "gap_jp32", "gap_cvxpy"))
        rows.append([r["m"], fmt_time(t.get("jp64")), fmt_time(t.get("jp32")),
                     fmt_time(t.get("jp_batch64_per_pref")), fmt_time(t.get("cvxpy_resolve")),
                     fmt_time(t.get("cvxpy_build_solve")), fmt_time(t.get("highs")),
                     fmt_ratio(q.get("cvxpy_resolve/jp64")), fmt_ratio(q.get("cvxpy_build_solve/jp64")),
                     fmt_ratio(q.get("highs/jp64")), fmt_ratio(q.get("jp64/jit_floor")), gaps])
    return ("### EPO LP (eq. 24), per call\n\n" + _machine_line(d) + "\n\n" + _table(head, rows)
            + "\n\nGap: `|obj − obj_HiGHS| / max_j |c_j|` over all instances of that m.")


def min_norm_section(d) -> str:
    cols = ["jp64", "jp32", "jp_fw64", "np_fw", "np_pgd", "torchjd", "quadprog"]
    head = ["m"] + cols + [f"KKT {c}" for c in cols]
    rows = []
    for r in d["rows"]:
        rows.append([r["m"]] + [fmt_time(r["time_s"].get(c)) for c in cols]
                    + [_num(r["kkt_max"].get(c)) for c in cols])
    return ("### Min-norm (MGDA) solve, per call\n\n" + _machine_line(d) + "\n\n"
            + _table(head, rows) + "\n\nKKT: worst scale-free KKT residual over the instances.")


def solver_scaling_section(d) -> str:
    rows = d["rows"]
    names = [n for n in rows[0]["time_s"]]
    head = ["m", "dtype"] + names + ["min_norm warm"]
    body = []
    for r in rows:
        warm = r["warm_time_s"].get("min_norm")
        body.append([r["m"], r["dtype"]]
                    + [f"{fmt_time(r['time_s'][n])} / {_num(r['residual'][n])}" for n in names]
                    + [fmt_time(warm) if isinstance(warm, float) else "n/a"])
    over = [[f"m={o['m']} {o['dtype']}"] + [fmt_ratio(o["ratio"][n]) for n in o["ratio"]]
            for o in d.get("overhead", [])]
    text = ("### Weight solvers, m = 2 … 256 (per call, jitted)\n\n" + _machine_line(d) + "\n\n"
            + "Cell: median time / worst residual over the instances (scale-free KKT for MGDA, "
            "worst conflict cosine for UPGrad/DualProj/EPO; `nan`: none defined). Gramians "
            "with per-task norms spanning 1e8.\n\n" + _table(head, body))
    if over:
        keys = list(d["overhead"][0]["ratio"])
        text += ("\n\nTime ÷ an empty jitted call with the same argument:\n\n"
                 + _table(["case"] + keys, over))
    return text


def train_section(d) -> str:
    out = ["### Training step (float32, Adam)\n", _machine_line(d), ""]
    head = ["model", "m", "n", "jp summed", "jp Jacobian", "jp LS", "jp MGDA", "jp EPO",
            "jp UPGrad", "jp MGDA-UB", "jp FAMO", "jp UW", "jp DWA", "torch summed", "TorchJD MGDA", "TorchJD UPGrad",
            "TorchJD autogram MGDA", "TorchJD autogram UPGrad", "TorchJD mtl MGDA",
            "TorchJD mtl UPGrad", "torch EPO ref", "torch MGDA-UB ref"]
    keys = ["jp_summed", "jp_jacobian", "jp_linear", "jp_mgda", "jp_epo", "jp_upgrad",
            "jp_mgda_ub", "jp_famo", "jp_uw", "jp_dwa", "torch_summed", "torchjd_mgda",
            "torchjd_upgrad",
            "torchjd_autogram_mgda", "torchjd_autogram_upgrad", "torchjd_mtl_mgda",
            "torchjd_mtl_upgrad", "torch_epo_ref", "torch_mgda_ub_ref"]
    rows = [[r["model"], r["num_tasks"], r["num_params"]] + [fmt_time(r["time_s"].get(k)) for k in keys]
            for r in d["rows"]]
    out.append(_table(head, rows))
    out.append("\nRatios (same run):\n")
    rkeys = list(d["rows"][0]["ratio"]) if d["rows"] else []
    out.append(_table(["model", "m"] + [k.replace("jp_", "") for k in rkeys],
                      [[r["model"], r["num_tasks"]] + [fmt_ratio(r["ratio"].get(k)) for k in rkeys]
                       for r in d["rows"]]))
    out.append("\nProfile of the jaxpareto Jacobian steps (each part jitted on its own):\n")
    pkeys = list(d["rows"][0].get("profile_s", {})) if d["rows"] else []
    out.append(_table(["model", "m"] + pkeys,
                      [[r["model"], r["num_tasks"]] + [fmt_time(r["profile_s"].get(k)) for k in pkeys]
                       for r in d["rows"]]))
    checks = [f"{r['model']} m={r['num_tasks']}: {r['check']}" for r in d["rows"] if "check" in r]
    if checks:
        out.append("\nSame model on both sides (losses / Gramian relative differences at init): "
                   + "; ".join(checks))
    return "\n".join(out)


def scaling_section(d) -> str:
    out = ["### Scaling (jaxpareto step, float32, Adam)\n", _machine_line(d), ""]
    for key, label in (("m_sweep", "m"), ("n_sweep", "n")):
        rows = d.get(key, [])
        if not rows:
            continue
        names = ["summed", "jacobian", "mgda", "epo", "mgda_chunked"]
        head = ["m", "n"] + names + [f"XLA MiB {k}" for k in ("summed", "mgda", "mgda_chunked")] + [
            "peak RSS MiB mgda", "mgda ÷ Jacobian", "Jacobian ÷ summed",
            "Jacobian ÷ (1 + 2m)/3 summed"]
        table = []
        for r in rows:
            x = r["xla_bytes"]
            table.append([r["m"], r["n"]] + [fmt_time(r["time_s"].get(k, "–")) for k in names]
                         + [f"{x[k] / 2**20:.1f}" if x.get(k) else "–" for k in ("summed", "mgda", "mgda_chunked")]
                         + [f"{r['peak_rss_bytes'].get('mgda', 0) / 2**20:.0f}"
                            if r["peak_rss_bytes"].get("mgda") else "–",
                            fmt_ratio(r["ratio"].get("mgda/jacobian")),
                            fmt_ratio(r["ratio"].get("jacobian/summed")),
                            fmt_ratio(r["ratio"].get("jacobian/vjp_limit"))])
        out.append(f"Sweep over {label}:\n\n" + _table(head, table) + "\n")
    if d.get("png"):
        out.append(f"![scaling](results/{d['png']})")
    return "\n".join(out)


# ----------------------------------------------------------------- targets


def targets(data) -> str:
    lines = ["### Targets of the issue\n"]

    def verdict(ok):
        return "**met**" if ok else "**missed**"

    epo = data.get("epo_lp")
    if epo:
        row = next((r for r in epo["rows"] if r["m"] == 10), None)
        if row:
            q = row["ratio"]
            for key, goal, label in (("cvxpy_build_solve/jp64", 100, "cvxpy reference (build+solve)"),
                                     ("cvxpy_resolve/jp64", 100, "cvxpy reference (re-solve with Parameters)"),
                                     ("highs/jp64", 10, "HiGHS")):
                v = q.get(key)
                if isinstance(v, (int, float)):
                    lines.append(f"- EPO LP at m=10 ≥ {goal}× faster than {label}: "
                                 f"{fmt_ratio(v)} — {verdict(v >= goal)}")
                else:
                    lines.append(f"- EPO LP at m=10 vs {label}: peer not installed")
    solvers = data.get("solver_scaling")
    if solvers:
        for r in solvers["rows"]:
            if r["m"] != 128:
                continue
            t = r["time_s"]
            for mine, peer_key in (("min_norm", "torchjd_mgda"), ("upgrad", "torchjd_upgrad")):
                if isinstance(t.get(peer_key), float):
                    v = t[peer_key] / t[mine]
                    res = r["residual"]
                    lines.append(f"- {mine} at m=128 {r['dtype']} ≥ 2× faster than TorchJD "
                                 f"({peer_key}): {fmt_ratio(v)} — {verdict(v >= 2)} (worst "
                                 f"residual: ours {_num(res[mine])}, TorchJD's "
                                 f"{_num(res[peer_key])})")
        for o in solvers.get("overhead", []):
            worst = max(o["ratio"].items(), key=lambda kv: kv[1])
            lines.append(f"- solvers at m={o['m']} {o['dtype']} ≤ 3× an empty jitted call: "
                         f"worst {worst[0]} {fmt_ratio(worst[1])} — {verdict(worst[1] <= 3)}")
    train = data.get("train_step")
    if train:
        for r in train["rows"]:
            q, t = r["ratio"], r["time_s"]
            tag = f"{r['model']} m={r['num_tasks']}"
            worst = max((q[k], k) for k in ("jp_linear/jp_jacobian", "jp_mgda/jp_jacobian",
                                            "jp_epo/jp_jacobian", "jp_upgrad/jp_jacobian")
                        if isinstance(q.get(k), float))
            lines.append(f"- {tag}: step ÷ Jacobian ≤ 1.05: worst {worst[1].split('/')[0]} "
                         f"{fmt_ratio(worst[0])} — {verdict(worst[0] <= 1.05)}")
            v = q.get("jp_mgda_ub/jp_summed")
            goal = 1.1 if r["num_tasks"] <= 2 else 1.2
            lines.append(f"- {tag}: MGDA-UB step ≤ {goal}× summed-loss step: {fmt_ratio(v)} — "
                         f"{verdict(isinstance(v, float) and v <= goal)}")
            loss_based = {k.split("/")[0][3:]: v for k, v in q.items()
                          if k in ("jp_famo/jp_summed", "jp_uw/jp_summed", "jp_dwa/jp_summed")
                          and isinstance(v, float)}
            if loss_based:
                worst = max(loss_based.values())
                lines.append(f"- {tag}: loss-based step ≤ 1.05× summed-loss step: "
                             + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in loss_based.items())
                             + f" — {verdict(worst <= 1.05)}")
            v = q.get("jp_jacobian/vjp_limit")
            if isinstance(v, float):
                lines.append(f"- {tag}: Jacobian ≤ 1.15× the VJP-count limit (1 + 2m)/3 × summed: "
                             f"{fmt_ratio(v)} — {verdict(v <= 1.15)}")
            for peer_key, mine, goal in (("torchjd_mgda", "jp_mgda", 1.5), ("torchjd_upgrad", "jp_upgrad", 1.5)):
                v = q.get(f"{peer_key}/{mine}")
                if isinstance(v, float):
                    g = 1.0 if r["model"] == "lenet" else goal
                    lines.append(f"- {tag}: {mine[3:]} ≥ {g}× faster than TorchJD backward + "
                                 f"jac_to_grad: {fmt_ratio(v)} — {verdict(v >= g)}")
            pairs = [(k, v) for k, v in q.items() if k.startswith("torchjd") and isinstance(v, float)]
            if pairs:
                slow = [k for k, v in pairs if v < 1]
                lines.append(f"- {tag}: faster than TorchJD on the same step: "
                             + ", ".join(f"{k} {fmt_ratio(v)}" for k, v in pairs)
                             + f" — {verdict(not slow)}" + (f" (slower: {slow})" if slow else ""))
            elif any(isinstance(t.get(k), str) for k in t if k.startswith("torchjd")):
                lines.append(f"- {tag}: TorchJD not installed")
    return "\n".join(lines)


# ----------------------------------------------------------------- generic


def _flatten(row: dict) -> dict:
    flat = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)):
                    flat[f"{k}.{k2}"] = v2
        elif not isinstance(v, list):
            flat[k] = v
    return flat


def generic_section(name, d) -> str:
    rows = d.get("rows")
    if not isinstance(rows, list):
        rows = next((v for v in d.values() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
    head = f"### {name}\n\n" + (_machine_line(d) + "\n\n" if "machine" in d else "")
    if d.get("description"):
        head += d["description"] + "\n\n"
    if not rows:
        scalars = {k: v for k, v in d.items() if not isinstance(v, (dict, list))}
        return head + _table(["field", "value"], [[k, _num(v)] for k, v in scalars.items()])
    flat = [_flatten(r) for r in rows if isinstance(r, dict)]
    cols = list(dict.fromkeys(k for r in flat for k in r))

    def cell(k, v):
        if isinstance(v, float) and (k.endswith("_s") or k.startswith("time_s.")
                                     or k in ("summed", "jacobian", "linear", "mgda", "epo", "mgda_ub")):
            return fmt_time(v)
        return _num(v)

    return head + _table(cols, [[cell(k, r.get(k, "")) for k in cols] for r in flat])


def build(results_dir: pathlib.Path, include_quick: bool = False) -> str:
    data = {}
    for path in sorted(results_dir.glob("*.json")):
        quick = path.stem.endswith("_quick")
        if quick and not include_quick:
            continue
        try:
            data[path.stem[: -len("_quick")] if quick else path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    parts = []
    makers = {"epo_lp": epo_section, "min_norm": min_norm_section, "train_step": train_section,
              "scaling": scaling_section, "solver_scaling": solver_scaling_section}
    for name, maker in makers.items():
        if name in data:
            try:
                parts.append(maker(data[name]))
            except (KeyError, TypeError, ValueError) as err:  # an older format: show it generically
                parts.append(generic_section(name, data[name]) + f"\n\n(format: {err!r})")
    if any(k in data for k in ("epo_lp", "train_step", "solver_scaling")):
        parts.insert(0, targets(data))
    for name, d in data.items():
        if name in SPECIAL:
            continue
        parts.append(generic_section(name, d))
    if "run_all" in data:
        runs = data["run_all"].get("runs", [])
        parts.append("### `make bench` run\n\n" + _table(
            ["script", "exit", "wall"], [[r["script"], r["returncode"], fmt_time(r["wall_s"])] for r in runs])
            + f"\n\nTotal: {fmt_time(data['run_all'].get('total_wall_s'))}.")
    return "\n\n".join(parts) + "\n"


def update_readme(text: str, readme: pathlib.Path) -> None:
    old = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    readme.write_text(new)


def main(argv=None):
    parser = argparse.ArgumentParser(description="regenerate the results table")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--readme", default=str(README))
    parser.add_argument("--no-readme", action="store_true", help="print only")
    parser.add_argument("--include-quick", action="store_true", help="also *_quick.json")
    args = parser.parse_args(argv)
    text = build(pathlib.Path(args.results), args.include_quick)
    if args.no_readme:
        print(text)
    else:
        update_readme(text, pathlib.Path(args.readme))
        print(f"updated {args.readme}")
    return text


if __name__ == "__main__":
    main()
