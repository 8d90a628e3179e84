"""One report card for the whole study (the ``report`` stage, last in the DAG).

Reads every stage's metrics (``reports/*.json``), ``params.yaml``, ``dvc.lock`` and the per-stage wall
times (``reports/timings/<stage>.json``, written by ``tinyhelen.cli.stage_main``) and writes

* ``reports/README.md``: git commit, params that differ from the defaults, hardware, wall time per stage,
  the entropy / EXP1 / EXP2 / EXP3 tables, the figures of ``reports/figures/`` and every claim of the study
  beside our measurement with a verdict;
* ``reports/summary.json`` (DVC metrics): the verdicts and the few numbers behind them; deterministic
  (no commit, no timings), so ``dvc metrics diff`` between two experiments shows only real changes.

**Adapters.** One small function per experiment (``adapt_entropy``, ``adapt_exp1``, ``adapt_exp2``,
``adapt_exp3``) turns that experiment's metrics file into the few numbers its claims need; a change of an
experiment's layout touches one function. A missing file gives ``None`` (section "not run"); a file whose
layout the adapter does not understand raises ``LayoutError`` (section shows the message, claims
"not run"). Nothing here ever fails the stage because an upstream result is missing.

**Verdicts** (``VERDICTS``; rules in ``docs/report.md`` and in each ``claim_*`` function):

* ``reproduced``: measured at the study's scale (or the claim is scale-free) and the decision rule holds;
* ``not reproduced``: measured at the study's scale and the rule fails (opposite direction *or* an effect
  inside the noise: the evidence column says which);
* ``not measured``: the inputs exist but do not measure the claim (EXP2 scored by proxy metrics, not by
  an LLM judge);
* ``not measured at this scale``: measured, but below the scale the claim is about (tiny CPU preset); the
  direction we observed is still printed;
* ``not run``: the experiment's metrics are absent or unreadable.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from tinyhelen.config import SECTIONS, ParamsError, Section, _model_for, read_yaml, validate_section

log = logging.getLogger(__name__)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURED = "not measured"
NOT_AT_SCALE = "not measured at this scale"
NOT_RUN = "not run"
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, NOT_MEASURED, NOT_AT_SCALE, NOT_RUN)

# metrics files the report reads (paths relative to the repo root; the same list is in dvc.yaml `report`)
INPUTS: dict[str, str] = {
    "prepare": "reports/prepare.json",
    "entropy": "reports/entropy.json",
    "exp1": "reports/exp1.json",
    "exp2": "reports/exp2.json",
    "exp3": "reports/exp3.json",
    "leaner_corpus": "reports/leaner_corpus.json",
    "leaner_glue": "reports/leaner_glue.json",
    "leaner_eval": "reports/leaner_eval.json",
}
SIMPLIFY_DIR = "reports/simplify"          # reports/simplify/<genre>.json
TIMINGS_DIR = "reports/timings"            # reports/timings/<stage>.json (not a DVC dep)
FIGURES_DIR = "reports/figures"
OUT_MD = "reports/README.md"
OUT_SUMMARY = "reports/summary.json"

ARCHS = ("bert", "llama", "xlnet", "mamba")
CORPORA = {"leaner": "leaner", "ori": "ori", "original": "ori", "scratch": "scratch", "none": "scratch",
           "random": "scratch", "from_scratch": "scratch", "fromscratch": "scratch", "init": "scratch"}
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
_SKIP_PATH = {"validation", "val", "dev", "lr", "lrs", "best_lr", "grid", "per_seed", "seeds_detail"}


class ReportConfig(Section):
    """``report:`` section of params.yaml: the decision rules of the verdicts (docs/report.md)."""

    z: float = Field(1.96, gt=0, description="an effect counts when it exceeds z standard errors (1.96: 95%)")
    entropy_setting: str = Field("paired", pattern="^(paired|equal_budget)$",
                                 description="entropy claim decided on this setting; the other is evidence")
    exp2_metric: str = Field("total", description="LLM-judge metric of the EXP2 claims (sum 0-15)")
    exp3_strategy: str = "lmloss"
    exp3_baseline: str = "full-random"
    exp3_min_reduction: float = Field(0.10, ge=0, le=1, description="the study claims ~20% fewer steps and "
                                                                    "tokens; we require at least half of it")
    require_paper_scale: bool = Field(True, description="false: judge model claims at any scale (labelled)")
    paper_scale: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"exp1": {"models.preset": "paper"},
                                 "exp2": {"models.preset": "paper"},
                                 "exp3": {"exp3.units.pool_tokens": None}},
        description="per experiment: params keys and the values that make a run 'at the study's scale'")


class LayoutError(ValueError):
    """A metrics file exists but its layout is not what the adapter expects (message names the file)."""


# ----------------------------------------------------------------------------------------- reading
def read_metrics(path: Path | str, name: str | None = None) -> tuple[Any, str | None]:
    """``(data, problem)``: ``(None, None)`` if absent, ``(None, "name:line: ...")`` if unreadable
    (``name``: how the file is named in messages, default its path)."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except json.JSONDecodeError as exc:
        msg = f"{name or path}:{exc.lineno}: malformed JSON ({exc.msg})"
        log.warning(msg)
        return None, msg


def _get(d: Any, dotted: str, default: Any = KeyError) -> Any:
    node = d
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            if default is KeyError:
                raise KeyError(dotted)
            return default
    return node


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return None if isinstance(v, float) and math.isnan(v) else float(v)
    return None


# ----------------------------------------------------------------------------------------- adapters
def adapt_entropy(d: dict[str, Any], path: str = INPUTS["entropy"]) -> dict[str, Any]:
    """``reports/entropy.json`` -> ``{setting: {side: {figure: value}}}``.

    Reads ``<setting>.<side>.{tokens, vocab, top2000_coverage, mean_sentence_len, word_H<n>, bpe_H<n>}`` for
    setting in ``paired``/``equal_budget`` and side in ``leaner``/``ori`` (``paired`` is required)."""
    out: dict[str, Any] = {}
    for setting in ("paired", "equal_budget"):
        sides = d.get(setting)
        if sides is None:
            continue
        try:
            out[setting] = {s: {k: v for k, v in sides[s].items() if _num(v) is not None} for s in ("leaner", "ori")}
            for s in ("leaner", "ori"):
                out[setting][s]["vocab"]  # noqa: B018 - required figure
        except (KeyError, TypeError, AttributeError) as exc:
            raise LayoutError(f"{path}: {setting}: expected leaner/ori figures with 'vocab' ({exc!r})") from None
    if "paired" not in out:
        raise LayoutError(f"{path}: no 'paired' section")
    return out


def _cell_value(node: Any) -> tuple[float | None, float | None, int | None]:
    """A leaf of an EXP1 table: a number, or ``{"mean"|"score"|"test", "std"|"sd", "n"|"seeds"}``."""
    if _num(node) is not None:
        return _num(node), None, None
    if isinstance(node, dict):
        for k in ("mean", "score", "test", "value"):
            if _num(node.get(k)) is not None:
                std = next((_num(node[s]) for s in ("std", "sd", "stdev") if _num(node.get(s)) is not None), None)
                n = node.get("n", node.get("seeds"))
                n = len(n) if isinstance(n, list) else (int(n) if _num(n) is not None else None)
                return _num(node[k]), std, n
    return None, None, None


def _tokens(key: str) -> list[str]:
    return [t for t in re.split(r"[-_/@: ]+", str(key).lower()) if t]


def adapt_exp1(d: dict[str, Any], path: str = INPUTS["exp1"]) -> dict[str, Any]:
    """``reports/exp1.json`` -> ``{"cells": [{arch, pretrain, task, mean, std, n}], "preset"}``.

    Layout-tolerant: walks the JSON and classifies every key on the way to a score by its name: an arch
    (bert/llama/xlnet/mamba), a pretraining corpus (leaner/ori, or scratch/none = the from-scratch baseline)
    and a GLUE task; combined keys such as ``llama-leaner`` or ``llama/leaner/cola`` work too. A score is a
    number or ``{"mean"|"score"|"test", "std", "n"}``. Keys naming validation/lr/grid subtrees are skipped
    (the report uses the test scores). A task with several metrics (mrpc acc+F1, stsb Pearson+Spearman)
    and no ``score``/``mean`` entry gets their average (the GLUE convention). Also accepts a list of rows
    ``{arch, pretrain|corpus|init, task, mean|score, std, n}`` under ``rows``/``table``/``results``.
    ``preset`` (tiny/paper) is read from the top level if present."""
    cells: dict[tuple[str, str, str], list[tuple[float, float | None, int | None]]] = {}

    def add(arch: str | None, corpus: str | None, task: str | None, v: tuple) -> None:
        if arch and corpus and task and v[0] is not None:
            cells.setdefault((arch, corpus, task), []).append(v)

    def walk(node: Any, arch: str | None, corpus: str | None, task: str | None) -> None:
        if task and arch and corpus:
            v = _cell_value(node)
            if v[0] is not None:
                add(arch, corpus, task, v)
                return
        if isinstance(node, list):
            for row in node:
                if isinstance(row, dict) and "arch" in row and "task" in row:
                    c = row.get("pretrain", row.get("corpus", row.get("init")))
                    add(str(row["arch"]).lower(), CORPORA.get(str(c).lower()), str(row["task"]).lower(),
                        _cell_value(row))
            return
        if not isinstance(node, dict):
            return
        for k, v in node.items():
            toks = _tokens(k)
            if any(t in _SKIP_PATH for t in toks):
                continue
            a, c, t = arch, corpus, task
            for tok in toks:
                if tok in ARCHS:
                    a = tok
                elif tok in CORPORA:
                    c = CORPORA[tok]
                elif tok in GLUE_TASKS:
                    t = tok
            if (a, c, t) == (arch, corpus, task) and task and arch and corpus:
                # a metric name under a task (e.g. mrpc: {accuracy, f1}) -> averaged below
                val = _cell_value(v)
                if val[0] is not None:
                    add(arch, corpus, task, val)
                continue
            walk(v, a, c, t)

    if not isinstance(d, dict):
        raise LayoutError(f"{path}: expected a JSON object")
    walk(d, None, None, None)
    if not cells:
        raise LayoutError(f"{path}: no (arch, pretraining corpus, task) scores found; expected e.g. "
                          "{'llama': {'leaner': {'cola': {'mean': .., 'std': ..}}}}")
    out = []
    for (arch, corpus, task), vals in sorted(cells.items()):
        means = [v[0] for v in vals]
        stds = [v[1] for v in vals if v[1] is not None]
        ns = [v[2] for v in vals if v[2] is not None]
        out.append({"arch": arch, "pretrain": corpus, "task": task, "mean": sum(means) / len(means),
                    "std": (math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else None),
                    "n": min(ns) if ns else None})
    preset = d.get("preset") or _get(d, "provenance.preset", None) or _get(d, "meta.preset", None)
    return {"cells": out, "preset": preset}


def adapt_exp2(d: dict[str, Any], path: str = INPUTS["exp2"]) -> dict[str, Any]:
    """``reports/exp2.json`` -> ``{"backend", "source", "recipes": {recipe: {metric: {mean, lo, hi}}}}``.

    Reads ``judge_backend`` (``proxy`` | ``openai``), ``instruct_source`` and
    ``recipes.<pretrain>-<tune>.<metric>.{mean, lo, hi}`` (lo/hi: 95% bootstrap interval)."""
    try:
        recipes = d["recipes"]
        backend = d["judge_backend"]
        out = {rec: {m: {"mean": _num(v.get("mean")), "lo": _num(v.get("lo")), "hi": _num(v.get("hi"))}
                     for m, v in ms.items() if isinstance(v, dict)} for rec, ms in recipes.items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise LayoutError(f"{path}: expected judge_backend and recipes.<recipe>.<metric>.{{mean,lo,hi}} "
                          f"({exc!r})") from None
    return {"backend": backend, "source": d.get("instruct_source"), "recipes": out,
            "scores": d.get("scores")}


def _seed_values(node: Any) -> list[float | None] | None:
    """Per-seed values: a list, or ``{seed: value}``; ``None`` entries = target never reached."""
    if isinstance(node, list):
        return [_num(v) for v in node]
    if isinstance(node, dict) and node and all(re.fullmatch(r"(seed[-_]?)?\d+", str(k)) for k in node):
        return [_num(v) for v in node.values()]
    return None


def adapt_exp3(d: dict[str, Any], path: str = INPUTS["exp3"]) -> dict[str, Any]:
    """``reports/exp3.json`` -> ``{"strategies": {name: {"steps": [...], "tokens": [...], "final_loss":
    [...]}}, "target_loss", "preset"}`` (lists over seeds; ``None`` = target never reached).

    Reads the per-strategy mapping under ``strategies`` (else ``table``/``results``/top level) keyed by the
    strategy name; in each, the steps to the target under ``steps_to_target`` (or ``steps``), the tokens
    under ``tokens_to_target`` (or ``tokens``), the final validation loss under ``final_val_loss`` (or
    ``val_loss``/``final_loss``). Each is a per-seed list, a ``{seed: v}`` map, ``{"per_seed": [...]}`` or
    ``{"mean": v, "std": s}`` (then one value). ``target_loss`` is read from the top level if present."""
    keys = {"steps": ("steps_to_target", "steps_to_target_loss", "steps"),
            "tokens": ("tokens_to_target", "tokens_to_target_loss", "tokens"),
            "final_loss": ("final_val_loss", "val_loss", "final_loss")}
    table = next((d[k] for k in ("strategies", "table", "results") if isinstance(d.get(k), dict)), d)
    out: dict[str, dict[str, list[float | None]]] = {}
    for name, rec in table.items():
        if not isinstance(rec, dict):
            continue
        row: dict[str, list[float | None]] = {}
        for field_, cands in keys.items():
            node = next((rec[c] for c in cands if c in rec), None)
            if node is None:
                continue
            vals = _seed_values(node)
            if vals is None and isinstance(node, dict):
                vals = _seed_values(node.get("per_seed")) or _seed_values(node.get("seeds"))
                if vals is None and "mean" in node:
                    vals = [_num(node["mean"])]
            if vals is None and (_num(node) is not None):
                vals = [_num(node)]
            if vals is not None:
                row[field_] = vals
        if row:
            out[str(name)] = row
    if not out:
        raise LayoutError(f"{path}: no strategies with steps_to_target/tokens_to_target/final_val_loss found")
    tl = d.get("target_loss", _get(d, "target.loss", None))
    return {"strategies": out, "target_loss": _num(tl), "preset": d.get("preset")}


def adapt_generic(d: Any, limit: int = 12) -> list[tuple[str, Any]]:
    """The first ``limit`` scalar leaves (depth <= 2) of a small metrics file, for the data section."""
    out: list[tuple[str, Any]] = []

    def walk(node: Any, prefix: str, depth: int) -> None:
        if len(out) >= limit:
            return
        if isinstance(node, dict) and depth < 2:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.", depth + 1)
        elif isinstance(node, (int, float, str, bool)) and not isinstance(node, dict):
            out.append((prefix[:-1], node))

    walk(d, "", 0)
    return out


# ----------------------------------------------------------------------------------------- statistics
def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _se(xs: Sequence[float]) -> float | None:
    """Standard error of the mean (None with fewer than two values)."""
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def decide(effect: float | None, se: float | None, z: float, threshold: float = 0.0) -> tuple[bool, str]:
    """The one decision rule: an effect (oriented so that > 0 supports the claim) counts when
    ``effect > threshold`` and, if a standard error is known, ``effect - z*se > 0``. Returns (ok, why)."""
    if effect is None:
        return False, "no effect measured"
    if effect <= threshold:
        return False, ("opposite direction" if effect < 0 else "no effect") if threshold == 0 else \
            f"effect {effect:+.3g} below the threshold {threshold:.3g}"
    if se is None:
        return True, "no spread available (single value): direction only"
    if effect - z * se <= 0:
        return False, f"inside the noise ({effect:+.3g} <= {z:g} x se {se:.3g})"
    return True, f"{effect:+.3g} > {z:g} x se {se:.3g}"


@dataclass
class Claim:
    """One claim of the study beside our measurement."""

    id: str
    experiment: str
    claim: str
    verdict: str
    measured: str
    why: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scale:
    """Whether an experiment ran at the study's scale, per ``report.paper_scale``."""

    at_paper: bool
    detail: str


def scale_of(exp: str, params: dict[str, Any], cfg: ReportConfig, metrics_preset: str | None = None) -> Scale:
    """At the study's scale iff every ``report.paper_scale.<exp>`` key has its listed value in params.yaml
    (a key absent from params.yaml: the experiment's own ``preset`` field decides if it is a preset key,
    else the run is taken as not at scale)."""
    rules = cfg.paper_scale.get(exp, {})
    parts, ok = [], True
    for key, want in rules.items():
        if _has(params, key):
            got = _get(params, key)
        else:
            if key.endswith("preset") and metrics_preset is not None:
                got = metrics_preset
            else:
                ok = False
                parts.append(f"`{key}` not in params.yaml")
                continue
        parts.append(f"`{key}`={_fmt_value(got)}")
        ok = ok and got == want
    return Scale(ok, ", ".join(parts) or "no scale rule")


def _has(d: Any, dotted: str) -> bool:
    try:
        _get(d, dotted)
        return True
    except KeyError:
        return False


def _fmt_value(v: Any) -> str:
    return "null" if v is None else (json.dumps(v) if not isinstance(v, str) else v)


def _gate(scale: Scale, cfg: ReportConfig) -> tuple[str | None, str]:
    """NOT_AT_SCALE unless at paper scale (or the rule is switched off)."""
    if scale.at_paper:
        return None, f"at the study's scale ({scale.detail})"
    if not cfg.require_paper_scale:
        return None, f"below the study's scale ({scale.detail}); judged anyway (report.require_paper_scale=false)"
    return NOT_AT_SCALE, f"below the study's scale ({scale.detail})"


# ----------------------------------------------------------------------------------------- claims
def claims_entropy(ent: dict[str, Any] | None, cfg: ReportConfig, problem: str | None = None) -> list[Claim]:
    """Leaner text has a smaller vocabulary / lower n-gram entropy (data properties: no scale gate).

    Vocabulary: reproduced iff leaner's word-type count is below ori's in every setting present (paired and
    equal token budget: the latter rules out "leaner is just shorter"). Entropy: reproduced iff leaner is
    below ori on every word and BPE ``H_n`` in ``report.entropy_setting`` (default ``paired``: the same
    documents on both sides); the figures where leaner is not below in the other setting are listed."""
    vtext, etext = "Leaner text has a smaller vocabulary", "Leaner text has lower n-gram entropy"
    if ent is None:
        why = problem or f"{INPUTS['entropy']} absent"
        return [Claim("entropy_vocab", "entropy", vtext, NOT_RUN, "-", why),
                Claim("entropy_ngram", "entropy", etext, NOT_RUN, "-", why)]
    ratios = {s: ent[s]["leaner"]["vocab"] / ent[s]["ori"]["vocab"] for s in ent}
    ok = all(r < 1 for r in ratios.values())
    vc = Claim("entropy_vocab", "entropy", vtext, REPRODUCED if ok else NOT_REPRODUCED,
               "; ".join(f"{s}: {ent[s]['leaner']['vocab']:,.0f} vs {ent[s]['ori']['vocab']:,.0f} types "
                         f"(x{r:.2f})" for s, r in ratios.items()),
               "leaner < ori in every setting" if ok else "leaner not below ori in some setting",
               {"vocab_ratio_" + s: round(r, 4) for s, r in ratios.items()})
    setting = cfg.entropy_setting if cfg.entropy_setting in ent else "paired"

    def below(s: str) -> tuple[list[str], list[str]]:
        figs = sorted(k for k in ent[s]["leaner"] if re.fullmatch(r"(word|bpe)_H\d+", k) and k in ent[s]["ori"])
        return figs, [k for k in figs if not ent[s]["leaner"][k] < ent[s]["ori"][k]]

    figs, bad = below(setting)
    h1 = "word_H1"
    diff = {k: round(ent[setting]["leaner"][k] - ent[setting]["ori"][k], 4) for k in figs}
    others = [f"{s}: leaner not below on {', '.join(below(s)[1]) or 'none'}" for s in ent if s != setting]
    ok = bool(figs) and not bad
    measured = (f"{setting}: leaner below ori on {len(figs) - len(bad)}/{len(figs)} n-gram entropies"
                + (f" (word H1 {ent[setting]['leaner'][h1]:.2f} vs {ent[setting]['ori'][h1]:.2f} bits)"
                   if h1 in figs else ""))
    ec = Claim("entropy_ngram", "entropy", etext, REPRODUCED if ok else NOT_REPRODUCED,
               measured + ("; " + "; ".join(others) if others else ""),
               f"every H_n lower in `{setting}`" if ok else (f"not lower on {', '.join(bad)}" if figs else
                                                            "no H_n figures"),
               {"leaner_below_" + setting: len(figs) - len(bad), "figures": len(figs),
                **{"delta_" + k: v for k, v in diff.items() if k.endswith(("H1", "H2"))}})
    return [vc, ec]


def _avg_by(cells: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(c[key], []).append(c)
    out = {}
    for g, cs in groups.items():
        var = [c["std"] ** 2 / (c["n"] or 1) for c in cs if c["std"] is not None]
        se = math.sqrt(sum(var)) / len(cs) if len(var) == len(cs) else None
        out[g] = {"mean": _mean([c["mean"] for c in cs]), "se": se, "cells": len(cs)}
    return out


def claims_exp1(e1: dict[str, Any] | None, params: dict[str, Any], cfg: ReportConfig,
                problem: str | None = None) -> list[Claim]:
    """EXP1. (a) Leaner-pretrained beats original-pretrained on Leaner-GLUE: the effect is the mean over
    (arch, task) cells of ``score(leaner) - score(ori)``; se = the standard error of those differences over
    cells (with a single cell: from the seed spread). (b) LLaMA is best after fine-tuning: each arch's score
    is its mean over pretrained (leaner and ori) cells; the effect is LLaMA's margin over the best other
    arch, se from the seed spreads of the two. Both go through ``decide`` and the scale gate."""
    ta, tb = ("Leaner-pretrained models beat original-pretrained ones on Leaner-GLUE",
              "LLaMA is the best architecture after fine-tuning")
    if e1 is None:
        why = problem or f"{INPUTS['exp1']} absent"
        return [Claim("exp1_leaner_beats_ori", "EXP1", ta, NOT_RUN, "-", why),
                Claim("exp1_llama_best", "EXP1", tb, NOT_RUN, "-", why)]
    gate, scale_txt = _gate(scale_of("exp1", params, cfg, e1.get("preset")), cfg)
    cells = e1["cells"]
    by = {(c["arch"], c["pretrain"], c["task"]): c for c in cells}
    diffs, seeds_var = [], []
    for (a, p, t), c in by.items():
        if p == "leaner" and (a, "ori", t) in by:
            o = by[(a, "ori", t)]
            diffs.append(c["mean"] - o["mean"])
            if c["std"] is not None and o["std"] is not None:
                seeds_var.append(c["std"] ** 2 / (c["n"] or 1) + o["std"] ** 2 / (o["n"] or 1))
    out = []
    if not diffs:
        out.append(Claim("exp1_leaner_beats_ori", "EXP1", ta, NOT_RUN, "-", "no arch x task with both corpora"))
    else:
        eff = _mean(diffs)
        se = _se(diffs) if len(diffs) >= 2 else (math.sqrt(seeds_var[0]) if seeds_var else None)
        ok, why = decide(eff, se, cfg.z)
        wins = sum(d > 0 for d in diffs)
        measured = (f"leaner - ori = {eff:+.4f} mean over {len(diffs)} arch x task cells "
                    f"(leaner ahead in {wins}/{len(diffs)})")
        verdict = gate or (REPRODUCED if ok else NOT_REPRODUCED)
        out.append(Claim("exp1_leaner_beats_ori", "EXP1", ta, verdict, measured, f"{why}; {scale_txt}",
                         {"leaner_minus_ori": round(eff, 4), "se": None if se is None else round(se, 4),
                          "cells_leaner_ahead": wins, "cells": len(diffs)}))
    arch = _avg_by([c for c in cells if c["pretrain"] in ("leaner", "ori")], "arch")
    if "llama" not in arch or len(arch) < 2:
        out.append(Claim("exp1_llama_best", "EXP1", tb, NOT_RUN, "-",
                         "needs LLaMA and at least one other pretrained arch"))
    else:
        rank = sorted(arch, key=lambda a: -arch[a]["mean"])
        rival = next(a for a in rank if a != "llama")
        eff = arch["llama"]["mean"] - arch[rival]["mean"]
        ses = [arch[a]["se"] for a in ("llama", rival)]
        se = math.sqrt(ses[0] ** 2 + ses[1] ** 2) if None not in ses else None
        ok, why = decide(eff, se, cfg.z)
        measured = "mean GLUE score: " + ", ".join(f"{a} {arch[a]['mean']:.4f}" for a in rank)
        verdict = gate or (REPRODUCED if ok else NOT_REPRODUCED)
        out.append(Claim("exp1_llama_best", "EXP1", tb, verdict, measured,
                         f"LLaMA vs {rival}: {why}; {scale_txt}",
                         {"best_arch": rank[0], "llama_margin": round(eff, 4),
                          **{f"glue_mean_{a}": round(arch[a]["mean"], 4) for a in rank}}))
    return out


def _recipe_effect(recipes: dict[str, Any], metric: str, pos: Iterable[str], neg: Iterable[str]
                   ) -> tuple[float, float | None] | None:
    pos, neg = list(pos), list(neg)
    try:
        vals = {r: recipes[r][metric] for r in pos + neg}
    except KeyError:
        return None
    if any(v["mean"] is None for v in vals.values()):
        return None
    eff = _mean([vals[r]["mean"] for r in pos]) - _mean([vals[r]["mean"] for r in neg])
    if any(v["lo"] is None or v["hi"] is None for v in vals.values()):
        return eff, None
    se_r = [(v["hi"] - v["lo"]) / (2 * 1.96) for v in vals.values()]   # 95% bootstrap CI -> se
    return eff, math.sqrt(sum(s * s for s in se_r)) / len(pos)


def claims_exp2(e2: dict[str, Any] | None, params: dict[str, Any], cfg: ReportConfig,
                problem: str | None = None) -> list[Claim]:
    """EXP2. Leaner pretraining (recipes ``leaner-*`` vs ``ori-*``) and leaner instruction tuning (``*-leaner``
    vs ``*-ori``) give better instruction following, scored by an LLM judge (``report.exp2_metric``, default
    the 0-15 sum). Effect = difference of the recipe means averaged over the other factor; se from the 95%
    bootstrap intervals (half-width / 1.96, combined in quadrature). Proxy metrics are never LLM scores:
    with ``judge_backend != openai`` the verdict is ``not measured`` (the proxy direction is shown)."""
    spec = [("exp2_leaner_pretraining", "Leaner pretraining gives better instruction following (LLM-judged)",
             ("leaner-leaner", "leaner-ori"), ("ori-leaner", "ori-ori")),
            ("exp2_leaner_tuning", "Leaner instruction tuning gives better instruction following (LLM-judged)",
             ("leaner-leaner", "ori-leaner"), ("leaner-ori", "ori-ori"))]
    if e2 is None:
        why = problem or f"{INPUTS['exp2']} absent"
        return [Claim(i, "EXP2", t, NOT_RUN, "-", why) for i, t, _, _ in spec]
    gate, scale_txt = _gate(scale_of("exp2", params, cfg), cfg)
    llm = e2["backend"] == "openai"
    metric = cfg.exp2_metric if llm else "proxy_ref_ppl"
    sign = 1.0 if llm else -1.0          # proxy_ref_ppl: lower is better
    out = []
    for cid, text, pos, neg in spec:
        res = _recipe_effect(e2["recipes"], metric, pos, neg)
        if res is None:
            out.append(Claim(cid, "EXP2", text, NOT_RUN, "-", f"recipes {pos + neg} / metric `{metric}` missing"))
            continue
        eff, se = res
        measured = (f"{metric}: ({' + '.join(pos)})/2 - ({' + '.join(neg)})/2 = {eff:+.3f}"
                    + ("" if se is None else f" (se {se:.3f})"))
        nums = {"metric": metric, "effect": round(eff, 4), "se": None if se is None else round(se, 4)}
        if not llm:
            direction = "leaner better" if sign * eff > 0 else "leaner not better"
            out.append(Claim(cid, "EXP2", text, NOT_MEASURED, measured + f" [proxy: {direction}]",
                             f"judge.backend={e2['backend']}: proxy metrics are not LLM-judge scores", nums))
            continue
        ok, why = decide(sign * eff, se, cfg.z)
        out.append(Claim(cid, "EXP2", text, gate or (REPRODUCED if ok else NOT_REPRODUCED), measured,
                         f"{why}; {scale_txt}", nums))
    return out


def _reduction(strats: dict[str, Any], field_: str, s: str, b: str) -> tuple[list[float], int, int] | None:
    """Per-seed reductions ``1 - x_s / x_b`` (paired by seed position when the counts agree, else of the
    means); returns (reductions, runs of s that never reached the target, runs of b)."""
    xs, xb = strats.get(s, {}).get(field_), strats.get(b, {}).get(field_)
    if not xs or not xb:
        return None
    miss_s, miss_b = sum(v is None for v in xs), sum(v is None for v in xb)
    if miss_b == len(xb):
        return None
    if miss_s:
        return [], miss_s, miss_b
    if len(xs) == len(xb) and not miss_b:
        return [1 - a / c for a, c in zip(xs, xb)], 0, 0
    mb = _mean([v for v in xb if v is not None])
    return [1 - _mean(xs) / mb], 0, miss_b


def claims_exp3(e3: dict[str, Any] | None, params: dict[str, Any], cfg: ReportConfig,
                problem: str | None = None) -> list[Claim]:
    """EXP3. ``lmloss`` ordering reaches the target loss with ~20% fewer steps and tokens than
    ``full-random``. Effect = mean over seeds of ``1 - steps(lmloss)/steps(full-random)`` (and the same for
    tokens); both must reach ``report.exp3_min_reduction`` (10%: half the claimed effect) and exceed z
    standard errors over seeds; an ``lmloss`` run that never reached the target fails the claim."""
    s, b = cfg.exp3_strategy, cfg.exp3_baseline
    text = f"`{s}` ordering reaches the same loss with ~20% fewer steps and data than `{b}`"
    if e3 is None:
        return [Claim("exp3_lmloss_saves_20pct", "EXP3", text, NOT_RUN, "-", problem or f"{INPUTS['exp3']} absent")]
    strats = e3["strategies"]
    if s not in strats or b not in strats:
        return [Claim("exp3_lmloss_saves_20pct", "EXP3", text, NOT_RUN, "-",
                      f"strategies {s!r} and {b!r} needed; have {sorted(strats)}")]
    gate, scale_txt = _gate(scale_of("exp3", params, cfg, e3.get("preset")), cfg)
    parts, nums, oks, whys = [], {}, [], []
    for fld in ("steps", "tokens"):
        r = _reduction(strats, fld, s, b)
        if r is None:
            continue
        reds, miss_s, _ = r
        if miss_s:
            parts.append(f"{fld}: {s} never reached the target in {miss_s} run(s)")
            oks.append(False)
            whys.append(f"{fld}: target not reached")
            nums[f"reduction_{fld}"] = None
            continue
        eff = _mean(reds)
        ok, why = decide(eff, _se(reds), cfg.z, cfg.exp3_min_reduction)
        parts.append(f"{fld}: {eff:+.1%} vs {b} ({len(reds)} seed pair(s))")
        nums[f"reduction_{fld}"] = round(eff, 4)
        oks.append(ok)
        whys.append(f"{fld}: {why}")
    if not oks:
        return [Claim("exp3_lmloss_saves_20pct", "EXP3", text, NOT_RUN, "-",
                      "no steps/tokens-to-target figures for both strategies")]
    verdict = gate or (REPRODUCED if all(oks) else NOT_REPRODUCED)
    return [Claim("exp3_lmloss_saves_20pct", "EXP3", text, verdict, "; ".join(parts),
                  "; ".join(whys) + f"; {scale_txt}", nums)]


# ----------------------------------------------------------------------------------------- context
def git_info(root: Path) -> dict[str, Any]:
    """Commit of the workspace the report was made in (HEAD + a dirty flag: the report is written before the
    results are committed) and, inside ``dvc exp run``, the experiment name and baseline."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "experiment": os.environ.get("DVC_EXP_NAME"), "baseline": os.environ.get("DVC_EXP_BASELINE_REV")}


def hardware() -> dict[str, Any]:
    """CPU model and cores, GPU(s) if torch sees any, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(terse=True)}
    for pkg in ("torch", "transformers", "dvc"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    out["gpu"] = None
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no torch / no driver: CPU only
        pass
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def params_vs_defaults(params_path: Path | str) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """``(rows, problems)``: every params key whose value differs from its section model's default
    (``tinyhelen.config.SECTIONS``), as ``(key, default, value)``; unregistered sections are listed whole."""
    raw = read_yaml(params_path)
    rows: list[tuple[str, Any, Any]] = []
    problems: list[str] = []
    for section in raw:
        if section not in SECTIONS:
            for k, v in _flatten(raw[section], f"{section}.").items():
                rows.append((k, "(no registered model)", v))
            continue
        try:
            model = _model_for(section)
            cur = validate_section(section, raw.get(section), model, params_path)
            try:
                default = model()
            except Exception:  # noqa: BLE001 - a model with required fields has no default
                problems.append(f"{section}: model has required fields; no defaults to compare")
                continue
        except (ParamsError, ImportError, AttributeError) as exc:
            problems.append(f"{section}: {exc}")
            continue
        scalar = "value" in model.model_fields and len(model.model_fields) == 1
        cur_d, def_d = cur.model_dump(mode="json"), default.model_dump(mode="json")
        if scalar:
            if cur_d["value"] != def_d["value"]:
                rows.append((section, def_d["value"], cur_d["value"]))
            continue
        fc, fd = _flatten(cur_d, f"{section}."), _flatten(def_d, f"{section}.")
        for k in sorted(set(fc) | set(fd)):
            if fc.get(k, "<absent>") != fd.get(k, "<absent>"):
                rows.append((k, fd.get(k, "<absent>"), fc.get(k, "<absent>")))
    return rows, problems


def resolved_params(params_path: Path | str) -> dict[str, Any]:
    """params.yaml with every registered section's defaults filled in (what the stages actually use);
    a section that fails validation or import is taken raw."""
    raw = read_yaml(params_path)
    out = dict(raw)
    for section in SECTIONS:
        try:
            model = _model_for(section)
            val = validate_section(section, raw.get(section), model, params_path).model_dump(mode="json")
        except Exception:  # noqa: BLE001 - the card still renders; params_vs_defaults reports the problem
            continue
        scalar = "value" in model.model_fields and len(model.model_fields) == 1
        out[section] = val["value"] if scalar else val
    return out


def read_lock(path: Path | str) -> dict[str, dict[str, Any]]:
    """Stage entries of ``dvc.lock`` (``{}`` if absent). Read for information only, never a DVC dep: the
    lock changes after every stage, so depending on it would make the report permanently stale."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        lock = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        log.warning("%s: unreadable (%s)", path, exc)
        return {}
    return lock.get("stages", {}) if isinstance(lock, dict) else {}


def read_timings(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    d = root / TIMINGS_DIR
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            data, _ = read_metrics(p)
            if isinstance(data, dict) and _num(data.get("wall_s")) is not None:
                out[str(data.get("stage", p.stem))] = data
    return out


# ----------------------------------------------------------------------------------------- rendering
def _f(v: Any, fmt: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or abs(v) >= 1000 or (v.is_integer() and abs(v) >= 100):
        return f"{v:,.0f}"
    return format(v, fmt)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return lines


def md_entropy(ent: dict[str, Any]) -> list[str]:
    settings = list(ent)
    figs = ["tokens", "vocab", "top2000_coverage", "mean_sentence_len"]
    hs = sorted({k for s in settings for k in ent[s]["leaner"] if re.fullmatch(r"(word|bpe)_H\d+", k)},
                key=lambda k: (k.split("_")[0] != "word", int(k.split("H")[1])))
    header = ["figure"] + [f"{side} ({s})" for s in settings for side in ("ori", "leaner")]
    rows = []
    for k in [f for f in figs if f in ent[settings[0]]["leaner"]] + hs:
        row = [k]
        for s in settings:
            for side in ("ori", "leaner"):
                v = ent[s][side].get(k)
                row.append(f"{v:.1%}" if k == "top2000_coverage" and v is not None else _f(v))
        rows.append(row)
    return _table(header, rows)


def md_exp1(e1: dict[str, Any]) -> list[str]:
    cells = e1["cells"]
    tasks = [t for t in GLUE_TASKS if any(c["task"] == t for c in cells)]
    keys = sorted({(c["arch"], c["pretrain"]) for c in cells},
                  key=lambda k: (ARCHS.index(k[0]) if k[0] in ARCHS else 9, ["leaner", "ori", "scratch"].index(k[1])
                                 if k[1] in ("leaner", "ori", "scratch") else 9))
    by = {(c["arch"], c["pretrain"], c["task"]): c for c in cells}
    rows = []
    for a, p in keys:
        row: list[Any] = [a, p]
        vals = []
        for t in tasks:
            c = by.get((a, p, t))
            if c is None:
                row.append("")
                continue
            vals.append(c["mean"])
            row.append(f"{c['mean']:.3f}" + (f" ± {c['std']:.3f}" if c["std"] is not None else ""))
        row.append(f"{_mean(vals):.3f}" if vals else "")
        rows.append(row)
    return _table(["arch", "pretraining", *tasks, "mean"], rows)


def md_exp2(e2: dict[str, Any]) -> list[str]:
    metrics = []
    for ms in e2["recipes"].values():
        metrics += [m for m in ms if m not in metrics]
    rows = []
    for rec, ms in e2["recipes"].items():
        row = [rec]
        for m in metrics:
            v = ms.get(m)
            if not v or v["mean"] is None:
                row.append("n/a")
            else:
                ci = f" [{v['lo']:.3g}, {v['hi']:.3g}]" if v["lo"] is not None and v["hi"] is not None else ""
                row.append(f"{v['mean']:.3g}{ci}")
        rows.append(row)
    return _table(["recipe (pretrain-tune)", *metrics], rows)


def md_exp3(e3: dict[str, Any], cfg: ReportConfig) -> list[str]:
    def cell(vals: list[float | None] | None, pct: bool = False) -> str:
        if not vals:
            return ""
        got = [v for v in vals if v is not None]
        miss = len(vals) - len(got)
        if not got:
            return "not reached"
        m = _mean(got)
        s = _se(got)
        txt = _f(m) + (f" ± {_f(s * math.sqrt(len(got)), '.3g')}" if s is not None else "")
        return txt + (f" ({miss} not reached)" if miss else "")

    base = e3["strategies"].get(cfg.exp3_baseline, {})
    rows = []
    for name, r in e3["strategies"].items():
        red = []
        for fld in ("steps", "tokens"):
            x = _reduction(e3["strategies"], fld, name, cfg.exp3_baseline) if base and name != cfg.exp3_baseline \
                else None
            red.append("" if x is None else ("target not reached" if x[1] else f"{_mean(x[0]):+.1%}"))
        n = max(len(v) for v in r.values())
        rows.append([name, n, cell(r.get("steps")), cell(r.get("tokens")), cell(r.get("final_loss")), *red])
    return _table(["strategy", "seeds", "steps to target", "tokens to target", "final val loss",
                   f"step reduction vs {cfg.exp3_baseline}", "token reduction"], rows)


def _figures(root: Path, prefix: str, used: set[str]) -> list[str]:
    d = root / FIGURES_DIR
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.png")):
        if p.name not in used and (p.stem.startswith(prefix) or not prefix):
            used.add(p.name)
            out += [f"![{p.stem}](figures/{p.name})", ""]
    return out


def render(ctx: dict[str, Any]) -> str:
    """The Markdown report card (``reports/README.md``; links are relative to ``reports/``)."""
    cfg: ReportConfig = ctx["cfg"]
    root: Path = ctx["root"]
    g, hw = ctx["git"], ctx["hardware"]
    used: set[str] = set()
    L = ["# TinyHelen's First Curriculum: report card", "",
         "Generated by the `report` stage (`dvc repro`) from every stage's metrics; the machine-readable "
         "verdicts are in [summary.json](summary.json). Verdict rules: [docs/report.md](../docs/report.md).", ""]
    commit = g.get("commit") or "unknown"
    L += [f"- **commit**: `{commit}`" + (" + uncommitted changes" if g.get("dirty") else "")
          + (f" (branch `{g['branch']}`)" if g.get("branch") else ""),
          f"- **experiment**: `{g['experiment']}` (baseline `{g.get('baseline')}`)" if g.get("experiment") else
          "- **experiment**: workspace run (`dvc repro`)",
          f"- **generated**: {ctx['generated']}",
          f"- **hardware** (report stage): {hw.get('cpu')}, {hw.get('cores')} cores; GPU: {hw.get('gpu') or 'none'}; "
          f"torch {hw.get('torch')}, transformers {hw.get('transformers')}, dvc {hw.get('dvc')}, "
          f"Python {hw.get('python')}", ""]

    # ---- claims
    L += ["## Claims of the study and our verdicts", ""]
    counts = {v: sum(c.verdict == v for c in ctx["claims"]) for v in VERDICTS}
    L += ["Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), ""]
    L += _table(["experiment", "claim (study)", "our measurement", "verdict", "why"],
                [[c.experiment, c.claim, c.measured, f"**{c.verdict}**", c.why] for c in ctx["claims"]])
    L.append("")

    # ---- sections
    sections = [("entropy", "Entropy and vocabulary (leaner vs original)", "entropy.md"),
                ("exp1", "EXP1: pretraining on leaner vs original, fine-tuning on Leaner-GLUE", "exp1.md"),
                ("exp2", "EXP2: instruction tuning, four recipes", "exp2.md"),
                ("exp3", "EXP3: curriculum learning with a tiny proxy", "exp3.md")]
    for key, title, md in sections:
        L += [f"## {title}", ""]
        data, problem = ctx["data"].get(key), ctx["problems"].get(key)
        if data is None:
            L += [f"_Not run_: {problem or INPUTS[key] + ' absent'}.", ""]
            continue
        if (root / "reports" / md).exists():
            L += [f"Full tables: [{md}]({md}).", ""]
        if key == "entropy":
            L += md_entropy(data)
        elif key == "exp1":
            L += [f"Leaner-GLUE test score (task metric; mean ± std over seeds), preset "
                  f"`{data.get('preset') or 'see params'}`.", ""] + md_exp1(data)
        elif key == "exp2":
            if data["backend"] != "openai":
                L += ["> **Proxy metrics, not LLM-judge scores** (`judge.backend: "
                      f"{data['backend']}`). The EXP2 claims are *not measured* by them.", ""]
            L += [f"Instruction data: `{data.get('source')}`; mean [95% bootstrap interval].", ""] + md_exp2(data)
        elif key == "exp3":
            L += ([f"Target validation loss: {_f(data['target_loss'])}.", ""] if data.get("target_loss") else []) \
                + ["Mean ± std over seeds.", ""] + md_exp3(data, cfg)
        L.append("")
        L += _figures(root, key, used)

    # ---- data / LLM stages
    L += ["## Data, simplification and benchmarks", ""]
    rows = []
    for key in ("prepare", "leaner_corpus", "leaner_glue", "leaner_eval"):
        d = ctx["data"].get(key)
        txt = ", ".join(f"{k}={_f(v)}" for k, v in adapt_generic(d)) if d is not None else \
            (ctx["problems"].get(key) or "not run")
        rows.append([f"`{INPUTS[key]}`", txt])
    for name, d in sorted(ctx["simplify"].items()):
        rows.append([f"`{SIMPLIFY_DIR}/{name}.json`", ", ".join(f"{k}={_f(v)}" for k, v in adapt_generic(d, 8))])
    L += _table(["metrics", "figures"], rows) + [""]

    # ---- params
    L += ["## Params that differ from the defaults", ""]
    prow, pprob = ctx["params_diff"]
    if prow:
        L += _table(["key", "default (section model)", "params.yaml"],
                    [[f"`{k}`", f"`{_fmt_value(d)}`", f"`{_fmt_value(v)}`"] for k, d, v in prow])
    else:
        L.append("None: every key has its section model's default.")
    L += [f"- {p}" for p in pprob] + [""]

    # ---- stages / timings
    L += ["## Stages (dvc.lock) and wall time", ""]
    lock, tim = ctx["lock"], ctx["timings"]
    names = list(lock) + [s for s in tim if s not in lock]
    if names:
        rows = []
        for s in names:
            t = tim.get(s, {})
            outs = lock.get(s, {}).get("outs", []) if isinstance(lock.get(s), dict) else []
            rows.append([f"`{s}`", _f(t.get("wall_s"), ".1f") if t else "", t.get("device", ""),
                         t.get("started", ""), len(outs) if s in lock else "not in dvc.lock"])
        L += _table(["stage", "wall s", "device", "started", "outs"], rows)
        total = sum(t["wall_s"] for t in tim.values())
        L += ["", (f"Total recorded wall time: {total:,.1f} s ({total / 60:.1f} min). " if tim else
                   "No wall times recorded yet. ") + "Times come from `reports/timings/` (the last successful "
              "run of each stage in this workspace, written by `tinyhelen.cli.stage_main`)."]
    else:
        L.append("No dvc.lock and no timings yet.")
    L.append("")

    rest = _figures(root, "", used)
    if rest:
        L += ["## Other figures", ""] + rest
    L += ["## Reproduce / compare", "",
          "```bash", "dvc repro                         # everything, CPU default",
          "dvc exp run -S models.preset=paper  # an experiment at the paper preset (GPU)",
          "dvc metrics diff main --md          # what changed vs main (also: make compare BASE=main)",
          "dvc plots diff main                 # plots vs main (HTML, offline)", "```", ""]
    return "\n".join(L)


def summary(claims: list[Claim]) -> dict[str, Any]:
    """``reports/summary.json`` (DVC metrics): per claim its verdict and numbers, plus verdict counts.
    Deterministic: no commit, no timings."""
    return {"verdicts": {v.replace(" ", "_"): sum(c.verdict == v for c in claims) for v in VERDICTS},
            "claims": {c.id: {"verdict": c.verdict, **c.numbers} for c in claims}}


# ----------------------------------------------------------------------------------------- driver
ADAPTERS = {"entropy": adapt_entropy, "exp1": adapt_exp1, "exp2": adapt_exp2, "exp3": adapt_exp3}


def collect(root: Path | str = ".", params_path: Path | str = "params.yaml",
            cfg: ReportConfig | None = None) -> dict[str, Any]:
    """Read everything the report needs under ``root``; never raises for missing/odd upstream results."""
    root = Path(root)
    params_path = Path(params_path) if Path(params_path).is_absolute() else root / params_path
    cfg = cfg or ReportConfig()
    params = resolved_params(params_path)
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, rel in INPUTS.items():
        raw, problem = read_metrics(root / rel, rel)
        if problem:
            problems[key] = problem
        if raw is None:
            continue
        if key in ADAPTERS:
            try:
                data[key] = ADAPTERS[key](raw, rel)
            except LayoutError as exc:
                log.warning("%s", exc)
                problems[key] = f"layout not understood: {exc}"
        else:
            data[key] = raw
    simplify = {}
    if (root / SIMPLIFY_DIR).is_dir():
        for p in sorted((root / SIMPLIFY_DIR).glob("*.json")):
            raw, _ = read_metrics(p)
            if raw is not None:
                simplify[p.stem] = raw
    claims = (claims_entropy(data.get("entropy"), cfg, problems.get("entropy"))
              + claims_exp1(data.get("exp1"), params, cfg, problems.get("exp1"))
              + claims_exp2(data.get("exp2"), params, cfg, problems.get("exp2"))
              + claims_exp3(data.get("exp3"), params, cfg, problems.get("exp3")))
    return {"cfg": cfg, "root": root, "params": params, "data": data, "problems": problems,
            "simplify": simplify, "claims": claims, "params_diff": params_vs_defaults(params_path),
            "lock": read_lock(root / "dvc.lock"), "timings": read_timings(root),
            "git": git_info(root), "hardware": hardware(),
            "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def run(root: Path | str = ".", params_path: Path | str = "params.yaml", cfg: ReportConfig | None = None
        ) -> dict[str, Any]:
    """Write ``reports/README.md`` and ``reports/summary.json`` under ``root``; return the context."""
    from tinyhelen.io import atomic_open, write_json

    ctx = collect(root, params_path, cfg)
    root = Path(root)
    with atomic_open(root / OUT_MD) as fh:
        fh.write(render(ctx))
    write_json(root / OUT_SUMMARY, summary(ctx["claims"]))
    for c in ctx["claims"]:
        log.info("%-26s %-28s %s", c.id, c.verdict, c.measured)
    return ctx


def claims_as_dicts(claims: list[Claim]) -> list[dict[str, Any]]:
    return [asdict(c) for c in claims]


__all__ = ["ReportConfig", "LayoutError", "VERDICTS", "INPUTS", "adapt_entropy", "adapt_exp1", "adapt_exp2",
           "adapt_exp3", "decide", "scale_of", "claims_entropy", "claims_exp1", "claims_exp2", "claims_exp3",
           "collect", "render", "summary", "run"]
