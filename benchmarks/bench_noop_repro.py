"""Benchmark: how long a no-op `dvc repro` takes, and where DVC spends that time.

    python benchmarks/bench_noop_repro.py [--runs 10] [--json]

Run it in a workspace that is up to date (`dvc status` says so; the script checks and stops otherwise).
It prints, all wall-clock on this machine:
  1. `dvc repro` (every stage up to date) over --runs runs: min / median / max;
  2. `dvc repro code` (DVC's start, reading dvc.yaml and dvc.lock, one stage): the fixed part;
  3. what DVC does once per stage that declares params: parse the whole params.yaml and look each declared
     key up with dpath (a walk over the whole document per key), timed here in-process the same way;
  4. whether ruamel.yaml parses with its C extension (ruamel.yaml.clib, pinned in requirements.txt): without
     it every YAML parse in DVC is about 5x slower and a no-op takes about twice as long.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def summary(xs: list[float]) -> dict:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def params_cost(repeat: int) -> dict:
    """Time DVC's per-stage params work in-process: one parse of params.yaml per stage, one dpath walk per key."""
    import dpath
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from ruamel.yaml import YAML

    with Repo(".") as repo:
        stages = list(repo.index.stages)
        deps = [d for s in stages for d in s.deps if isinstance(d, ParamsDependency)]
    keys = [k for d in deps for k in d.params]
    text = Path("params.yaml").read_text()
    parse, lookup = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in deps:
            doc = YAML(typ="safe").load(text)
        parse.append(time.perf_counter() - t)
        t = time.perf_counter()
        for k in keys:
            dpath.get(doc, k, separator=".")
        lookup.append(time.perf_counter() - t)
    lock = Path("dvc.lock")
    t = time.perf_counter()
    YAML(typ="safe").load(lock.read_text())
    lock_parse = time.perf_counter() - t
    return {
        "stages": len(stages),
        "stages_with_params": len(deps),
        "param_keys": len(keys),
        "params_parse_s": round(min(parse), 3),
        "params_key_lookup_s": round(min(lookup), 3),
        "dvc_lock_lines": len(lock.read_text().splitlines()),
        "dvc_lock_parse_s": round(lock_parse, 3),
    }


def c_parser() -> bool:
    import ruamel.yaml.main

    return getattr(ruamel.yaml.main, "CParser", None) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = ap.parse_args()

    dvc = [str(Path(sys.executable).with_name("dvc"))]
    status = subprocess.run([*dvc, "status", "-q"], capture_output=True)
    if status.returncode != 0:
        sys.exit("the workspace is not up to date (`dvc status`): run `dvc repro` first, then this benchmark")
    wall([*dvc, "repro"])  # warm the page cache and DVC's state database
    out = {
        "c_yaml_parser": c_parser(),
        "noop_repro_s": summary([wall([*dvc, "repro"]) for _ in range(args.runs)]),
        "repro_code_s": summary([wall([*dvc, "repro", "code"]) for _ in range(max(3, args.runs // 2))]),
        **params_cost(repeat=3),
    }
    if args.json:
        print(json.dumps(out))
        return
    r, c = out["noop_repro_s"], out["repro_code_s"]
    print(f"no-op dvc repro ({out['stages']} stages, {args.runs} runs): "
          f"min {r['min']:.2f} s, median {r['median']:.2f} s, max {r['max']:.2f} s")
    print(f"dvc repro code (fixed part): median {c['median']:.2f} s "
          f"-> per stage about {(r['median'] - c['median']) / max(out['stages'] - 1, 1) * 1000:.0f} ms")
    print(f"params.yaml parsed {out['stages_with_params']}x: {out['params_parse_s']:.2f} s; "
          f"{out['param_keys']} declared keys looked up: {out['params_key_lookup_s']:.2f} s")
    print(f"dvc.lock: {out['dvc_lock_lines']} lines, {out['dvc_lock_parse_s'] * 1000:.0f} ms per parse "
          "(DVC parses it twice)")
    print(f"ruamel.yaml C parser: {'yes' if out['c_yaml_parser'] else 'NO (pip install -r requirements.txt)'}")


if __name__ == "__main__":
    main()
