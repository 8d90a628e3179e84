"""EXP2 generation: answers of an instruction-tuned model to the Leaner-Eval questions.

Every question is asked with the instruction template of ``tinyhelen.instruct`` (``format_prompt``) and
answered with deterministic decoding (greedy by default; ``generate.decoding``), in batches with left
padding. Two question sets:

- ``all`` (Leaner-Eval, 1,594 questions; ``generate.max_questions`` takes a seeded, bin-stratified subsample
  at the CPU default) answered by the ``final`` checkpoint;
- ``inner_comparison`` (31 questions) answered by EVERY checkpoint ``step-NNNNNN`` of the recipe: the
  checkpoint-selection curve of the report.

Output (``data/generations/<recipe>/<set>.jsonl``), one record per (question, checkpoint)::

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

from tinyhelen.config import Section
from tinyhelen.instruct import format_prompt
from tinyhelen.io import InputError, atomic_path, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

QUESTION_SETS = ("all", "inner_comparison")


class Decoding(BaseModel):
    """Deterministic decoding parameters (passed to ``model.generate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(48, ge=1)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.2, ge=1.0)
    no_repeat_ngram_size: int = Field(0, ge=0)


class GenerateConfig(Section):
    """``generate:`` section of params.yaml."""

    eval_dir: str = Field("data/leaner/eval", description="all.jsonl + inner_comparison.jsonl")
    max_questions: int | None = Field(200, ge=1, description="seeded bin-stratified subsample of all.jsonl; "
                                                             "null = every question (the study)")
    batch_size: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(192, ge=8)
    decoding: Decoding = Decoding()
    checkpoint_curve: bool = Field(True, description="answer inner_comparison with every checkpoint")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda)$")
    threads: int = Field(1, ge=0, description="torch CPU threads (0 = torch's default)")


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
def load_model(path: Path | str, device: str = "auto"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(path, "model checkpoint not found (config.json missing)")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(dev).eval()
    return tok, model


def generate_answers(tok: Any, model: Any, questions: list[str], cfg: GenerateConfig
                     ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Greedy (deterministic) answers to ``questions``; returns per-question records and throughput."""
    import torch
    from tqdm import tqdm

    dec = cfg.decoding
    out: list[dict[str, Any]] = []
    t0, n_new = time.time(), 0
    for i in tqdm(range(0, len(questions), cfg.batch_size), desc="generate", mininterval=5, leave=False):
        prompts = [format_prompt(q) for q in questions[i:i + cfg.batch_size]]
        ids = [tok(p, add_special_tokens=False)["input_ids"][-cfg.max_prompt_tokens:] for p in prompts]
        n = max(map(len, ids))
        input_ids = torch.full((len(ids), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for j, seq in enumerate(ids):  # left padding
            input_ids[j, n - len(seq):] = torch.tensor(seq)
            mask[j, n - len(seq):] = 1
        with torch.no_grad():
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


def run(model_dir: Path | str, recipe: str, cfg: GenerateConfig, out_dir: Path | str, seed: int
        ) -> dict[str, Any]:
    """Answer both question sets with one recipe's checkpoints; write ``out_dir/<set>.jsonl`` atomically."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    model_dir, eval_dir = Path(model_dir), Path(cfg.eval_dir)
    allq = subsample(read_questions(eval_dir / "all.jsonl"), cfg.max_questions, seed)
    inner = read_questions(eval_dir / "inner_comparison.jsonl")
    ckpts = checkpoints(model_dir)
    if not ckpts:
        raise InputError(model_dir, "no step-* checkpoints; run the instruct_tune stage")
    final_step = ckpts[-1][1]
    plan: list[tuple[str, list[dict], str, int]] = [("all", allq, "final", final_step)]
    for name, step in (ckpts if cfg.checkpoint_curve else ckpts[-1:]):
        plan.append(("inner_comparison", inner, name, step))
    records: dict[str, list] = {s: [] for s in QUESTION_SETS}
    perf: dict[str, Any] = {}
    for qset, qs, ck, step in plan:
        tok, model = load_model(model_dir / ck, cfg.device)
        answers, p = generate_answers(tok, model, [q["question"] for q in qs], cfg)
        perf[f"{qset}/{ck}"] = p
        log.info("%s %s %s: %d answers, %.0f new tokens/s", recipe, qset, ck, len(answers), p["tokens_per_s"])
        for q, a in zip(qs, answers, strict=True):
            records[qset].append({"set": qset, **q, "recipe": recipe, "checkpoint": ck, "step": step, **a})
    with atomic_path(out_dir) as tmp:
        for qset in QUESTION_SETS:
            write_jsonl(tmp / f"{qset}.jsonl", records[qset])
    total_tokens = sum(p["new_tokens"] for p in perf.values())
    total_secs = sum(p["seconds"] for p in perf.values())
    return {"recipe": recipe, "questions_all": len(allq), "questions_inner": len(inner),
            "checkpoints": [c for c, _ in ckpts], "answers": {k: len(v) for k, v in records.items()},
            "empty_answers": sum(1 for v in records.values() for r in v if not r["answer"]),
            "finished_rate": round(sum(r["finished"] for v in records.values() for r in v)
                                   / max(1, sum(map(len, records.values()))), 4),
            "new_tokens": total_tokens, "seconds": round(total_secs, 2),
            "tokens_per_s": round(total_tokens / max(total_secs, 1e-9), 1), "by_run": perf}
