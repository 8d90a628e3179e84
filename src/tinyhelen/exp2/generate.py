"""EXP2 generation: answers of an instruction-tuned model to the Leaner-Eval questions.

Every question is asked with the instruction template the model was tuned with (``instruct.template``,
``format_prompt``) and answered with deterministic decoding (the study's: greedy, no repetition penalty;
``generate.decoding``), in batches with left padding on ``generate.device``. Two question sets, as the
study:

- ``inner_comparison`` (31 questions) answered by EVERY checkpoint ``step-NNNNNN`` of the recipe
  (``answer_inner``): judged, they select one checkpoint per recipe;
- ``all`` (Leaner-Eval, 1,594 questions; ``generate.max_questions`` takes a seeded, bin-stratified subsample
  at the CPU default) answered by the SELECTED checkpoint of the recipe (``answer_selected``).

Output (one JSONL file per recipe and set), one record per (question, checkpoint)::

    set, qid, question, bin, source, recipe, checkpoint, step, answer, new_tokens, finished (ended with eos)
"""
from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tinyhelen import timing
from tinyhelen.exp2.instruct_data import format_prompt
from tinyhelen.io import InputError, iter_jsonl, write_jsonl
from tinyhelen.train.config import ComputeConfig

log = logging.getLogger(__name__)

QUESTION_SETS = ("all", "inner_comparison")


class Decoding(BaseModel):
    """Deterministic decoding parameters (passed to ``model.generate``). The study used the model's default
    generation config: greedy, no repetition penalty."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(48, ge=1)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.0, ge=1.0, description="1.0 (the study): none")
    no_repeat_ngram_size: int = Field(0, ge=0)


class GenerateConfig(ComputeConfig):
    """``generate:`` section of params.yaml (``device``, ``precision``, ``threads`` as every training section)."""

    eval_dir: str = Field("data/leaner/eval", description="all.jsonl + inner_comparison.jsonl")
    max_questions: int | None = Field(200, ge=1, description="seeded bin-stratified subsample of all.jsonl; "
                                                             "null = every question (the study)")
    batch_size: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(192, ge=8)
    decoding: Decoding = Decoding()
    threads: int = Field(1, ge=1, description="torch CPU threads")


# ----------------------------------------------------------------------------------------- questions
def read_questions(path: Path | str) -> list[dict[str, Any]]:
    out = []
    for line, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec.get("qid"):
            raise InputError(path, "question record needs 'qid' and string 'question'", line)
        out.append({"qid": rec["qid"], "question": rec["question"], "bin": rec.get("bin"),
                    "source": rec.get("source", "")})
    if not out:
        raise InputError(path, "no questions")
    return out


def subsample(questions: list[dict], n: int | None, seed: int) -> list[dict]:
    """Seeded subsample of ``n`` questions, stratified by similarity bin (proportional, largest remainder);
    the original order is kept. ``n=None`` or ``n >= len`` returns every question."""
    if n is None or n >= len(questions):
        return questions
    by_bin: dict[Any, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_bin[q.get("bin")].append(i)
    bins = sorted(by_bin, key=str)
    quota = {b: n * len(by_bin[b]) / len(questions) for b in bins}
    take = {b: int(quota[b]) for b in bins}
    for b in sorted(bins, key=lambda b: (-(quota[b] - take[b]), str(b)))[:n - sum(take.values())]:
        take[b] += 1
    rng = random.Random(seed)
    keep = sorted(i for b in bins for i in rng.sample(by_bin[b], take[b]))
    return [questions[i] for i in keep]


# ----------------------------------------------------------------------------------------- generation
def load_model(path: Path | str, compute: ComputeConfig):
    """Tokenizer (left padding) and model of a checkpoint directory, on ``compute.device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinyhelen.train.compute import device_of

    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(path, "model checkpoint not found (config.json missing)")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device_of(compute)).eval()
    return tok, model


def generate_answers(tok: Any, model: Any, questions: list[str], cfg: GenerateConfig, template: str = "study"
                     ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Deterministic answers to ``questions`` in batches on the model's device (bf16 autocast where
    ``cfg.precision`` asks for it); returns per-question records and throughput."""
    import torch
    from tqdm import tqdm

    from tinyhelen.train.compute import autocast, uses_bf16

    dec = cfg.decoding
    bf16 = uses_bf16(cfg, model.device)
    out: list[dict[str, Any]] = []
    t0, n_new = time.time(), 0
    for i in tqdm(range(0, len(questions), cfg.batch_size), desc="generate", mininterval=5, leave=False):
        prompts = [format_prompt(q, template=template) for q in questions[i:i + cfg.batch_size]]
        ids = [tok(p, add_special_tokens=False)["input_ids"][-cfg.max_prompt_tokens:] for p in prompts]
        n = max(map(len, ids))
        input_ids = torch.full((len(ids), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for j, seq in enumerate(ids):  # left padding
            input_ids[j, n - len(seq):] = torch.tensor(seq)
            mask[j, n - len(seq):] = 1
        with torch.no_grad(), autocast(model.device, bf16):
            gen = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                 do_sample=False, num_beams=dec.num_beams, max_new_tokens=dec.max_new_tokens,
                                 repetition_penalty=dec.repetition_penalty,
                                 no_repeat_ngram_size=dec.no_repeat_ngram_size,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 temperature=None, top_p=None, top_k=None)
        for row in gen[:, n:].tolist():
            finished = tok.eos_token_id in row
            if finished:
                row = row[:row.index(tok.eos_token_id)]
            row = [t for t in row if t != tok.pad_token_id]
            n_new += len(row)
            out.append({"answer": tok.decode(row, skip_special_tokens=True).strip(), "new_tokens": len(row),
                        "finished": finished})
    secs = time.time() - t0
    return out, {"questions": len(questions), "new_tokens": n_new, "seconds": round(secs, 2),
                 "tokens_per_s": round(n_new / max(secs, 1e-9), 1)}


def checkpoints(model_dir: Path | str) -> list[tuple[str, int]]:
    """``[(name, step)]`` of the ``step-NNNNNN`` checkpoints in a tuned model directory, by step."""
    found = []
    for d in Path(model_dir).glob("step-*"):
        try:
            found.append((d.name, int(d.name.split("-", 1)[1])))
        except ValueError:
            continue
    return sorted(found, key=lambda x: x[1])


def answer(model_dir: Path | str, recipe: str, qset: str, questions: list[dict[str, Any]],
           plan: list[tuple[str, int]], cfg: GenerateConfig, out_path: Path | str, template: str = "study"
           ) -> dict[str, Any]:
    """The checkpoints ``plan`` (``[(name, step)]``) of one recipe answer ``questions`` (set ``qset``);
    write the records to ``out_path`` (JSONL) atomically and return the stage's metrics."""
    model_dir = Path(model_dir)
    records: list[dict[str, Any]] = []
    perf: dict[str, Any] = {}
    for ck, step in plan:
        tok, model = load_model(model_dir / ck, cfg)
        answers, p = generate_answers(tok, model, [q["question"] for q in questions], cfg, template)
        perf[ck] = p
        log.info("%s %s %s: %d answers, %.0f new tokens/s", recipe, qset, ck, len(answers), p["tokens_per_s"])
        records += [{"set": qset, **q, "recipe": recipe, "checkpoint": ck, "step": step, **a}
                    for q, a in zip(questions, answers, strict=True)]
    write_jsonl(out_path, records)
    timing.record(seconds=round(sum(p["seconds"] for p in perf.values()), 2), by_checkpoint=perf)
    return {"recipe": recipe, "set": qset, "questions": len(questions), "checkpoints": [c for c, _ in plan],
            "answers": len(records), "empty_answers": sum(1 for r in records if not r["answer"]),
            "finished_rate": round(sum(r["finished"] for r in records) / max(1, len(records)), 4),
            "new_tokens": sum(r["new_tokens"] for r in records)}


def answer_inner(model_dir: Path | str, recipe: str, cfg: GenerateConfig, out_path: Path | str,
                 template: str = "study") -> dict[str, Any]:
    """Checkpoint selection input: EVERY ``step-NNNNNN`` checkpoint answers the 31 inner-comparison questions."""
    ckpts = checkpoints(model_dir)
    if not ckpts:
        raise InputError(model_dir, "no step-* checkpoints; run the instruct_tune stage")
    inner = read_questions(Path(cfg.eval_dir) / "inner_comparison.jsonl")
    return answer(model_dir, recipe, "inner_comparison", inner, ckpts, cfg, out_path, template)


def answer_selected(model_dir: Path | str, recipe: str, step: int, cfg: GenerateConfig, out_path: Path | str,
                    seed: int, template: str = "study") -> dict[str, Any]:
    """The checkpoint selected for ``recipe`` (its ``step``) answers Leaner-Eval (``all``, subsampled by
    ``max_questions``)."""
    plan = [(name, s) for name, s in checkpoints(model_dir) if s == step]
    if not plan:
        raise InputError(model_dir, f"no checkpoint of the selected step {step} (have: "
                                    f"{[n for n, _ in checkpoints(model_dir)]})")
    allq = subsample(read_questions(Path(cfg.eval_dir) / "all.jsonl"), cfg.max_questions, seed)
    return answer(model_dir, recipe, "all", allq, plan, cfg, out_path, template) | {"selected_step": step}
