"""The study's protocol, declared once: every knob, the study's value, and why ours may differ.

Source: the authors' released code and configs (EmpathYang/TinyHelen @ 1aa4c03), collected in the
repository's study-protocol notes. Each ``Knob`` names where our value comes from (a ``params.yaml`` key,
resolved with the section defaults, or a function of the params and the typed experiment results), the
study's value, and, for when they differ, the reason category and a one-line explanation. The report card
builds its "Protocol vs study" table from ``KNOBS`` with ``compare``, so a changed default or a new run
shows up there without editing the card.

The study's values themselves live in ``tinyhelen.study`` (a leaf module the training code reads too), so
editing this table reruns only the report card.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tinyhelen.report import in_effect
from tinyhelen.study import (
    STUDY_EXP3_STRATEGIES, STUDY_GENRES, STUDY_GLUE_EPOCHS, STUDY_GLUE_LRS, STUDY_GLUE_TASKS, STUDY_MAMBA_BLOCK,
    STUDY_NON_EMBEDDING, STUDY_OBJECTIVES, STUDY_PRETRAIN_LRS, STUDY_PROXY_NON_EMBEDDING, STUDY_SCALE,
    STUDY_TEMPLATE,
)

Reason = Literal["data absent", "compute", "choice"]
DATA_ABSENT: Reason = "data absent"
COMPUTE: Reason = "compute"
CHOICE: Reason = "choice"
MISSING = object()


class Inputs:
    """What a knob's value is read from: the resolved params (nested dict) and the typed results by name."""

    def __init__(self, params: dict[str, Any], results: dict[str, Any] | None = None) -> None:
        self.params = params
        self.results = results or {}

    def get(self, key: str, default: Any = MISSING) -> Any:
        node: Any = self.params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is MISSING:
                    raise KeyError(f"params key {key!r} not found")
                return default
            node = node[part]
        return node

    def result(self, name: str) -> Any:
        return self.results.get(name)


def _equal(ours: Any, study: Any) -> bool:
    if isinstance(ours, float) or isinstance(study, float):
        return isinstance(ours, (int, float)) and math.isclose(float(ours), float(study), rel_tol=1e-9)
    return ours == study


def same_set(ours: Any, study: Any) -> bool:
    return set(ours or ()) == set(study)


def within(rel: float) -> Callable[[Any, Any], bool]:
    """Numbers within a relative tolerance; dicts (e.g. per architecture): every key present on both sides."""

    def same(ours: Any, study: Any) -> bool:
        if isinstance(study, dict):
            both = set(study) & set(ours) if isinstance(ours, dict) else set()
            return bool(both) and all(same(ours[k], study[k]) for k in both)
        return isinstance(ours, (int, float)) and abs(ours - study) <= rel * abs(study)
    return same


@dataclass(frozen=True)
class Knob:
    """One protocol setting: ``ours`` is a dotted params key or a function of ``Inputs``."""

    experiment: str
    name: str
    study: Any
    ours: str | Callable[[Inputs], Any]
    reason: Reason
    why: str
    same: Callable[[Any, Any], bool] = field(default=_equal)
    show_study: str | None = None  # how the study's value is written when it is not a plain value
    show_ours: Callable[[Any], str] = field(default=lambda v: fmt(v))

    def value(self, x: Inputs) -> Any:
        return x.get(self.ours) if isinstance(self.ours, str) else self.ours(x)


@dataclass(frozen=True)
class Row:
    experiment: str
    knob: str
    study: str
    ours: str
    differs: bool
    reason: str
    why: str


def fmt(v: Any) -> str:
    """A value as the protocol table writes it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 or abs(v) >= 1e6 else f"{v:g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def _params_m(n: Any) -> str:
    """Parameter counts in millions (a dict: per architecture); anything else as ``fmt`` writes it."""
    if isinstance(n, dict):
        return ", ".join(f"{a} {_params_m(v)}" for a, v in n.items())
    return f"{n / 1e6:.2f}M" if isinstance(n, (int, float)) else fmt(n)


# ------------------------------------------------------------------------------------ value functions
def _listed(key: str) -> Callable[[Inputs], list]:
    def get(x: Inputs) -> list:
        v = x.get(key)
        return v if isinstance(v, list) else [v]
    return get


def _exp1_sizes(x: Inputs) -> Any:
    res = x.result("exp1")
    if res is not None and res.pretrain:
        by: dict[str, list[int]] = {}
        for r in res.pretrain:
            by.setdefault(r.arch, []).append(r.non_embedding_params)
        return {a: sum(v) / len(v) for a, v in by.items()}
    return f"preset {x.get('models.preset')}"


def _exp1_tokens(x: Inputs) -> int:
    res = x.result("exp1")
    return res.tokens_per_run if res is not None else x.get("pretrain.token_budget")


def _exp1_steps(x: Inputs) -> int:
    res = x.result("exp1")
    if res is not None and res.pretrain:
        return max(r.steps for r in res.pretrain)
    return x.get("pretrain.token_budget") // (x.get("pretrain.batch_size") * x.get("pretrain.seq_len"))


def _schedule(section: str, model: str) -> Callable[[Inputs], str]:
    """The shape of the learning rate the training loop computes for a params section (``in_effect.schedule``)."""

    def get(x: Inputs) -> str:
        module, name = model.split(":")
        return in_effect.schedule(getattr(importlib.import_module(module), name).model_validate(x.get(section)))
    return get


def _mamba(block: dict[str, Any]) -> str:
    return (f"{block['mixer']} mixer + {block['mlp']} (d={block['d_model']}, {block['layers']} layers, MLP "
            f"{fmt(block['mlp_hidden'])})")


def _finetune_from(x: Inputs) -> str:
    res = x.result("exp1")
    steps = sorted({r.best_step for r in res.pretrain if r.best_step is not None}) if res is not None else []
    return "lowest validation loss of the evaluated steps" + (f" (steps {fmt(steps)})" if steps else "")


def _exp2_template(x: Inputs) -> str | None:
    res = x.result("exp2")
    return None if res is None else res.template


def _tune_checkpoints(x: Inputs) -> int:
    every, steps = x.get("instruct.tune.checkpoint_every"), x.get("instruct.tune.steps")
    return len(set(range(every, steps + 1, every)) | {steps})


def _decoding(x: Inputs) -> str:
    d = x.get("generate.decoding")
    parts = ["greedy" if d.get("num_beams", 1) == 1 else f"beam {d['num_beams']}"]
    if d.get("repetition_penalty", 1.0) != 1.0:
        parts.append(f"repetition_penalty {fmt(d['repetition_penalty'])}")
    if d.get("no_repeat_ngram_size", 0):
        parts.append(f"no_repeat_ngram_size {d['no_repeat_ngram_size']}")
    if d.get("suppress_leading_whitespace"):
        parts.append("leading whitespace suppressed")
    if d.get("stop_at_template"):
        parts.append("cut at a template header")
    return ", ".join(parts)


def _judge(x: Inputs) -> str:
    backend = x.get("judge.backend")
    if backend == "proxy":
        return "proxy metrics (no LLM judge)"
    return f"{backend}: {x.get('judge.llm.model', None) or x.get('llm.model')}"


def _proxy_size(x: Inputs) -> Any:
    res = x.result("exp3")
    if res is not None and res.non_embedding_params:
        return res.non_embedding_params
    return f"preset {x.get('exp3.train.model.preset')}"


def _pool_growth(x: Inputs) -> str:
    t = "exp3.train."
    return (f"{x.get(t + 'pacing')}: start {fmt(x.get(t + 'start_fraction'))}, "
            f"+{fmt(x.get(t + 'increment'))} per expansion")


def _unit(x: Inputs) -> str:
    unit = x.get("exp3.units.unit", "chunk")
    return "document" if unit == "document" else \
        f"document chunks of at most {x.get('exp3.units.unit_max_tokens')} BPE tokens"


def _selfloss(x: Inputs) -> str:
    n = x.get("exp3.train.selfloss_candidates", None)
    return "every unit outside the pool" if n is None else f"a random sample of {n:,} units outside the pool"


def _exp3_checkpoints(x: Inputs) -> list[int]:
    from tinyhelen.exp3.pacing import checkpoint_steps

    t = "exp3.train."
    explicit = x.get(t + "checkpoint_steps", None)
    return sorted(explicit) if explicit is not None else checkpoint_steps(
        x.get(t + "max_steps"), x.get(t + "eval_every"), x.get(t + "checkpoints"))


def _exp3_glue(x: Inputs) -> str:
    if not x.get("exp3.glue.enabled"):
        return "none"
    return "all runs" + (" + the random-init proxy" if x.get("exp3.glue.untrained", False) else "")


def _pool(x: Inputs) -> Any:
    n = x.get("exp3.units.pool_tokens")
    return "all training documents" if n is None else f"{n:,} BPE tokens"


def _exp3_validation(x: Inputs) -> str:
    genres = ", ".join(sorted(x.get("exp3.units.genres") or ["all genres"]))
    return f"{x.get('exp3.units.val_tokens'):,} held-out tokens, stratified over {genres}; per-genre losses logged"


def _genre_mix(x: Inputs) -> str:
    shares = x.get("exp3.units.genre_shares", None)
    return "the training corpus's mix" if shares is None else fmt(shares)


def _definitions(x: Inputs) -> str:
    from tinyhelen.exp3.targets import DEFINITIONS

    return ", ".join(DEFINITIONS) + " (they must agree)"


def _seq(batch: str, seq: str) -> Callable[[Inputs], str]:
    return lambda x: f"{x.get(batch)} x {x.get(seq)} tokens"


# ------------------------------------------------------------------------------------ the protocol
KNOBS: tuple[Knob, ...] = (
    # data and tokenizer
    Knob("data", "pretraining genres", sorted(STUDY_GENRES), lambda x: sorted(x.get("data.genres")), CHOICE,
         "code and math are kept by default; math is identical on both sides", same_set),
    Knob("data", "corpus tier", "100M", "data.tier", DATA_ABSENT,
         "the 100M tier is not in the local release copy (-S data.tier=100M downloads it)",
         show_study="100M setting (10M + 100M train)"),
    Knob("data", "training split", ["train"], "data.splits.train", DATA_ABSENT,
         "the release has no web train file: train = released train + validation"),
    Knob("tokenizer", "tokenizer shared by both corpora", True, "tokenizer.shared", CHOICE,
         "one BPE per side: BPE entropies and token budgets are in different units per side"),
    Knob("tokenizer", "vocabulary", 2000, "tokenizer.vocab_size", CHOICE, "a different vocabulary size"),
    # EXP1 pretraining
    Knob("EXP1", "model size (non-embedding)", STUDY_NON_EMBEDDING, _exp1_sizes, COMPUTE,
         "the tiny preset (~1M) runs on CPU in minutes", within(0.10),
         show_study=_params_m(STUDY_NON_EMBEDDING), show_ours=_params_m),
    Knob("EXP1", "tokens per run", STUDY_SCALE["EXP1"].tokens_per_run, _exp1_tokens, COMPUTE,
         "CPU budget", show_study="5.24B (512 x 1,024 x 10,000)"),
    Knob("EXP1", "optimiser steps", STUDY_SCALE["EXP1"].steps, _exp1_steps, COMPUTE, "CPU budget"),
    Knob("EXP1", "batch (sequences)", 512, "pretrain.batch_size", COMPUTE, "CPU memory and time"),
    Knob("EXP1", "sequence length", 1024, "pretrain.seq_len", COMPUTE, "CPU time",
         show_study="1,024 (XLNet 512)"),
    Knob("EXP1", "learning rates swept", list(STUDY_PRETRAIN_LRS), _listed("pretrain.lr"), COMPUTE,
         "CPU time: every rate is one more pretraining run per architecture and corpus"),
    Knob("EXP1", "LR schedule", "linear to 0 x lr", _schedule("pretrain", "tinyhelen.exp1.pretrain:PretrainConfig"),
         CHOICE, "a different decay"),
    Knob("EXP1", "pretraining genres", sorted(STUDY_GENRES), lambda x: sorted(x.get("pretrain.genres") or ["all"]),
         CHOICE, "all genres (incl. code and math) are pretrained on", same_set),
    Knob("EXP1", "architectures", sorted(STUDY_OBJECTIVES), lambda x: sorted(x.get("exp1.archs")), CHOICE,
         "a different set of architectures", same_set),
    Knob("EXP1", "LLaMA embeddings (paper preset)", "untied, RoPE theta 500000", in_effect.llama_embeddings, CHOICE,
         "a different LLaMA configuration"),
    Knob("EXP1", "Mamba block (paper preset)", STUDY_MAMBA_BLOCK, in_effect.mamba_block, CHOICE,
         "a different Mamba block", show_study="mamba-ssm Mamba2 mixer + GatedMLP (d=768, 2 layers, MLP 1,536)",
         show_ours=_mamba),
    Knob("EXP1", "checkpoint fine-tuned", "LLaMA, Mamba: step 1,000 of 10,000; BERT, XLNet: the last", _finetune_from,
         CHOICE, "the study's choice is not explained; we take each run's lowest validation loss",
         lambda ours, study: False),
    # EXP1 GLUE
    Knob("EXP1 GLUE", "tasks", list(STUDY_GLUE_TASKS), "glue.tasks", DATA_ABSENT,
         "sst2, qqp, mnli, qnli have no released train file; WNLI is extra (not in the study's mean)", same_set),
    Knob("EXP1 GLUE", "epochs", STUDY_GLUE_EPOCHS, "glue.epochs", COMPUTE, "CPU time",
         lambda ours, study: isinstance(ours, dict) and all(ours.get(t) == e for t, e in study.items())),
    Knob("EXP1 GLUE", "max_seq_len", 256, "glue.max_seq_len", COMPUTE, "CPU time"),
    Knob("EXP1 GLUE", "batch", 256, "glue.batch_size", COMPUTE, "CPU time"),
    Knob("EXP1 GLUE", "learning rates swept", list(STUDY_GLUE_LRS), "glue.lr", COMPUTE,
         "one fine-tuning run per rate and seed"),
    Knob("EXP1 GLUE", "seeds", 5, lambda x: len(x.get("glue.seeds")), COMPUTE, "fewer seeds: wider intervals",
         show_study="5 (1, 53, 65, 256, 9264)"),
    Knob("EXP1 GLUE", "training examples per task", None, "glue.max_train_examples", COMPUTE,
         "a seeded subsample", show_study="all"),
    Knob("EXP1 GLUE", "checkpoint scored on test", "best evaluation by the task metric", in_effect.glue_selection,
         COMPUTE, "validation is scored after every epoch, not every N steps (the study: every 10-1,250 steps)",
         lambda ours, study: ours.startswith(study)),
    # EXP2
    Knob("EXP2", "instruction data", "released", "instruct.source", DATA_ABSENT,
         "Leaner-Instruct is not in the local release copy: code prompt/response twins stand in",
         show_study="released Leaner-Instruct + alpaca-cleaned"),
    Knob("EXP2", "loss on prompt tokens", True, in_effect.loss_on_prompt, CHOICE,
         "the prompt is masked from the loss", show_study="true (all tokens of packed blocks)"),
    Knob("EXP2", "packed blocks", True, in_effect.packed, CHOICE, "one padded example per row",
         show_study="true (examples joined with <|endoftext|>, cut into blocks)"),
    Knob("EXP2", "prompt template", STUDY_TEMPLATE, _exp2_template, CHOICE, "a different template",
         lambda ours, study: ours == study, show_ours=lambda v: "not run (no EXP2 result)" if v is None else repr(v),
         show_study=repr(STUDY_TEMPLATE)),
    Knob("EXP2", "decoding", "greedy", _decoding, CHOICE, "beam search, a repetition penalty, or an answer "
         "made to start with a visible token and cut at a template header (a tiny tuned model emits newlines "
         "first and runs on into a new example)",
         show_study="the model's default (greedy)"),
    Knob("EXP2", "max new tokens", 1024, "generate.decoding.max_new_tokens", COMPUTE, "CPU time",
         show_study="1,024 (max length)"),
    Knob("EXP2", "questions answered", None, "generate.max_questions", COMPUTE, "a bin-stratified subsample",
         show_study="all 1,594"),
    Knob("EXP2", "tuning steps", STUDY_SCALE["EXP2"].steps, "instruct.tune.steps", COMPUTE, "CPU time"),
    Knob("EXP2", "checkpoints compared per recipe", 10, _tune_checkpoints, COMPUTE, "fewer tuning steps",
         show_study="10 (every 100 steps)"),
    Knob("EXP2", "learning rate", 5e-3, "instruct.tune.lr", CHOICE, "a rate for the smaller batch",
         show_study="5e-3 (released comparison; swept 5e-6 ... 5e-2)"),
    Knob("EXP2", "LR schedule", "linear to 0 x lr", _schedule("instruct.tune", "tinyhelen.exp2.config:TuneConfig"),
         CHOICE, "a different decay"),
    Knob("EXP2", "tuning batch", "512 x 1024 tokens", _seq("instruct.tune.batch_size", "instruct.tune.max_len"),
         COMPUTE, "CPU time"),
    Knob("EXP2", "judge", "LLM judge", _judge, COMPUTE,
         "no LLM endpoint offline: proxy metrics give no EXP2 verdict",
         lambda ours, study: not ours.startswith("proxy"),
         show_study="GPT-4-class LLM, T 0.8, top_p 0.95, relative 0-5 scores, <= 10 answers per call"),
    # EXP3
    Knob("EXP3", "proxy size (non-embedding)", STUDY_PROXY_NON_EMBEDDING, _proxy_size, COMPUTE,
         "a different proxy size", within(0.10), show_study=_params_m(STUDY_PROXY_NON_EMBEDDING),
         show_ours=_params_m),
    Knob("EXP3", "batch", "512 x 1024 tokens", _seq("exp3.train.batch_size", "exp3.train.seq_len"), COMPUTE,
         "CPU time"),
    Knob("EXP3", "steps", STUDY_SCALE["EXP3"].steps, "exp3.train.max_steps", COMPUTE, "CPU time"),
    Knob("EXP3", "learning rate", 1e-2, "exp3.train.lr", CHOICE, "a different rate"),
    Knob("EXP3", "warm-up steps", 100, "exp3.train.warmup_steps", COMPUTE, "scaled with the steps (4%)"),
    Knob("EXP3", "LR schedule", "linear to 0 x lr", _schedule("exp3.train", "tinyhelen.exp3.config:TrainConfig"), CHOICE, "a different decay",
         show_study="linear to 0 x lr (the Trainer's default: the script sets no schedule)"),
    Knob("EXP3", "AdamW betas", [0.9, 0.999], lambda x: [x.get(f"exp3.train.adam_beta{i}") for i in (1, 2)], CHOICE,
         "different betas",
         show_study="(0.9, 0.999) (the Trainer's default)"),
    Knob("EXP3", "weight decay", 0.0, "exp3.train.weight_decay", CHOICE, "weight decay on",
         show_study="0 (the Trainer's default)"),
    Knob("EXP3", "seeds", 1, lambda x: len(x.get("exp3.seeds")), CHOICE,
         "more seeds: intervals over training seeds (a verdict needs 5)", show_study="1 (seed 65)"),
    Knob("EXP3", "validation", "the validation split of the five genres", _exp3_validation, COMPUTE,
         "a fixed held-out slice, evaluated every 20 steps on CPU",
         show_study="the validation split (10M + 100M) of the five genres, all of it (its own mix)"),
    Knob("EXP3", "pool genre mix", "the training corpus's mix", _genre_mix, CHOICE,
         "other genre shares (exp3.units.genre_shares)"),
    Knob("EXP3", "baselines compared", ["full-random"], "exp3.report.baselines", CHOICE,
         "the iterative random control (same pool growth, random order) separates growth from order",
         same_set),
    Knob("EXP3", "\"reaches the baseline's loss\"", "not stated", _definitions,
         CHOICE, "the study does not define it; three pre-registered definitions (tinyhelen.exp3.targets)",
         lambda ours, study: False),
    Knob("EXP3", "evaluation interval (steps)", 20, "exp3.train.eval_every", CHOICE, "a different interval"),
    Knob("EXP3", "patience", 1, "exp3.train.patience", CHOICE, "expands after more evaluations without a "
         "new best"),
    Knob("EXP3", "pool growth", "iterative: start 0.05, +0.05 per expansion", _pool_growth, CHOICE,
         "a different pacing"),
    Knob("EXP3", "unit", "document", _unit, CHOICE, "long documents are cut into chunks"),
    Knob("EXP3", "genres", sorted(STUDY_GENRES), lambda x: sorted(x.get("exp3.units.genres") or ["all"]), CHOICE,
         "other genres (e.g. code, math) are curriculum units", same_set),
    Knob("EXP3", "pool", "all training documents", _pool, COMPUTE, "a fixed slice of the corpus",
         show_study="all leaner training documents (100M setting)"),
    Knob("EXP3", "runs (strategies)", list(STUDY_EXP3_STRATEGIES), "exp3.strategies", CHOICE,
         "a different set of runs (unigram is ours, beyond the study)", same_set),
    Knob("EXP3", "selfloss rescoring per expansion", "every unit outside the pool", _selfloss, COMPUTE,
         "scoring every remaining unit costs more than the training at this scale"),
    Knob("EXP3", "GLUE checkpoints (steps)", [500, 1000, 1500, 2000, 2500], _exp3_checkpoints, COMPUTE,
         "fewer, evenly spaced checkpoints of a shorter run"),
    Knob("EXP3", "GLUE compared", "all runs + the random-init proxy", _exp3_glue, COMPUTE,
         "Leaner-GLUE of the proxy is off (CPU time)"),
    Knob("EXP3", "GLUE tasks (proxy)", list(STUDY_GLUE_TASKS),
         lambda x: x.get("exp3.glue.tasks", None) or x.get("glue.tasks"), COMPUTE,
         "a subset (CPU time); sst2, qqp, mnli, qnli have no released train file", same_set),
)


def compare(params: dict[str, Any], results: dict[str, Any] | None = None,
            knobs: tuple[Knob, ...] = KNOBS) -> list[Row]:
    """Every knob with the study's value and ours (params resolved with defaults, typed results)."""
    x = Inputs(params, results)
    rows = []
    for k in knobs:
        try:
            ours = k.value(x)
        except Exception as exc:  # noqa: BLE001 - a knob that cannot be read is shown, never fatal
            rows.append(Row(k.experiment, k.name, k.show_study or fmt(k.study),
                            f"unknown ({exc.args[0] if isinstance(exc, KeyError) else repr(exc)})", True,
                            k.reason, k.why))
            continue
        rows.append(Row(k.experiment, k.name, k.show_study or fmt(k.study), k.show_ours(ours),
                        not k.same(ours, k.study), k.reason, k.why))
    return rows
