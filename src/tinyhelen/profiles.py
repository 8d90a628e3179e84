"""Named scales of the whole study, selected with ``dvc exp run -S profile=<name>`` (Hydra composition).

DVC composes ``params.yaml`` with Hydra before every ``dvc exp run`` (``hydra.enabled`` in ``.dvc/config``):

* ``conf/config.yaml``: every key with its default, rendered from the pydantic section models registered in
  ``tinyhelen.params.SECTIONS`` (the one place where defaults live; ``python -m tinyhelen.profiles render``
  rewrites the file, a test checks it is current), each key commented with its field description;
* ``conf/profile/<name>.yaml``: the keys a profile changes, nothing else (``default`` changes none).

``params.yaml`` in git is the composition of the ``default`` profile (a test checks it). ``dvc repro`` runs
whatever ``params.yaml`` holds; ``dvc exp run -S profile=cpu-study`` recomposes it first, and further
``-S key=value`` overrides apply on top (Hydra override grammar: ``-S "glue.lr=[0.0003,0.001]"``; a key
that does not exist needs ``+key=value`` and is then rejected by the params check).

    python -m tinyhelen.profiles render              # rewrite conf/config.yaml from the section models
    python -m tinyhelen.profiles compose cpu-study   # print the params.yaml a profile gives
    python -m tinyhelen.profiles check               # every profile composes and validates
    python -m tinyhelen.profiles run cpu-study       # dvc exp run -S profile=cpu-study, then save its results
    python -m tinyhelen.profiles estimate gpu-study --device h100   # steps, tokens, FLOPs, time per stage

A profile's results stay in git under ``results/<profile>/`` (``save``): its report card, summary metrics,
the experiments' metrics and figures, the params it ran with, ``runs/`` (the run files: every training run's
curve and every GLUE run's scores per epoch, from which ``python -m tinyhelen.report verify results/<profile>``
recomputes every verdict), the inputs the verdicts are qualified by (data checksums, the LLM stages'
provenance), and ``run.json`` (the exact command, wall time, hardware, commit). The main report card lists them. A run that fails or is interrupted resumes when
the same command is run again (DVC skips the stages that finished); ``run`` keeps each invocation's wall
time in ``data/profile_runs/<profile>.json`` until the run succeeds, and ``run.json`` reports their sum.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

CONF_DIR = Path("conf")
RESULTS_DIR = Path("results")
PENDING_DIR = Path("data/profile_runs")  # wall time of the invocations of a run not yet saved (not in git)
# what a saved profile run keeps (copied from the workspace after the run): report card, summary metrics,
# each experiment's metrics and tables, the typed results and the run files they are built from, the figures,
# the inputs the verdicts are qualified by (data checksums, LLM provenance), the params it ran with
SAVED = ["reports/README.md", "reports/summary.json", "reports/entropy.json", "reports/entropy.md",
         "reports/exp1.json", "reports/exp1.md", "reports/exp2.json", "reports/exp2.md", "reports/exp3.json",
         "reports/exp3.md", "reports/results", "reports/runs", "reports/figures", "reports/prepare.json",
         "reports/simplify", "reports/leaner_glue.json", "reports/leaner_eval.json", "reports/judge.json",
         "params.yaml"]
BASE_NAME = "config"
DEFAULT_PROFILE = "default"


def _section_defaults() -> list[tuple[str, Any, type]]:
    """``(section, default value, model)`` for every registered section, in registration order."""
    from tinyhelen.params import SECTIONS, model_for

    out = []
    for name in SECTIONS:
        model = model_for(name)
        dumped = model().model_dump(mode="json")
        scalar = "value" in model.model_fields and len(model.model_fields) == 1
        out.append((name, dumped["value"] if scalar else dumped, model))
    return out


def _source_comments(model: Any) -> dict[str, str]:
    """Field -> the end-of-line comment on its line in the model's source (``lr: float = 1e-3  # peak LR``):
    a field documented by a comment is rendered with it, as one documented with ``description``."""
    import inspect
    import re

    try:
        src = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s{4}(\w+)\s*:[^\n#]*?#\s*(.+)$", src, re.M):
        out.setdefault(m.group(1), m.group(2).strip())
    return out


def _commented(value: Any, model: Any):
    """ruamel nodes of ``value`` with each field's description as an end-of-line comment."""
    from pydantic import BaseModel
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        node = CommentedMap()
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        fields = getattr(model, "model_fields", {}) if is_model else {}
        comments = _source_comments(model) if is_model else {}
        for k, v in value.items():
            info = fields.get(k)
            sub = info.annotation if info is not None else None
            sub_model = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
            node[k] = _commented(v, sub_model)
            text = (info.description if info is not None else None) or comments.get(k)
            if text:
                node.yaml_add_eol_comment(" ".join(text.split()), k, column=40)
        return node
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        return seq
    return value


def render(root: Path | str = ".") -> str:
    """The text of ``conf/config.yaml``: the Hydra defaults list, then every section's defaults."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    doc = CommentedMap()
    doc["defaults"] = ["_self_", {"profile": DEFAULT_PROFILE}]
    for name, value, model in _section_defaults():
        scalar = not isinstance(value, dict)
        doc[name] = value if scalar else _commented(value, model)
        doc.yaml_set_comment_before_after_key(name, before="\n" + _first_line(model.__doc__), indent=0)
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    buf = io.StringIO()
    buf.write("# GENERATED by `python -m tinyhelen.profiles render` from the section models registered in\n"
              "# tinyhelen.params.SECTIONS (the one place where defaults live). Do not edit: change a default in\n"
              "# its model, or a profile in conf/profile/. DVC composes params.yaml from this file before every\n"
              "# `dvc exp run` (Hydra); select a scale with `dvc exp run -S profile=<name>`.\n")
    yaml.dump(doc, buf)
    return buf.getvalue()


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split()) or ""


def profiles(root: Path | str = ".") -> list[str]:
    return sorted(p.stem for p in (Path(root) / CONF_DIR / "profile").glob("*.yaml"))


def compose(profile: str = DEFAULT_PROFILE, overrides: list[str] | None = None,
            root: Path | str = ".") -> dict[str, Any]:
    """The params a profile gives (what ``dvc exp run -S profile=<profile>`` writes to params.yaml)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    conf = (Path(root) / CONF_DIR).resolve()
    with initialize_config_dir(str(conf), version_base=None):
        cfg = hydra_compose(config_name=BASE_NAME, overrides=[f"profile={profile}", *(overrides or [])])
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def dump(params: dict[str, Any]) -> str:
    """YAML exactly as DVC writes a composed params.yaml (``OmegaConf.to_yaml``)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(params))


def check(root: Path | str = ".") -> list[str]:
    """Problems: a profile that does not compose or does not validate (empty list = all good)."""
    import tempfile

    from tinyhelen.config import ParamsError
    from tinyhelen.params import validate_all

    problems = []
    for name in profiles(root):
        try:
            params = compose(name, root=root)
        except Exception as exc:  # noqa: BLE001 - Hydra raises many kinds; report them all the same
            problems.append(f"conf/profile/{name}.yaml: does not compose: {exc}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"params.{name}.yaml"
            path.write_text(dump(params))
            try:
                validate_all(path)
            except ParamsError as exc:
                problems.append(f"conf/profile/{name}.yaml:\n{exc}")
    return problems


def save(profile: str, command: str, seconds: float | list[float], root: Path | str = ".") -> Path:
    """Copy a finished run's results to ``results/<profile>/`` (replacing an earlier save, atomically) and
    write ``run.json``: profile, command, wall time, hardware, commit. Returns the directory.

    ``seconds``: the run's wall time, or one figure per invocation when it was resumed (their sum is the
    wall time; the list is kept as ``wall_seconds_by_invocation``)."""
    import shutil

    from tinyhelen.io import atomic_path, write_json
    from tinyhelen.report.provenance import git_info, hardware

    root = Path(root)
    missing = [f for f in SAVED if not (root / f).exists()]
    if "reports/README.md" in missing:
        raise FileNotFoundError("reports/README.md absent: the run did not reach the report stage")
    per_invocation = [round(s) for s in seconds] if isinstance(seconds, list) else [round(seconds)]
    timing: dict[str, Any] = {"wall_seconds": sum(per_invocation)}
    if len(per_invocation) > 1:
        timing["wall_seconds_by_invocation"] = per_invocation
    dest = root / RESULTS_DIR / profile
    with atomic_path(dest) as tmp:
        for f in SAVED:
            src = root / f
            if not src.exists():
                continue
            target = tmp / Path(f).relative_to("reports") if f.startswith("reports/") else tmp / f
            if src.is_dir():
                shutil.copytree(src, target, ignore=_not_in_lock(root) if f == "reports/runs" else None)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
        write_json(tmp / "run.json", {"profile": profile, "command": command, **timing,
                                      "hardware": hardware(), "git": git_info(root), "missing": missing})
    return dest


def _pipeline_stages(root: Path) -> set[str] | None:
    """The stage names of the pipeline as the workspace's params resolve it (``glue@llama-leaner``), or None
    without a DVC project."""
    if not (root / "dvc.yaml").exists() or not (root / ".dvc").is_dir():
        return None
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.name for s in repo.index.stages if getattr(s, "name", None)}


def _not_in_lock(root: Path):
    """A ``copytree`` filter that leaves out the run files no stage of this run wrote: files no entry of
    ``dvc.lock`` lists, and files of lock entries whose stage is not in the pipeline as the params resolve it
    (DVC keeps the entry of a matrix stage the params no longer produce, e.g. ``glue@bert-leaner`` from an
    earlier run with more architectures). Without a lock, nothing is left out."""
    from tinyhelen.report.provenance import read_lock

    lock = read_lock(root / "dvc.lock")
    stages = _pipeline_stages(root)
    outs = {Path(o["path"]) for name, st in lock.items() if stages is None or name in stages
            for o in st.get("outs", [])}

    def ignore(directory: str, names: list[str]) -> list[str]:
        if not lock:
            return []
        rel = Path(directory).resolve().relative_to(root.resolve())
        return [n for n in names if (Path(directory) / n).is_file()
                and not any(p == rel / n or p in (rel / n).parents for p in outs)]
    return ignore


def _pending(root: Path, profile: str) -> Path:
    return root / PENDING_DIR / f"{profile}.json"


def _log_invocation(root: Path, profile: str, command: str, seconds: float, rc: int) -> list[dict]:
    """Append one invocation to the profile's pending log; return the logged invocations of ``command``
    (another command, with other overrides, is another run)."""
    import json

    from tinyhelen.io import write_json

    path = _pending(root, profile)
    log = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    log.append({"command": command, "seconds": round(seconds, 1), "exit": rc})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, log)
    return [e for e in log if e["command"] == command]


def _forget(root: Path, profile: str, command: str) -> None:
    """Drop a saved run's invocations from the pending log."""
    import json

    from tinyhelen.io import write_json

    path = _pending(root, profile)
    log = [e for e in json.loads(path.read_text(encoding="utf-8")) if e["command"] != command]
    write_json(path, log) if log else path.unlink()


def run(profile: str, extra: list[str] | None = None, root: Path | str = ".") -> int:
    """``dvc exp run -S profile=<profile> [extra -S overrides]``, timed; on success the results are saved
    with the wall time of every invocation since the run started (failed or interrupted ones included)."""
    import shlex
    import subprocess
    import time

    root = Path(root)
    if profile not in profiles(root):
        raise SystemExit(f"unknown profile {profile!r}; conf/profile/ has: {', '.join(profiles(root))}")
    cmd = ["dvc", "exp", "run", "-S", f"profile={profile}", *[a for o in extra or [] for a in ("-S", o)]]
    command = shlex.join(cmd)
    t0, rc = time.time(), 130  # 130: interrupted (Ctrl-C) before dvc returned
    try:
        rc = subprocess.call(cmd, cwd=root)
    finally:
        log = _log_invocation(root, profile, command, time.time() - t0, rc)
    if rc != 0:
        print(f"{command} failed (exit {rc}); rerun the same command to resume (its wall time so far is kept)",
              file=sys.stderr)
        return rc
    dest = save(profile, command, [e["seconds"] for e in log], root)
    _forget(root, profile, command)
    print(f"{profile}: results saved in {dest}/ (commit them to keep them)")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from tinyhelen import estimate

    params = compose(args.profile, args.set)
    bad = [kv for kv in args.step_latency if kv.partition("=")[0] not in estimate.KINDS or "=" not in kv]
    if bad:
        raise SystemExit(f"--step-latency {bad[0]}: give KIND=SECONDS with KIND one of {', '.join(estimate.KINDS)}")
    latency = {k: float(v) for k, _, v in (kv.partition("=") for kv in args.step_latency)}
    found = [Path(d) for d in (args.glue_dir, "data/leaner/glue", Path(params["data"]["local_dir"]) / "leaner/glue")
             if d is not None and Path(d).is_dir()]
    knobs = {k: v for k, v in (("mfu", args.mfu), ("floor", args.step_floor)) if v is not None}
    print(estimate.report(args.profile, params, args.device.lower(), glue_dir=found[0] if found else None,
                          latency=latency, **knobs))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinyhelen.profiles", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("render", help="rewrite conf/config.yaml from the section models")
    c = sub.add_parser("compose", help="print the params.yaml a profile gives")
    c.add_argument("profile", nargs="?", default=DEFAULT_PROFILE)
    sub.add_parser("check", help="every profile composes and validates")
    r = sub.add_parser("run", help="dvc exp run -S profile=<name>, then save its results to results/<name>/")
    r.add_argument("profile")
    r.add_argument("-S", "--set", action="append", default=[], help="a further override, as for dvc exp run -S")
    e = sub.add_parser("estimate", help="optimiser steps, tokens, FLOPs and expected time of the training stages "
                                        "on a device (tinyhelen.estimate)")
    e.add_argument("profile")
    e.add_argument("--device", default="cpu", help="cpu (measured FLOP rates) or a GPU: h100, a100, ... (estimate)")
    e.add_argument("--mfu", type=float, default=None, help="GPU: assumed model FLOPs utilisation")
    e.add_argument("--step-floor", type=float, default=None, help="GPU: assumed least seconds per optimiser step")
    e.add_argument("--step-latency", action="append", default=[], metavar="KIND=SECONDS",
                   help="a measured seconds per optimiser step of a stage kind (pretrain, glue, instruct_tune, "
                        "exp3_reference_lm, exp3_train, exp3_glue), e.g. from benchmarks/bench_train.py on the device")
    e.add_argument("--glue-dir", help="Leaner-GLUE files (default: data/leaner/glue, else "
                                      "<data.local_dir>/leaner/glue)")
    e.add_argument("-S", "--set", action="append", default=[], help="a further override, as for dvc exp run -S")
    args = p.parse_args(argv)
    if args.cmd == "run":
        return run(args.profile, args.set)
    if args.cmd == "estimate":
        return _estimate(args)
    if args.cmd == "render":
        from tinyhelen.io import atomic_open

        with atomic_open(CONF_DIR / f"{BASE_NAME}.yaml") as fh:
            fh.write(render())
        print(f"{CONF_DIR / BASE_NAME}.yaml rewritten")
        return 0
    if args.cmd == "compose":
        sys.stdout.write(dump(compose(args.profile)))
        return 0
    problems = check()
    for prob in problems:
        print(prob, file=sys.stderr)
    print(f"{len(profiles()) - len(problems)}/{len(profiles())} profiles compose and validate")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
