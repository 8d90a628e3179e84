"""Params of EXP3 (curriculum learning with a ~1M-parameter proxy): ``curriculum`` and ``exp3``.

``curriculum`` (top-level scalar) names the *selected* strategy: the one whose figures are the headline
metrics of ``reports/exp3.json`` and whose checkpoints are scored on Leaner-GLUE. Every strategy listed
in ``exp3.strategies`` is trained (x every seed in ``exp3.seeds``) by the ``exp3_train`` matrix stage, so
the comparison table always holds all of them; ``dvc exp run -S curriculum=sentlen`` re-runs only the
stages that read ``curriculum`` (``exp3_report`` and ``exp3_glue``).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from tinyhelen.config import Section
from tinyhelen.curriculum.scorers import check_strategy, strategy_names
from tinyhelen.train.config import ComputeConfig, OptimConfig

# a registered difficulty scorer (``tinyhelen.curriculum.scorers``) or one of the two full-data baselines
Strategy = Annotated[str, AfterValidator(check_strategy)]
PACINGS: tuple[str, ...] = ("iterative", "linear", "root", "step")


class CurriculumParam(BaseModel):
    """Top-level scalar ``curriculum``: the selected strategy (headline metrics, GLUE checkpoints)."""

    value: Strategy = "lmloss"


class UnitsConfig(Section):
    """``exp3.units``: how documents become curriculum units and which go to the proxy / reference LM."""

    unit_max_tokens: int = Field(256, ge=8, description="longer documents are cut into chunks of this many "
                                                        "BPE tokens; each chunk is a unit")
    pool_tokens: int | None = Field(150_000, ge=1, description="BPE tokens of training units in the proxy's "
                                                               "pool (whole documents, hash order); null = all")
    reference_tokens: int = Field(100_000, ge=0, description="BPE tokens of held-out training documents "
                                                             "(never in the pool) for the reference LM")
    val_tokens: int = Field(4096, ge=64, description="validation tokens (packed, fixed) for the loss curve")
    genres: list[str] | None = Field(None, description="genres used; null = all")
    salt: str = Field("exp3", description="salt of the hash order that assigns documents to roles")


class ModelConfig(Section):
    """Model of the proxy / reference LM: a causal-LM architecture of ``tinyhelen.models`` at a size preset."""

    arch: str = "llama"
    preset: Literal["tiny", "paper"] = "tiny"

    @field_validator("arch")
    @classmethod
    def _causal(cls, v: str) -> str:
        from tinyhelen.models import arch_names, get

        if v not in arch_names() or get(v).objective != "clm":
            causal = [a for a in arch_names() if get(a).objective == "clm"]
            raise ValueError(f"{v!r} is not a registered causal-LM architecture; known: {', '.join(causal)}")
        return v


class ProxyOptimConfig(OptimConfig):
    """Optimiser defaults of the EXP3 runs: weight decay on every parameter, AdamW betas (0.9, 0.95)."""

    weight_decay_scope: Literal["matrices", "all"] = "all"
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="constant: plateaus come from the data, not the LR")
    warmup_steps: int = Field(10, ge=0)


class ReferenceLMConfig(ProxyOptimConfig):
    """``exp3.reference_lm``: the LM trained on held-out data whose per-unit loss is ``lmloss``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    steps: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0


class TrainConfig(ProxyOptimConfig):
    """``exp3.train``: the proxy's training run (identical for every strategy: same token budget)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    max_steps: int = Field(120, ge=1, description="token budget = max_steps * batch_size * seq_len")
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(2e-3, gt=0)
    eval_every: int = Field(6, ge=1, description="validation loss every N steps (pool updates happen here)")
    pacing: Literal["iterative", "linear", "root", "step"] = "iterative"
    start_fraction: float = Field(0.05, gt=0, le=1, description="initial pool: easiest share of units")
    increment: float = Field(0.05, gt=0, le=1, description="share of units added per expansion")
    patience: int = Field(2, ge=1, description="iterative pacing: expand after this many evaluations "
                                                "without improvement of the best validation loss")
    min_delta: float = Field(0.0, ge=0, description="an improvement must beat the best loss by this much")
    full_at: float = Field(0.8, gt=0, le=1, description="linear/root/step pacing: share of max_steps at "
                                                        "which the pool reaches 100%")
    selfloss_candidates: int = Field(512, ge=1, description="online scorers: units (random sample of those "
                                                            "not in the pool) scored by the current model "
                                                            "per expansion")
    checkpoint_steps: list[int] = Field(default_factory=list, description="steps at which model checkpoints "
                                                                          "are saved (GLUE of the proxy)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        bad = [s for s in self.checkpoint_steps
               if not 0 < s <= self.max_steps or (s % self.eval_every and s != self.max_steps)]
        if bad:
            raise ValueError(f"checkpoint_steps {bad} must be evaluation steps: multiples of eval_every "
                             f"({self.eval_every}) in 1..max_steps ({self.max_steps}), or max_steps")
        return self


class ReportConfig(Section):
    """``exp3.report``: how the target validation loss of "steps to reach the target" is set."""

    target_loss: float | None = Field(None, gt=0, description="fixed target; null = derived from full-random")
    target_from: Strategy = Field("full-random", description="reference strategy of the derived target and "
                                                             "of the reductions")


class GlueConfig(Section):
    """``exp3.glue``: Leaner-GLUE of the selected strategy's checkpoints (reuses EXP1's ``tinyhelen.glue``)."""

    enabled: bool = Field(True, description="fine-tune and score the checkpoints (minutes per checkpoint on CPU)")
    seed: int = 0


class Exp3Config(ComputeConfig):
    """``exp3:`` section of params.yaml (its compute keys, e.g. ``threads``, serve every EXP3 stage)."""

    strategies: list[Strategy] = Field(default_factory=strategy_names)
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    scorer_seed: int = Field(0, description="seed of the random scorer's scores")
    units: UnitsConfig = Field(default_factory=UnitsConfig)
    reference_lm: ReferenceLMConfig = Field(default_factory=ReferenceLMConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    glue: GlueConfig = Field(default_factory=GlueConfig)

    @model_validator(mode="after")
    def _check(self) -> "Exp3Config":
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies must be a non-empty list without repeats (got {self.strategies})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list without repeats (got {self.seeds})")
        return self
