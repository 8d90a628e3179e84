"""EXP1's params: the size preset of its models (``models:``, ``ModelsConfig``) and which architectures,
corpus sides and initialisations the matrix stages cover (``exp1:``, ``Exp1Config``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tinyhelen.config import Section


class ModelsConfig(Section):
    """``models:`` section: the size preset of every EXP1 model (tiny on CPU, paper on GPU)."""

    preset: Literal["tiny", "paper"] = "tiny"



def _registered_archs() -> list[str]:
    from tinyhelen.exp1.models import arch_names

    return arch_names()


def _default_archs() -> list[str]:
    from tinyhelen.exp1.models import default_arch_names

    return default_arch_names()


class Exp1Config(Section):
    """``exp1:`` section: which architectures the EXP1 matrix stages and the report cover."""

    archs: list[str] = Field(default_factory=_default_archs, min_length=1,
                             description="registered architectures (tinyhelen.exp1.models); default: the study's four "
                                         "(an option such as mamba1 by name)")
    sides: list[str] = Field(default_factory=lambda: ["leaner", "ori"], min_length=1,
                             description="pretraining corpus sides")
    inits: list[str] = Field(default_factory=lambda: ["leaner", "ori", "scratch"], min_length=1,
                             description="initialisations fine-tuned on Leaner-GLUE (the `glue` matrix): pretrained "
                                         "sides and `scratch`, the saved random initialisation")

    @field_validator("archs")
    @classmethod
    def _archs(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in _registered_archs()]
        if bad:
            raise ValueError(f"unknown archs {bad}; known: {', '.join(_registered_archs())}")
        return v

    @field_validator("sides")
    @classmethod
    def _sides(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ("leaner", "ori")]
        if bad:
            raise ValueError(f"unknown corpus sides {bad}; known: leaner, ori")
        return v

    @model_validator(mode="after")
    def _inits(self):
        bad = [i for i in self.inits if i not in (*self.sides, "scratch")]
        if bad:
            raise ValueError(f"inits {bad} are neither a pretrained side ({', '.join(self.sides)}) nor scratch")
        return self


INITS = ("leaner", "ori", "scratch")
