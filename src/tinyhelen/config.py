"""Typed, validated configuration read from ``params.yaml``.

Every study component defines its own pydantic section model next to its code (``DataConfig`` in
``tinyhelen.data``, ``EntropyConfig`` in ``tinyhelen.entropy`` ...) and registers it in ``SECTIONS``
below. A stage loads only the sections it declares in ``dvc.yaml``; ``python -m tinyhelen.config``
validates the whole file at once (``make repro`` runs it first), so a bad value fails immediately with
a message naming the key, e.g.::

    params.yaml: entropy.max_n: Input should be greater than or equal to 1 (got 0)
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_PARAMS = Path("params.yaml")

# section name in params.yaml -> "module:Class" of its model. Scalars (seed, curriculum) are models too.
SECTIONS: dict[str, str] = {  # in pipeline order (the order of params.yaml)
    "profile": "tinyhelen.config:ProfileParam",  # the scale this params set was composed for (conf/profile/)
    "seed": "tinyhelen.config:SeedParam",
    "data": "tinyhelen.data:DataConfig",
    "llm": "tinyhelen.llm.config:LLMConfig",  # the LLM layer: endpoint, cache, retries
    "simplify": "tinyhelen.simplify.config:SimplifyConfig",
    "leaner_glue": "tinyhelen.benchmarks.leaner_glue:LeanerGlueConfig",  # Leaner-GLUE
    "leaner_eval": "tinyhelen.benchmarks.leaner_eval:LeanerEvalConfig",  # Leaner-Eval
    "tokenizer": "tinyhelen.tokenizer:TokenizerConfig",
    "entropy": "tinyhelen.entropy:EntropyConfig",
    "models": "tinyhelen.models:ModelsConfig",  # EXP1: size preset
    "pretrain": "tinyhelen.pretrain:PretrainConfig",  # EXP1
    "glue": "tinyhelen.glue:GlueConfig",  # EXP1
    "exp1": "tinyhelen.exp1:Exp1Config",  # EXP1
    "instruct": "tinyhelen.instruct:InstructConfig",  # EXP2
    "generate": "tinyhelen.generate:GenerateConfig",  # EXP2
    "judge": "tinyhelen.judge:JudgeConfig",  # EXP2
    "exp2": "tinyhelen.judge:Exp2Config",  # EXP2
    "curriculum": "tinyhelen.curriculum.config:CurriculumParam",  # EXP3: the selected strategy
    "exp3": "tinyhelen.curriculum.config:Exp3Config",  # EXP3
    "report": "tinyhelen.report:ReportConfig",  # report card: verdict rules
}


class Section(BaseModel):
    """Base class for params sections: unknown keys are errors (catches typos such as ``max_ngram``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_subset(values: list[str], allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    """Field-validator helper: every value must be one of ``allowed`` (message lists the bad ones)."""
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; choose from {list(allowed)}")
    return values


class SeedParam(BaseModel):
    """The seed every stage derives its random streams from."""

    value: int = 1234


class ProfileParam(BaseModel):
    """The named scale (conf/profile/<name>.yaml) this params set was composed from:
    ``dvc exp run -S profile=cpu-study`` selects one (README: Scaling up)."""

    value: str = "default"


class ParamsError(ValueError):
    """A params.yaml value is missing or invalid; the message names the key."""


T = TypeVar("T", bound=BaseModel)


def read_yaml(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:  # pragma: no cover - message passthrough
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return raw


def _format_error(path: Path | str, section: str, exc: ValidationError, scalar: bool) -> str:
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        if scalar and parts and parts[0] == "value":
            parts = parts[1:]
        loc = ".".join([section, *parts])
        got = err.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{path}: {loc}: {err['msg']}{got_s}")
    return "\n".join(lines)


def model_for(section: str) -> type[BaseModel]:
    try:
        target = SECTIONS[section]
    except KeyError as exc:
        raise ParamsError(f"unknown params section {section!r}; known: {sorted(SECTIONS)}") from exc
    mod, cls = target.split(":")
    return getattr(importlib.import_module(mod), cls)


def validate_section(section: str, raw_value: Any, model: type[T] | None = None,
                     path: Path | str = DEFAULT_PARAMS) -> T:
    model = model or model_for(section)
    scalar = "value" in model.model_fields and len(model.model_fields) == 1
    if raw_value is None:
        value: Any = {}
    elif scalar:
        value = {"value": raw_value}  # scalar top-level keys (seed, curriculum)
    else:
        value = raw_value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ParamsError(_format_error(path, section, exc, scalar)) from None


def load_section(section: str, model: type[T] | None = None, path: Path | str = DEFAULT_PARAMS,
                 overrides: dict[str, Any] | None = None) -> T:
    """Validate one section of params.yaml (missing section -> the model's defaults)."""
    raw = read_yaml(path)
    value = raw.get(section)
    if overrides:
        value = {**(value or {}), **overrides}
    return validate_section(section, value, model, path)


def load_seed(path: Path | str = DEFAULT_PARAMS) -> int:
    return load_section("seed", SeedParam, path).value


def validate_all(path: Path | str = DEFAULT_PARAMS) -> dict[str, BaseModel]:
    """Validate every section; unknown top-level keys are errors. Collects all problems before failing."""
    raw = read_yaml(path)
    problems: list[str] = []
    out: dict[str, BaseModel] = {}
    for key in raw:
        if key not in SECTIONS:
            problems.append(f"{path}: {key}: unknown top-level key (known: {', '.join(sorted(SECTIONS))})")
    for section in SECTIONS:
        try:
            out[section] = validate_section(section, raw.get(section), path=path)
        except ParamsError as exc:
            problems.append(str(exc))
    if problems:
        raise ParamsError("\n".join(problems))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else DEFAULT_PARAMS
    try:
        sections = validate_all(path)
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{path}: OK ({len(sections)} sections valid)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
