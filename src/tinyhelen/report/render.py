"""Rendering of the report card (``reports/README.md``): every table is a pandas DataFrame written with
``to_markdown`` (``tinyhelen.tables``); each experiment's section is its ``tinyhelen.<experiment>.tables.card``,
rendered from its typed result with the same DataFrames as its ``reports/<experiment>.md``); links are relative
to ``reports/``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tinyhelen.report.claims import Claim
from tinyhelen.report.provenance import LLM_INPUTS, PIPELINE_CHECK, UNVERIFIED, llm_marks, provenance_line
from tinyhelen.entropy import tables as entropy_tables
from tinyhelen.exp1 import tables as exp1_tables
from tinyhelen.exp2 import tables as exp2_tables
from tinyhelen.exp3 import tables as exp3_tables
from tinyhelen.tables import f, table
from tinyhelen.report.verdicts import VERDICTS

FIGURES_DIR = "figures"  # inside the reports directory


# ------------------------------------------------------------------------------------ sections
def md_claims(claims: list[Claim]) -> list[str]:
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    df = pd.DataFrame([{"experiment": c.experiment, "claim (study)": c.claim,
                        "our measurement": c.measured + "".join(f" **[{m}]**" for m in c.marks),
                        "verdict": f"**{c.verdict}**" + (f" {c.scale}" if c.scale else ""), "why": c.why}
                       for c in claims])
    return ["Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), ""] + table(df)


def md_protocol(rows: list[Any]) -> list[str]:
    diff = [r for r in rows if r.differs]
    same = [f"{r.experiment} {r.knob}" for r in rows if not r.differs]
    out = ["Every knob of `tinyhelen.report.protocol` where this run differs from the study (params in effect, "
           "resolved with defaults, and the typed results); why: data absent, compute, or choice.", ""]
    if diff:
        out += table(pd.DataFrame([{"experiment": r.experiment, "knob": r.knob, "study": r.study, "ours": r.ours,
                                    "why": f"{r.reason}: {r.why}"} for r in diff]))
    else:
        out += ["None: every declared knob follows the study.", ""]
    if same:
        out += [f"Following the study ({len(same)}): " + ", ".join(same) + ".", ""]
    return out


def llm_inputs(experiment: str, llm: dict[str, Any]) -> list[str]:
    """The provenance of the LLM outputs an experiment's figures rest on, as one line."""
    parts = [f"`{s}`: {provenance_line(llm[s])}" for s in LLM_INPUTS[experiment] if llm.get(s)]
    return ["LLM inputs: " + "; ".join(parts) + ".", ""] if parts else []


def md_inputs(ctx: dict[str, Any]) -> list[str]:
    prep, llm = ctx["prepare"], ctx["llm"]
    rows = []
    if prep is None:
        rows.append({"input": "`reports/prepare.json`", "what": ctx["problems"].get("prepare", "not run"),
                     "feeds": "everything"})
    else:
        check = (f"{prep.checksums_verified} files checksum-verified" if prep.verified else
                 f"**{UNVERIFIED}**: no file checksum-verified (no MANIFEST.sha256 in the data directory)")
        rows.append({"input": "`reports/prepare.json`", "what": f"source `{prep.source}`; {check}",
                     "feeds": "everything"})
    for stage in ("simplify", "leaner_glue", "leaner_eval", "judge"):
        feeds = ", ".join(e for e, stages in LLM_INPUTS.items() if stage in stages)
        files = llm.get(stage)
        rows.append({"input": f"`{stage}`", "what": provenance_line(files) if files else "not run",
                     "feeds": feeds})
    return table(pd.DataFrame(rows))


def md_timings(lock: dict[str, Any], tim: dict[str, dict[str, Any]]) -> list[str]:
    names = list(lock) + [s for s in tim if s not in lock]
    if not names:
        return ["No dvc.lock and no timings yet.", ""]
    rows = []
    for s in names:
        t = tim.get(s, {})
        perf = t.get("perf") or {}
        rows.append({"stage": f"`{s}`", "wall s": f(t.get("wall_s"), ".1f") if t else "",
                     "device": t.get("device", ""), "started": t.get("started", ""),
                     "recorded figures": ", ".join(f"{k}={f(v)}" for k, v in perf.items()
                                                   if isinstance(v, (int, float)))[:160],
                     "in dvc.lock": "yes" if s in lock else "no"})
    total = sum(t["wall_s"] for t in tim.values())
    return table(pd.DataFrame(rows)) + [
        (f"Total recorded wall time: {total:,.1f} s ({total / 60:.1f} min). " if tim else "No wall times recorded "
         "yet. ") + "From `reports/timings/` (the last successful run of each stage in this workspace; wall-clock "
                    "figures are never in DVC metrics).", ""]


def figures(reports: Path, prefix: str, used: set[str]) -> list[str]:
    d = reports / FIGURES_DIR
    out = []
    for p in sorted(d.glob("*.png")) if d.is_dir() else []:
        if p.name not in used and p.stem.startswith(prefix):
            used.add(p.name)
            out += [f"![{p.stem}](figures/{p.name})", ""]
    return out


SECTIONS = (("entropy", "entropy", "Entropy and vocabulary (leaner vs original)", "entropy.md", entropy_tables.card),
            ("exp1", "EXP1", "EXP1: pretraining on leaner vs original, fine-tuning on Leaner-GLUE", "exp1.md",
             exp1_tables.card),
            ("exp2", "EXP2", "EXP2: instruction tuning, four recipes", "exp2.md", exp2_tables.card),
            ("exp3", "EXP3", "EXP3: curriculum learning with a tiny proxy", "exp3.md", exp3_tables.card))


def md_profile_runs(runs: list[dict[str, Any]]) -> list[str]:
    """The saved study-scale runs (``results/<profile>/``, written by ``python -m tinyhelen.profiles run``):
    each one's verdicts, command, wall time and hardware, with a link to its own report card."""
    if not runs:
        return []
    rows = []
    for r in runs:
        verdicts = r.get("verdicts") or {}
        hw = r.get("hardware") or {}
        rows.append({"profile": f"[{r['profile']}](../results/{r['profile']}/README.md)",
                     "verdicts": "; ".join(f"{c}: {v}" for c, v in verdicts.items()) or "none",
                     "command": f"`{r.get('command')}`", "wall time": f"{r.get('wall_seconds', 0) / 60:.0f} min",
                     "hardware": f"{hw.get('cpu')}, {hw.get('cores')} cores; GPU: {hw.get('gpu') or 'none'}"})
    return (["### Study-scale runs (saved profiles)", "",
             "The claims above are from this workspace's run. Larger runs of the same pipeline, saved with their "
             "own report cards:", ""] + table(pd.DataFrame(rows)))


def md_vs_scratch(rows: list[Any], confidence: float) -> list[str]:
    """EXP1's pretrained runs against the same architecture from random initialisation
    (``report.claims.exp1_vs_scratch``): did pretraining help by more than the interval?"""
    if not rows:
        return []
    tab = pd.DataFrame([{"arch": r.arch, "pretrained on": r.side,
                         "pretrained - scratch (mean of the study's tasks)": f(iv.effect, "+.4f") + (
                             "" if iv.lo is None else f" [{f(iv.lo, '+.4f')}, {f(iv.hi, '+.4f')}]"),
                         "fine-tuning seeds": iv.n,
                         "above scratch by more than the interval": "yes" if r.above else "no"} for r in rows
                        for iv in [r.interval]])
    both = sorted({r.arch for r in rows if r.above} - {r.arch for r in rows if not r.above})
    return ([f"Pretraining against scratch (same architecture, random initialisation; paired by fine-tuning seed, "
             f"{confidence:.0%} bootstrap interval over seeds; no interval from one seed). Architectures whose "
             f"every pretrained run is above scratch by more than the interval: "
             f"{', '.join(both) if both else 'none'}.", ""] + table(tab))


def md_scale(points: dict[str, list[Any]], href: str) -> list[str]:
    """Each claim against scale (``tinyhelen.report.scale``): the effect and interval of every run that measured
    it, by tokens per training run, and the claim's figure."""
    if not points:
        return []
    rows = [{"claim": f"`{p.claim}`", "run": p.source, "tokens per run": f(p.tokens_per_run, ".3g"),
             "effect [interval]": f(p.effect, "+.3g") + ("" if p.lo is None or p.hi is None else
                                                         f" [{f(p.lo, '+.3g')}, {f(p.hi, '+.3g')}]"),
             "seeds / n": f(p.n), "verdict": p.verdict} for ps in points.values() for p in ps]
    figs = [f"![{cid}]({href}/{cid}.png)" for cid in points]
    return (["### Each claim against scale", "",
             "The effect (> 0 supports the claim) with its interval, per run that measured it: this workspace's "
             "run and every saved profile, by tokens per training run; the star is the study's own point where "
             "it states a size. Does the effect grow, shrink or stay within noise as the scale approaches the "
             "study's?", ""] + table(pd.DataFrame(rows)) + [" ".join(figs), ""])


def render(ctx: dict[str, Any]) -> str:
    """The Markdown report card."""
    reports: Path = ctx["reports"]
    g, hw = ctx["git"], ctx["hardware"]
    used: set[str] = set()
    L = ["# TinyHelen's First Curriculum: report card", "",
         "Generated by the `report` stage from the typed results in `reports/results/`; the machine-readable "
         "verdicts are in [summary.json](summary.json). Verdict rules: [docs/report.md](../docs/report.md).", "",
         f"- **commit**: `{g.get('commit') or 'unknown'}`" + (" + uncommitted changes" if g.get("dirty") else "")
         + (f" (branch `{g['branch']}`)" if g.get("branch") else ""),
         f"- **experiment**: `{g['experiment']}` (baseline `{g.get('baseline')}`)" if g.get("experiment") else
         "- **experiment**: workspace run (`dvc repro`)",
         f"- **generated**: {ctx['generated']}",
         f"- **hardware** (report stage): {hw.get('cpu')}, {hw.get('cores')} cores; GPU: {hw.get('gpu') or 'none'}; "
         f"torch {hw.get('torch')}, transformers {hw.get('transformers')}, dvc {hw.get('dvc')}, "
         f"Python {hw.get('python')}", ""]
    prep = ctx["prepare"]
    if prep is not None and not prep.verified:
        L += [f"> **{UNVERIFIED}**: `reports/prepare.json` has `checksums_verified: 0` (no MANIFEST.sha256 in the "
              "data directory): no figure below rests on checksum-verified data.", ""]
    flagged = sorted({m for e in LLM_INPUTS for m in llm_marks(e, ctx["llm"])})
    if flagged:
        L += [f"> **{PIPELINE_CHECK}**: an LLM stage ran a model below the size threshold ({'; '.join(flagged)}); "
              "the figures that depend on it are marked.", ""]
    L += ["## Claims of the study and our verdicts", ""] + md_claims(ctx["claims"])
    L += md_profile_runs(ctx.get("profile_runs") or [])
    L += md_scale(ctx.get("scale") or {}, ctx.get("scale_href", "figures/scale"))
    L += ["## Protocol vs study", ""] + md_protocol(ctx["protocol"])
    for key, exp, title, md, card in SECTIONS:
        L += [f"## {title}", ""]
        res = ctx["results"].get(key)
        if res is None:
            L += [f"_Not run_: {ctx['problems'].get(key)}.", ""]
            continue
        marks = llm_marks(exp, ctx["llm"])
        L += [f"**[{m}]**" for m in marks] + ([""] if marks else [])
        L += llm_inputs(exp, ctx["llm"])
        if (reports / md).exists():
            L += [f"Full tables: [{md}]({md}).", ""]
        L += card(res)
        if key == "exp1":
            L += md_vs_scratch(ctx.get("vs_scratch") or [], ctx["cfg"].confidence)
        L += figures(reports, key, used)
    L += ["## Inputs: data and LLM stages", ""] + md_inputs(ctx)
    L += [f"- {p}" for p in ctx["input_problems"]] + ([""] if ctx["input_problems"] else [])
    L += ["## Params that differ from the defaults", ""]
    prow, pprob = ctx["params_diff"]
    L += table(pd.DataFrame([{"key": f"`{k}`", "default (section model)": f"`{_value(d)}`",
                              "params.yaml": f"`{_value(v)}`"} for k, d, v in prow])) if prow else \
        ["None: every key has its section model's default.", ""]
    L += [f"- {p}" for p in pprob] + ([""] if pprob else [])
    L += ["## Stages (dvc.lock) and wall time", ""] + md_timings(ctx["lock"], ctx["timings"])
    rest = figures(reports, "", used)
    if rest:
        L += ["## Other figures", ""] + rest
    L += ["## Reproduce / compare", "", "```bash", "dvc repro                           # everything, CPU default",
          "dvc exp run -S models.preset=paper  # an experiment at the paper preset (GPU)",
          "dvc metrics diff main --md          # what changed vs main (also: make compare BASE=main)",
          "dvc plots diff main                 # plots vs main (HTML, offline)", "```", ""]
    return "\n".join(L)


def _value(v: Any) -> str:
    return "null" if v is None else (json.dumps(v) if not isinstance(v, str) else v)
