"""Entry point of ``make bench``: every comparison script, one after the other, then the table.

Each known script in ``benchmarks/`` that is present runs in its own Python process
(``python -m benchmarks.NAME``, so one script's memory, threads and jit caches do not
leak into the next) with its default arguments; it writes its own
``benchmarks/results/NAME.json``. A script is given ``--quick`` / ``--out`` /
``--threads`` only if its source declares those options. The wall time and exit
status of each go to ``run_all.json``; then :mod:`benchmarks.report` regenerates the
results table in ``benchmarks/README.md``.

Run: ``python -m benchmarks.run_all [--quick] [--only NAME ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import pathlib
import os
import subprocess
import sys
import time

from benchmarks import report
from benchmarks.timing import RESULTS, write

HERE = pathlib.Path(__file__).resolve().parent
# In this order: the cheap solver benchmarks first, the long step benchmarks last.
KNOWN = ("epo_lp", "min_norm", "qp_vs_quadprog", "train_step", "scaling", "soak")


def _supports(name: str, option: str) -> bool:
    try:
        src = (HERE / f"{name}.py").read_text()
    except OSError:
        return False
    return f'"{option}"' in src or (option == "--threads" and "add_threads_arg(" in src)


def command(name: str, quick: bool, out: str | None, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.{name}"]
    if quick and _supports(name, "--quick"):
        cmd.append("--quick")
    if out and _supports(name, "--out"):
        cmd += ["--out", out]
    if threads is not None and _supports(name, "--threads"):
        cmd += ["--threads", str(threads)]
    return cmd



# XLA's CPU concurrency-optimized scheduler deadlocks on some vmapped solver programs
# (jaxlib 0.10.2; see tests/conftest.py and README "Failure behaviour").
_NO_DEADLOCK = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _env() -> dict:
    env = dict(os.environ)
    if _NO_DEADLOCK not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _NO_DEADLOCK).strip()
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description="run every benchmark, then the README table")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--only", nargs="+", default=None, help="these scripts only")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=None,
                        help="passed to the scripts that take --threads (their default: 1)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per script")
    parser.add_argument("--no-report", action="store_true", help="skip the README table")
    args = parser.parse_args(argv)
    names = [n for n in (args.only or KNOWN) if (HERE / f"{n}.py").exists()]
    missing = [n for n in (args.only or KNOWN) if n not in names]
    runs = []
    t_all = time.perf_counter()
    for name in names:
        cmd = command(name, args.quick, args.out, args.threads)
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=HERE.parent, timeout=args.timeout, env=_env()).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        runs.append({"script": name, "command": cmd[1:], "returncode": rc,
                     "wall_s": time.perf_counter() - t0})
        print(f"== {name}: exit {rc} in {runs[-1]['wall_s']:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    out_dir = pathlib.Path(args.out) if args.out else RESULTS
    write("run_all" + ("_quick" if args.quick else ""),
          {"benchmark": "run_all", "quick": args.quick, "runs": runs, "missing": missing,
           "total_wall_s": total}, out_dir)
    print(f"== all done in {total:.0f} s; not present: {missing or 'none'}")
    if not args.no_report:
        report.main(["--results", str(out_dir)]
                    + (["--no-readme", "--include-quick"] if args.quick else []))
    failed = [r["script"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"== failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
