"""EXP2's params: ``instruct:`` (instruction data and tuning, ``InstructConfig`` with ``TuneConfig``) and
``exp2:`` (the report, ``Exp2Config``). Generation (``generate:``) and judging (``judge:``) have their sections
next to their code (``tinyhelen.exp2.generate``, ``tinyhelen.exp2.judge``)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinyhelen.config import Section
from tinyhelen.train.config import ComputeConfig, OptimConfig

SIDES = ("leaner", "ori")
SPLITS = ("train", "validation")
RECIPES = tuple(f"{p}-{t}" for p in SIDES for t in SIDES)  # "<pretrain side>-<tune side>"


class _Sub(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnlineFile(_Sub):
    """One downloadable instruction file: pinned URL (or local path / file:// URL) and its sha256."""

    url: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="expected sha256; null = not pinned: the stage fails unless "
                                           "instruct.online.allow_unpinned (then the digest seen is recorded "
                                           "in reports/instruct_data.json)")


class OnlineSources(_Sub):
    """``instruct.online``: the study's instruction data (needs the network unless the URLs are local)."""

    leaner: OnlineFile = OnlineFile(
        url="https://raw.githubusercontent.com/EmpathYang/TinyHelen/1aa4c03/data/leaner/instruction0000.jsonl")
    ori: OnlineFile = OnlineFile(
        url="https://huggingface.co/datasets/yahma/alpaca-cleaned/resolve/"
            "12567cabf869d7c92e573c7c783905fc160e9639/alpaca_data_cleaned.json")
    download_dir: str = "data/raw/instruct"
    allow_unpinned: bool = Field(False, description="accept a file without a configured sha256 (its digest is "
                                                    "logged and recorded); false: such a source fails")
    validation_fraction: float = Field(0.02, gt=0, lt=1)
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(3, ge=0)


class TuneConfig(OptimConfig, ComputeConfig):
    """``instruct.tune``: supervised fine-tuning hyper-parameters (CPU default: tiny, seconds per recipe).

    Optimiser and schedule as the study's HF Trainer defaults: AdamW (0.9, 0.999), no weight decay,
    ``warmup_steps`` then linear decay to 0."""

    steps: int = Field(200, ge=1, description="optimiser steps (the study: 1,000 of 512 x 1,024 tokens); at the "
                                              "CPU default 100 steps leave a model that answers only newlines")
    batch_size: int = Field(8, ge=1, description="sequences (packed blocks) per step")
    max_len: int = Field(192, ge=16, description="tokens per packed block (packing) or per example (the prompt "
                                                 "is cut first, keeping >= 1/2)")
    packing: bool = Field(True, description="true (the study): examples joined with <|endoftext|> and cut into "
                                            "blocks of max_len; false: one padded example per row")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (the study's released comparison: 5e-3)")
    lr_schedule: Literal["constant", "cosine", "linear"] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    weight_decay_scope: Literal["matrices", "all"] = "all"
    loss_on_prompt: bool = Field(True, description="true (the study): loss on every token; false: the prompt "
                                                   "tokens are masked from the loss")
    checkpoint_every: int = Field(50, ge=1, description="steps between saved checkpoints (each with the "
                                                        "validation loss)")
    eval_examples: int = Field(64, ge=1, description="validation examples for the loss at each checkpoint")
    threads: int = Field(1, ge=1, description="torch CPU threads; 1: tiny models gain little from more, "
                                              "several threads slow ~10x on busy cores")


class InstructConfig(Section):
    """``instruct:`` section of params.yaml."""

    source: Literal["code_pairs", "released"] = "code_pairs"
    template: Literal["study", "alpaca_v1"] = Field("study", description="instruction template (TEMPLATES) of "
                                                    "the training examples and the generation prompts")
    leaner_corpus: str = Field("data/leaner/corpus",
                               description="leaner shards <split>.jsonl for code_pairs")
    ori_corpus: str = "data/prepared/corpus/ori"
    max_examples: dict[str, int | None] = Field(default_factory=lambda: {"train": None, "validation": None})
    online: OnlineSources = OnlineSources()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _check(self) -> "InstructConfig":
        for k, v in self.max_examples.items():
            if k not in SPLITS:
                raise ValueError(f"max_examples.{k}: unknown split (known: {list(SPLITS)})")
            if v is not None and v <= 0:
                raise ValueError(f"max_examples.{k} must be positive or null")
        return self



class Exp2Config(Section):
    """``exp2:`` section of params.yaml (the report)."""

    n_boot: int = Field(1000, ge=100)
    selection_metric: str | None = Field(None, description="checkpoint-selection metric; null = the judge "
                                                           "backend's main metric (judge.BACKENDS)")
    recipes: list[str] = Field(default_factory=lambda: ["leaner-leaner", "leaner-ori", "ori-leaner", "ori-ori"])
    max_unscored_share: float = Field(0.5, ge=0, le=1, description="checkpoint selection ignores checkpoints "
                                      "with more answers without a score (empty / unjudged)")
