"""Typed, validated configuration read from ``params.yaml``.

Every study component defines its own pydantic section model (a ``Section``) next to its code
(``DataConfig`` in ``tinyhelen.data``, ``EntropyConfig`` in ``tinyhelen.entropy.measure`` ...), registered in
``tinyhelen.params.SECTIONS``. A stage loads only the sections it declares in ``dvc.yaml``, with their models
(``load_section("entropy", EntropyConfig)``), so it depends on those models' code only; ``python -m
tinyhelen.params`` validates the whole file at once (``make repro`` runs it first), so a bad value fails
immediately with a message naming the key, e.g.::

    params.yaml: entropy.max_n: Input should be greater than or equal to 1 (got 0)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_PARAMS = Path("params.yaml")

class Section(BaseModel):
    """Base class for params sections: unknown keys are errors (catches typos such as ``max_ngram``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_subset(values: list[str], allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    """Field-validator helper: every value must be one of ``allowed`` (message lists the bad ones)."""
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; choose from {list(allowed)}")
    return values


def check_rates(values: list[float]) -> list[float]:
    """Field-validator helper: a grid of learning rates, each positive, none twice."""
    if any(x <= 0 for x in values) or len(set(values)) != len(values):
        raise ValueError(f"learning rates must be positive and distinct (got {values})")
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


def validate_section(section: str, raw_value: Any, model: type[T], path: Path | str = DEFAULT_PARAMS) -> T:
    """``raw_value`` (the section's value in params.yaml; None: absent) as a ``model`` instance."""
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


def load_section(section: str, model: type[T], path: Path | str = DEFAULT_PARAMS,
                 overrides: dict[str, Any] | None = None) -> T:
    """Validate one section of params.yaml (missing section -> the model's defaults)."""
    raw = read_yaml(path)
    value = raw.get(section)
    if overrides:
        value = {**(value or {}), **overrides}
    return validate_section(section, value, model, path)


def load_seed(path: Path | str = DEFAULT_PARAMS) -> int:
    return load_section("seed", SeedParam, path).value
