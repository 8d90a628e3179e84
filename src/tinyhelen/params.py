"""The params registry: every section of ``params.yaml`` and the model that validates it.

``SECTIONS`` maps a section name to ``"module:Class"`` (imported on use, so reading one section loads one
study component). ``validate_all`` checks the whole file at once and collects every problem::

    python -m tinyhelen.params [params.yaml]     # exit 2 with one line per bad key

The report card and ``tinyhelen.profiles`` read every section through it: their stages depend on every
registered module (``tinyhelen.pipeline`` counts the registry's strings as imports).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tinyhelen.config import DEFAULT_PARAMS, ParamsError, read_yaml, validate_section

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
    "entropy": "tinyhelen.entropy.measure:EntropyConfig",
    "models": "tinyhelen.exp1.config:ModelsConfig",  # EXP1: size preset
    "pretrain": "tinyhelen.exp1.pretrain:PretrainConfig",  # EXP1
    "glue": "tinyhelen.exp1.glue:GlueConfig",  # EXP1
    "exp1": "tinyhelen.exp1.config:Exp1Config",  # EXP1
    "instruct": "tinyhelen.exp2.config:InstructConfig",  # EXP2
    "generate": "tinyhelen.exp2.generate:GenerateConfig",  # EXP2
    "judge": "tinyhelen.exp2.judge:JudgeConfig",  # EXP2
    "exp2": "tinyhelen.exp2.config:Exp2Config",  # EXP2
    "curriculum": "tinyhelen.exp3.config:CurriculumParam",  # EXP3: the selected strategy
    "exp3": "tinyhelen.exp3.config:Exp3Config",  # EXP3
    "report": "tinyhelen.report.claims:ReportConfig",  # report card: verdict rules
}


def model_for(section: str) -> type[BaseModel]:
    """The model class of a registered section (imported here)."""
    try:
        target = SECTIONS[section]
    except KeyError as exc:
        raise ParamsError(f"unknown params section {section!r}; known: {sorted(SECTIONS)}") from exc
    mod, cls = target.split(":")
    return getattr(importlib.import_module(mod), cls)


def validate(section: str, raw_value: Any, path: Path | str = DEFAULT_PARAMS) -> BaseModel:
    """One section's value validated by its registered model (``tinyhelen.config.validate_section``)."""
    return validate_section(section, raw_value, model_for(section), path)


def load(section: str, path: Path | str = DEFAULT_PARAMS) -> BaseModel:
    """One section of a params file, validated by its registered model (missing: the defaults)."""
    return validate(section, read_yaml(path).get(section), path)


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
            out[section] = validate(section, raw.get(section), path)
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
