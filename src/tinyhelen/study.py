"""The study's numbers, from its released code (EmpathYang/TinyHelen @ 1aa4c03, collected in the
repository's study-protocol notes): sizes, objectives, learning rates, genres, GLUE tasks and epochs, the
EXP3 runs, proxy shape and claim, the instruction template.

A leaf module: the training code reads its defaults' study values here, and ``tinyhelen.report.protocol`` (the
report card's "Protocol vs study" table) compares the params in effect against them. ``STUDY_SCALE`` holds
the study's size of each experiment (tokens per run, optimiser steps, non-embedding parameters): the report
qualifies every verdict with the fraction of it that was actually run (``scale_fractions``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyScale:
    """The study's size of one experiment's training runs."""

    tokens_per_run: int
    steps: int
    non_embedding_params: float


STUDY_NON_EMBEDDING: dict[str, float] = {"llama": 14.46e6, "bert": 14.20e6, "xlnet": 14.75e6, "mamba": 14.61e6}
STUDY_PROXY_NON_EMBEDDING = 1.05e6
STUDY_OBJECTIVES: dict[str, str] = {"llama": "clm", "bert": "mlm", "xlnet": "plm", "mamba": "clm"}  # pretraining
STUDY_PRETRAIN_LRS: tuple[float, ...] = (5e-6, 5e-5, 5e-4, 1e-3, 5e-3, 5e-2)
STUDY_GLUE_LRS: tuple[float, ...] = (5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)
STUDY_SCALE: dict[str, StudyScale] = {
    "EXP1": StudyScale(512 * 1024 * 10_000, 10_000, sum(STUDY_NON_EMBEDDING.values()) / len(STUDY_NON_EMBEDDING)),
    "EXP2": StudyScale(512 * 1024 * 1_000, 1_000, STUDY_NON_EMBEDDING["llama"]),
    "EXP3": StudyScale(512 * 1024 * 2_500, 2_500, STUDY_PROXY_NON_EMBEDDING),
}
STUDY_GENRES: tuple[str, ...] = ("book", "conversation", "textbook", "web", "wiki")  # natural-language genres
STUDY_GLUE_TASKS: tuple[str, ...] = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")  # no WNLI
STUDY_GLUE_EPOCHS = {"cola": 30, "sst2": 3, "mrpc": 30, "qqp": 3, "stsb": 30, "mnli": 3, "qnli": 3, "rte": 50}
# the study's EXP3 runs: four orderings and the two full-data baselines
STUDY_EXP3_STRATEGIES: tuple[str, ...] = ("random", "sentlen", "selfloss", "lmloss", "full-repeated", "full-random")
# the study's proxy (llama-2K-1M) as LLaMA config values: d=128, 4 layers, 4 heads, FFN 512
STUDY_PROXY_SHAPE: dict[str, int] = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=4, intermediate_size=512)
# the study's Mamba block (mamba-ssm's Mamba2 mixer, then RMSNorm + GatedMLP), as our classes name it: transformers'
# Mamba2Mixer is mamba-ssm's Mamba2 mixer, tinyhelen.exp1.models.mamba.GatedMLP is mamba-ssm's GatedMLP
STUDY_MAMBA_BLOCK = {"mixer": "Mamba2Mixer", "mlp": "GatedMLP", "d_model": 768, "layers": 2, "mlp_hidden": 1536}
STUDY_EXP3_CLAIM = ("lmloss", 0.20)  # the lmloss curriculum reaches the baseline's loss with ~20% fewer steps, data
# the released prompts/templates/instruction_template.txt up to the response; {input}: the instruction (+ "\n" + input)
STUDY_TEMPLATE = "### TASK INPUT:\n{input}\n\n### RESPONSE:\n"


def scale_fractions(experiment: str, tokens_per_run: float | None, steps: float | None,
                    non_embedding_params: float | None) -> dict[str, float | None]:
    """Ours / the study's for tokens per run, steps and model size (None where not known)."""
    s = STUDY_SCALE[experiment]
    div = lambda a, b: None if a is None else a / b  # noqa: E731
    return {"tokens": div(tokens_per_run, s.tokens_per_run), "steps": div(steps, s.steps),
            "params": div(non_embedding_params, s.non_embedding_params)}
