"""Params of EXP3 (curriculum learning with a ~1M-parameter proxy): ``curriculum`` and ``exp3``.

``curriculum`` (top-level scalar) names the *selected* strategy: the one whose figures are the headline
metrics of ``reports/exp3.json`` and whose checkpoints are scored on Leaner-GLUE. Every strategy listed
in ``exp3.strategies`` is trained (x every seed in ``exp3.seeds``) by the ``exp3_train`` matrix stage, so
the comparison table always holds all of them; ``dvc exp run -S curriculum=sentlen`` re-runs only the
stages that read ``curriculum`` (``exp3_report`` and ``exp3_glue``).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from tinyhelen.config import Section
from tinyhelen.exp3.pacing import checkpoint_steps
from tinyhelen.exp3.scorers import check_strategy
from tinyhelen.study import STUDY_EXP3_STRATEGIES, STUDY_GENRES, STUDY_PROXY_SHAPE
from tinyhelen.train.config import ComputeConfig, OptimConfig

# a registered difficulty scorer (``tinyhelen.exp3.scorers``) or one of the two full-data baselines
Strategy = Annotated[str, AfterValidator(check_strategy)]
PACINGS: tuple[str, ...] = ("iterative", "linear", "root", "step")


class CurriculumParam(BaseModel):
    """Top-level scalar ``curriculum``: the selected strategy (headline metrics, GLUE checkpoints)."""

    value: Strategy = "lmloss"


class UnitsConfig(Section):
    """``exp3.units``: how documents become curriculum units and which go to the proxy / reference LM."""

    unit: Literal["document", "chunk"] = Field("document", description="document: one unit per document (the "
                                                                       "study); chunk: documents longer than "
                                                                       "unit_max_tokens are cut into chunks")
    unit_max_tokens: int = Field(256, ge=8, description="unit: chunk: longer documents are cut into chunks of "
                                                        "this many BPE tokens; each chunk is a unit")
    pool_tokens: int | None = Field(150_000, ge=1, description="BPE tokens of training units in the proxy's "
                                                               "pool, split over the genres by genre_shares "
                                                               "(documents in hash order); null = all")
    reference_tokens: int = Field(100_000, ge=0, description="BPE tokens of held-out training documents "
                                                             "(never in the pool) for the reference LM, split "
                                                             "over the genres like the pool")
    val_tokens: int = Field(10_240, ge=64, description="validation tokens (fixed, held out) for the loss "
                                                       "curve, split over the genres like the pool; each "
                                                       "genre's loss is logged")
    genres: list[str] | None = Field(default_factory=lambda: list(STUDY_GENRES),
                                     description="genres used (the study: the five natural-language ones); "
                                                 "null = all")
    genre_shares: dict[str, float] | None = Field(None, description="share of each genre in the pool, the "
                                                                    "reference data and the validation set; "
                                                                    "null = its share of the training "
                                                                    "corpus's words (the corpus's mix)")
    salt: str = Field("exp3", description="salt of the hash order that assigns documents to roles")

    @field_validator("genre_shares")
    @classmethod
    def _shares(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (not v or any(x < 0 for x in v.values()) or not sum(v.values()) > 0):
            raise ValueError(f"genre_shares must be non-negative with a positive sum (got {v})")
        return v

    @model_validator(mode="after")
    def _shares_cover_genres(self) -> "UnitsConfig":
        if self.genre_shares is not None and self.genres is not None:
            extra = sorted(set(self.genre_shares) - set(self.genres))
            if extra:
                raise ValueError(f"genre_shares names genres that are not used: {extra} (genres: {self.genres})")
        return self


class ModelConfig(Section):
    """Model of the proxy / reference LM: a causal-LM architecture of ``tinyhelen.exp1.models`` at a size preset."""

    arch: str = "llama"
    preset: Literal["tiny", "paper"] = "tiny"
    shape: dict[str, Any] = Field(default_factory=lambda: dict(STUDY_PROXY_SHAPE),
                                  description="config values set on top of the preset (default: the study's "
                                              "proxy shape); {} = the preset as it is")

    @field_validator("arch")
    @classmethod
    def _causal(cls, v: str) -> str:
        from tinyhelen.exp1.models import arch_names, get

        if v not in arch_names() or get(v).objective != "clm":
            causal = [a for a in arch_names() if get(a).objective == "clm"]
            raise ValueError(f"{v!r} is not a registered causal-LM architecture; known: {', '.join(causal)}")
        return v


class ProxyOptimConfig(OptimConfig):
    """Optimiser defaults of the EXP3 runs: the study's. Its curriculum script passes no optimiser or schedule
    flag to the Hugging Face Trainer, so the Trainer's defaults apply: AdamW with betas (0.9, 0.999), eps 1e-8,
    no weight decay, gradient clipping at 1.0, linear warm-up then linear decay to 0 at the last step."""

    weight_decay: float = Field(0.0, ge=0, description="the study: 0 (the Trainer's default)")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "linear", description="after warm-up (the study: linear decay to 0, the Trainer's default)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr / peak lr (the study: 0)")
    warmup_steps: int = Field(8, ge=0, description="the study: 100 of 2,500 steps (4%); the CPU default keeps "
                                                   "the share (8 of 200)")


class ReferenceLMConfig(ProxyOptimConfig):
    """``exp3.reference_lm``: the LM trained on held-out data whose per-unit loss is ``lmloss``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    steps: int = Field(100, ge=1)
    warmup_steps: int = Field(4, ge=0, description="4% of its steps, as the proxy's")
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0


class TrainConfig(ProxyOptimConfig):
    """``exp3.train``: the proxy's training run (identical for every strategy: same token budget)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    max_steps: int = Field(200, ge=1, description="token budget = max_steps * batch_size * seq_len")
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(1e-2, gt=0)
    eval_every: int = Field(20, ge=1, description="validation loss every N steps (pool updates happen here)")
    pacing: Literal["iterative", "linear", "root", "step"] = "iterative"
    start_fraction: float = Field(0.05, gt=0, le=1, description="initial pool: easiest share of units")
    increment: float = Field(0.05, gt=0, le=1, description="share of units added per expansion")
    patience: int = Field(1, ge=1, description="iterative pacing: expand after this many evaluations "
                                                "without improvement of the best validation loss")
    min_delta: float = Field(0.0, ge=0, description="an improvement must beat the best loss by this much")
    full_at: float = Field(0.8, gt=0, le=1, description="linear/root/step pacing: share of max_steps at "
                                                        "which the pool reaches 100%")
    selfloss_candidates: int | None = Field(None, ge=1, description="online scorers: null = every unit outside "
                                                                    "the pool is scored by the current model at "
                                                                    "each expansion (the study); N = a random "
                                                                    "sample of N of them")
    checkpoints: int = Field(2, ge=0, description="model checkpoints kept for Leaner-GLUE, evenly spaced: step "
                                                  "k * max_steps / checkpoints rounded down to an evaluation "
                                                  "step (the study: 5, every 500 of 2,500 steps)")
    checkpoint_steps: list[int] | None = Field(None, description="explicit checkpoint steps (evaluation steps); "
                                                                 "null = the `checkpoints` evenly spaced ones")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        bad = [s for s in self.checkpoint_steps or []
               if not 0 < s <= self.max_steps or (s % self.eval_every and s != self.max_steps)]
        if bad:
            raise ValueError(f"checkpoint_steps {bad} must be evaluation steps: multiples of eval_every "
                             f"({self.eval_every}) in 1..max_steps ({self.max_steps}), or max_steps")
        return self

    @property
    def saved_steps(self) -> list[int]:
        """The steps whose model is saved (and scored on Leaner-GLUE)."""
        if self.checkpoint_steps is not None:
            return sorted(self.checkpoint_steps)
        return checkpoint_steps(self.max_steps, self.eval_every, self.checkpoints)


class ReportConfig(Section):
    """``exp3.report``: the baselines every strategy is compared against ("reaches the baseline's performance":
    the target definitions are pre-registered in ``tinyhelen.exp3.targets``, not params)."""

    baselines: list[Strategy] = Field(default_factory=lambda: ["full-random", "random"],
                                      description="runs that set the targets: the study's full-data baseline "
                                                  "and the iterative random control (same pacing, random "
                                                  "order); the first is the headline one")

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"baselines must be a non-empty list without repeats (got {v})")
        return v


class GlueConfig(Section):
    """``exp3.glue``: Leaner-GLUE of every strategy's checkpoints at ``exp3.train.checkpoint_steps`` and of the
    untrained (random-init) proxy, fine-tuned with EXP1's ``tinyhelen.exp1.glue`` under the ``glue:`` protocol;
    ``tasks`` / ``seeds`` narrow that protocol for EXP3 (null = the ``glue:`` value)."""

    enabled: bool = Field(True, description="fine-tune and score the checkpoints (tens of seconds per checkpoint "
                                            "on CPU at the default)")
    seed: int = 0
    tasks: list[str] | None = Field(default_factory=lambda: ["mrpc"],
                                    description="GLUE tasks of the proxy evaluations; null = glue.tasks")
    seeds: list[int] | None = Field(default_factory=lambda: [0], description="fine-tuning seeds; null = glue.seeds")
    untrained: bool = Field(True, description="also score the random-init proxy (step 0) of each training seed")


class Exp3Config(ComputeConfig):
    """``exp3:`` section of params.yaml (its compute keys, e.g. ``threads``, serve every EXP3 stage)."""

    strategies: list[Strategy] = Field(default_factory=lambda: list(STUDY_EXP3_STRATEGIES))
    seeds: list[int] = Field(default_factory=lambda: [0], description="one run per strategy and seed (the CPU "
                             "default: 1; a verdict over seeds needs 5: report.verdicts.MIN_SEEDS)")
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
        if not set(self.report.baselines) & set(self.strategies):
            raise ValueError(f"report.baselines {self.report.baselines}: none of them is among the strategies "
                             f"{self.strategies}")
        return self
