"""Where the report card's figures come from: git, hardware, params in effect, stage timings, and the
upstream inputs whose quality qualifies every figure (unverified data, LLM outputs and their provenance).

LLM dependencies (``LLM_INPUTS``): the leaner corpus is LLM output (``simplify``), so everything trained or
measured on it depends on the simplifying model; Leaner-GLUE (``leaner_glue``) on the rewriting model and
Leaner-Eval (``leaner_eval``) on the question generator; the EXP2 scores on the judge (``judge``). A figure
that depends on a stage whose provenance is flagged ``pipeline_check`` (a small local model) is marked
"pipeline check, not a result".
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from tinyhelen.config import ParamsError, read_yaml
from tinyhelen.params import SECTIONS, validate
from tinyhelen.results import read

log = logging.getLogger(__name__)

# inside the reports directory (``reports/``):
TIMINGS_DIR = "timings"   # timings/<stage>.json (git-ignored; not a DVC dep)
PREPARE = "prepare.json"
LLM_STAGES: dict[str, str] = {     # LLM stage -> its metrics file(s)
    "simplify": "simplify/*.json",
    "leaner_glue": "leaner_glue.json",
    "leaner_eval": "leaner_eval.json",
    "judge": "judge.json",
}
LLM_INPUTS: dict[str, tuple[str, ...]] = {
    "entropy": ("simplify",),
    "EXP1": ("simplify", "leaner_glue"),
    "EXP2": ("simplify", "leaner_eval", "judge"),
    "EXP3": ("simplify",),
}
PIPELINE_CHECK = "pipeline check, not a result"
UNVERIFIED = "unverified input"


# ------------------------------------------------------------------------------------ upstream inputs
class PrepareSummary(BaseModel):
    """``reports/prepare.json`` (the ``prepare`` stage's metrics): the fields the report card reads."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: str
    checksums_verified: int
    paired: int | None = None

    @property
    def verified(self) -> bool:
        return self.checksums_verified > 0


class LLMProvenance(BaseModel):
    """Which LLM produced a stage's outputs. ``pipeline_check``: the model is below the size at which its
    outputs count as results (a small local model run to check the pipeline)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str | None = None
    model: str | None = None
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    templates: Any = None
    decoding: Any = None
    pipeline_check: bool = False


class LLMStageMetrics(BaseModel):
    """The metrics of an LLM stage (simplify, leaner_glue, leaner_eval, judge): backend and provenance."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: str | None = None
    provenance: LLMProvenance | None = None

    @property
    def pipeline_check(self) -> bool:
        return bool(self.provenance and self.provenance.pipeline_check)




def read_prepare(reports: Path) -> tuple[PrepareSummary | None, str | None]:
    return read(PrepareSummary, reports / PREPARE, f"{reports.name}/{PREPARE}")


def read_llm_stages(reports: Path) -> tuple[dict[str, dict[str, LLMStageMetrics]], list[str]]:
    """``{stage: {file stem: metrics}}`` of every LLM stage present in ``reports``, and the problems found."""
    root = reports.parent
    out: dict[str, dict[str, LLMStageMetrics]] = {}
    problems = []
    for stage, pattern in LLM_STAGES.items():
        for p in sorted(reports.glob(pattern)):
            m, problem = read(LLMStageMetrics, p, str(p.relative_to(root)))
            if problem:
                problems.append(problem)
            elif m is not None:
                out.setdefault(stage, {})[p.stem] = m
    return out, problems


def llm_marks(experiment: str, llm: dict[str, dict[str, LLMStageMetrics]]) -> list[str]:
    """The LLM stages ``experiment`` depends on whose provenance says "pipeline check"."""
    flagged = [s for s in LLM_INPUTS.get(experiment, ()) if any(m.pipeline_check for m in llm.get(s, {}).values())]
    return [f"{PIPELINE_CHECK} ({', '.join(flagged)})"] if flagged else []


def provenance_line(files: dict[str, LLMStageMetrics]) -> str:
    """One LLM stage's metrics files as one line: backend, model, GGUF file and sha256, templates, decoding, flag."""
    seen: list[str] = []
    for m in files.values():
        p = m.provenance
        if p is None:
            txt = f"backend `{m.backend or 'unknown'}`" + (" (the study's released outputs)"
                                                           if m.backend == "replay" else "")
        else:
            bits = [f"backend `{p.backend or m.backend}`", p.model and f"model `{p.model}`",
                    p.gguf_file and f"GGUF `{p.gguf_file}`" + (f" sha256 `{p.gguf_sha256[:12]}...`"
                                                               if p.gguf_sha256 else ""),
                    p.templates and f"templates {json.dumps(p.templates, sort_keys=True)}",
                    p.decoding and f"decoding {json.dumps(p.decoding, sort_keys=True)}",
                    p.pipeline_check and f"**{PIPELINE_CHECK}**"]
            txt = ", ".join(b for b in bits if b)
        if txt not in seen:
            seen.append(txt)
    return "; ".join(seen)


# ------------------------------------------------------------------------------------ params
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _section_values(section: str, raw: dict[str, Any], params_path: Path | str) -> tuple[Any, Any]:
    """(params value, section default) of one registered section, both as plain JSON values."""
    value = validate(section, raw.get(section), params_path)
    model = type(value)
    scalar = "value" in model.model_fields and len(model.model_fields) == 1
    cur, default = value.model_dump(mode="json"), model().model_dump(mode="json")
    return (cur["value"], default["value"]) if scalar else (cur, default)


def resolved_params(params_path: Path | str) -> dict[str, Any]:
    """params.yaml with every registered section's defaults filled in (what the stages actually use);
    a section that fails validation or import is taken raw."""
    raw = read_yaml(params_path)
    out = dict(raw)
    for section in SECTIONS:
        try:
            out[section] = _section_values(section, raw, params_path)[0]
        except Exception:  # noqa: BLE001 - the card still renders; params_vs_defaults reports the problem
            continue
    return out


def params_vs_defaults(params_path: Path | str) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """``(rows, problems)``: every params key whose value differs from its section model's default
    (``tinyhelen.params.SECTIONS``), as ``(key, default, value)``; unregistered sections are listed whole."""
    raw = read_yaml(params_path)
    rows: list[tuple[str, Any, Any]] = []
    problems: list[str] = []
    for section in raw:
        if section not in SECTIONS:
            rows += [(k, "(no registered model)", v) for k, v in _flatten(raw[section], f"{section}.").items()]
            continue
        try:
            cur, default = _section_values(section, raw, params_path)
        except (ParamsError, ImportError, AttributeError, TypeError) as exc:
            problems.append(f"{section}: {exc}")
            continue
        fc, fd = _flatten(cur, f"{section}."), _flatten(default, f"{section}.")
        rows += [(k, fd.get(k, "<absent>"), fc.get(k, "<absent>")) for k in sorted(set(fc) | set(fd))
                 if fc.get(k, "<absent>") != fd.get(k, "<absent>")]
    return rows, problems


# ------------------------------------------------------------------------------------ run context
def git_info(root: Path) -> dict[str, Any]:
    """Commit of the workspace the report was made in (HEAD + a dirty flag: the report is written before the
    results are committed) and, inside ``dvc exp run``, the experiment name and baseline."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(dirty) if dirty is not None else None,
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
    out: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
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


def read_timings(reports: Path) -> dict[str, dict[str, Any]]:
    """``reports/timings/<stage>.json`` by stage: wall seconds, device, start, and the ``perf`` figures the
    stage recorded with ``tinyhelen.timing.record`` (throughput and other wall-clock figures)."""
    out = {}
    d = reports / TIMINGS_DIR
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable (%s)", p, exc)
            continue
        if isinstance(data, dict) and isinstance(data.get("wall_s"), (int, float)):
            out[str(data.get("stage", p.stem))] = data
    return out


def read_profile_runs(profiles: Path) -> list[dict[str, Any]]:
    """Every saved profile run under ``profiles`` (``results/``): its ``run.json`` plus the verdict of each claim from its
    ``summary.json`` (a run whose files cannot be read is listed with the problem)."""
    runs = []
    for meta_path in sorted(profiles.glob("*/run.json")):
        try:
            meta = json.loads(meta_path.read_text())
            summ = json.loads((meta_path.parent / "summary.json").read_text())
            meta["verdicts"] = {c: v.get("verdict") for c, v in summ.get("claims", {}).items()}
        except (OSError, ValueError) as exc:
            meta = {"profile": meta_path.parent.name, "verdicts": {"unreadable": str(exc)}}
        runs.append(meta)
    return runs
