"""Rendering of the report card (``reports/README.md``): every table is a pandas DataFrame written with
``to_markdown`` (tabulate); links are relative to ``reports/``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tinyhelen.report.claims import Claim
from tinyhelen.report.provenance import LLM_INPUTS, PIPELINE_CHECK, UNVERIFIED, llm_marks, provenance_line
from tinyhelen.entropy.result import EntropyResult
from tinyhelen.exp1.result import Exp1Result
from tinyhelen.exp2.result import Exp2Result
from tinyhelen.exp3.result import Exp3Result
from tinyhelen.report.verdicts import VERDICTS

FIGURES_DIR = "figures"  # inside the reports directory


def f(v: Any, fmt: str = ".4g") -> str:
    """A figure as the card writes it: thousands separators for counts, ``n/a`` for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or abs(v) >= 1000 or (float(v).is_integer() and abs(v) >= 100):
        return f"{v:,.0f}"
    return format(v, fmt)


def table(df: pd.DataFrame, index: bool = False) -> list[str]:
    """A DataFrame as Markdown lines; cells are written as given (no number re-parsing)."""
    df = df.map(lambda c: str(c).replace("|", "\\|").replace("\n", " "))
    return [df.to_markdown(index=index, disable_numparse=True), ""]


def _mean_sd(xs: pd.Series, fmt: str = ".4g") -> str:
    xs = xs.dropna()
    if xs.empty:
        return "not reached"
    return f(float(xs.mean()), fmt) + (f" ± {f(float(xs.std()), '.3g')}" if len(xs) > 1 else "")


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


def md_entropy(ent: EntropyResult) -> list[str]:
    settings = list(ent.settings)
    rows: list[tuple[str, Any]] = [("word tokens", lambda s: s.tokens), ("vocabulary (word types)", lambda s: s.vocab),
                                   ("type/token ratio", lambda s: s.ttr),
                                   (f"top-{ent.top_k} coverage", lambda s: f"{s.top_k_coverage:.1%}"),
                                   ("mean sentence length", lambda s: s.mean_sentence_len),
                                   ("BPE tokens", lambda s: s.bpe_tokens)]
    for unit in ("word", "bpe"):
        for n in ent.orders():
            rows.append((f"{unit} H{n} (bits)", lambda s, u=unit, k=n: s.H(u, k)))
            rows.append((f"{unit} h{n} (bits/token)", lambda s, u=unit, k=n: s.H(u, k, conditional=True)))
            if any(ent.corrected(st) for st in settings):
                rows.append((f"{unit} H{n} Miller-Madow", lambda s, u=unit, k=n: s.H(u, k, corrected=True)))
    data = [{"figure": name, **{f"{side} ({st})": f(get(getattr(ent.settings[st], side)))
                                for st in settings for side in ("ori", "leaner")}} for name, get in rows]
    dropped = "".join(f" Not pooled: {g} ({why})." for g, why in ent.dropped_genres.items())
    return ([f"Pooled over {', '.join(ent.pooled_genres)}.{dropped} `equal_budget` cuts each twin pair to equal "
             "length (the claim is decided there); h_n = H_n - H_(n-1) is the conditional entropy.", ""]
            + table(pd.DataFrame(data)))


def md_exp1(e1: Exp1Result) -> list[str]:
    cells = pd.DataFrame([c.model_dump() for c in e1.cells])
    cells["cell"] = [f"{t:.3f} ± {s:.3f}" for t, s in zip(cells.test, cells["std"])]
    wide = cells.pivot(index=["arch", "init"], columns="task", values="cell")[e1.tasks]
    study = e1.study_tasks()
    means = cells[cells.task.isin(study)].groupby(["arch", "init"]).test.mean()
    wide[f"mean ({len(study)} study tasks)"] = means.map(lambda v: f"**{v:.3f}**")
    order = pd.MultiIndex.from_product([e1.archs, e1.inits], names=["arch", "init"])
    wide = wide.reindex(order).reset_index().rename(columns={"init": "pretrained on"})
    pre = pd.DataFrame([{"run": f"{r.arch}-{r.side}", "tokens": f(r.tokens_seen), "steps": f(r.steps),
                         "non-embedding params": f(r.non_embedding_params), "train loss": f(r.train_loss),
                         "val loss": f(r.val_loss)} for r in e1.pretrain])
    excluded = [t for t in e1.tasks if t not in study]
    note = f" {', '.join(excluded)}: shown, not in the mean (the study did not run it)." if excluded else ""
    return ([f"Leaner-GLUE test score (task metric; mean ± std over seeds at the best learning rate), preset "
             f"`{e1.preset}`.{note}", ""] + table(wide) + ["Pretraining runs:", ""] + table(pre))


def md_exp2(e2: Exp2Result) -> list[str]:
    out = []
    if not e2.judge_is_llm:
        out += [f"> **Proxy metrics, not LLM-judge scores** (judge backend `{e2.judge_backend}`). The EXP2 "
                "claims are *not measured* by them.", ""]

    def rows(field: str) -> list[str]:
        metrics = list(dict.fromkeys(m for r in e2.recipes for m in getattr(r, field)))
        data = []
        for r in e2.recipes:
            row = {"recipe (pretrain-tune)": r.recipe, "selected step": f(r.selected_step)}
            for m in metrics:
                e = getattr(r, field).get(m)
                row[m + (" (main)" if m == e2.main_metric else "")] = "n/a" if e is None or e.mean is None else (
                    f"{e.mean:.3g}" + (f" [{e.lo:.3g}, {e.hi:.3g}]" if e.lo is not None and e.hi is not None else ""))
            data.append(row)
        return table(pd.DataFrame(data))

    out += [f"Instruction data: `{e2.instruct_source}`; mean [{e2.interval_level:.0%} bootstrap interval] "
            f"over {f(e2.questions) if e2.questions else 'all'} questions.", ""] + rows("scores")
    if any(r.heldout for r in e2.recipes):
        out += ["", "Held-out prompts of each recipe's own tuning data (its validation split; not the study's):",
                ""] + rows("heldout")
    return out


def md_exp3(e3: Exp3Result) -> list[str]:
    runs = pd.DataFrame([r.model_dump() for r in e3.runs])
    g = runs.groupby("strategy", sort=False)
    df = pd.DataFrame({
        "seeds": g.size(),
        "reached": g.steps_to_target.count().astype(str) + "/" + g.size().astype(str),
        "steps to target": g.steps_to_target.agg(_mean_sd),
        "data to target (unique pool tokens seen)": g.data_to_target.agg(_mean_sd),
        "final val loss": g.final_val_loss.agg(_mean_sd),
        "pool used": g.pool_fraction.agg(lambda x: f"{x.mean():.2f}"),
    }).reindex(e3.strategies)
    for fld, col in (("steps_to_target", "step reduction"), ("data_to_target", "data reduction")):
        df[col] = [("" if s == e3.target_from else
                    (lambda x: "target not reached" if x is None else f"{x:+.1%}")(e3.reduction(s, fld)))
                   for s in df.index]
    head = [f"Target validation loss {e3.target_loss:.4g} (from `{e3.target_from}`); budget {e3.max_steps} steps x "
            f"{e3.batch_size} x {e3.seq_len} tokens; pool {f(e3.pool_units)} units / {f(e3.pool_tokens)} tokens; "
            f"selected strategy (`curriculum`): `{e3.selected}`. Mean ± std over seeds.", ""]
    return head + table(df.reset_index()) + md_exp3_glue(e3)


def md_exp3_glue(e3: Exp3Result) -> list[str]:
    """Leaner-GLUE of the proxy per strategy and checkpoint step (the untrained proxy at step 0)."""
    if not e3.glue:
        return []
    g = pd.DataFrame([{"strategy": r.strategy, "step": r.step, "mean test score": r.mean_test_score, **r.tasks}
                      for r in e3.glue]).groupby(["strategy", "step"], sort=False)
    df = g.agg(lambda x: _mean_sd(x, ".3f")).reset_index()
    head = f"Leaner-GLUE of the proxy ({', '.join(e3.glue_tasks)}; test scores, mean ± std over seeds):"
    return [head, ""] + table(df)


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


SECTIONS = (("entropy", "entropy", "Entropy and vocabulary (leaner vs original)", "entropy.md", md_entropy),
            ("exp1", "EXP1", "EXP1: pretraining on leaner vs original, fine-tuning on Leaner-GLUE", "exp1.md", md_exp1),
            ("exp2", "EXP2", "EXP2: instruction tuning, four recipes", "exp2.md", md_exp2),
            ("exp3", "EXP3", "EXP3: curriculum learning with a tiny proxy", "exp3.md", md_exp3))


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
    L += ["## Protocol vs study", ""] + md_protocol(ctx["protocol"])
    for key, exp, title, md, fn in SECTIONS:
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
        L += fn(res) + figures(reports, key, used)
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
