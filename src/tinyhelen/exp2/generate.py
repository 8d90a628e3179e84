"""EXP2 generation: answers of an instruction-tuned model to the Leaner-Eval questions.

Every question is asked with the instruction template the model was tuned with (``instruct.template``,
``format_prompt``) and answered with deterministic decoding (the study's: greedy, no repetition penalty;
``generate.decoding``), in batches with left padding on ``generate.device``. Two question sets, as the
study:

- ``inner_comparison`` (31 questions) answered by EVERY checkpoint ``step-NNNNNN`` of the recipe
  (``answer_inner``): judged, they select one checkpoint per recipe;
- ``all`` (Leaner-Eval, 1,594 questions; ``generate.max_questions`` takes a seeded, bin-stratified subsample
  at the CPU default) answered by the SELECTED checkpoint of the recipe (``answer_selected``);
- ``heldout`` (not the study's): held-out prompts of the kind the recipe was tuned on, the validation split of
  its tuning side's instruction data (``data/instruct/<side>/validation.jsonl``, never trained on; a seeded
  subsample of ``generate.heldout_prompts``), answered by the same selected checkpoint and judged like
  Leaner-Eval: did the tuning teach the model to answer prompts of its own kind?

Output (one JSONL file per recipe and set), one record per (question, checkpoint)::

    set, qid, question, bin, source, recipe, checkpoint, step, answer, new_tokens, finished (ended with eos),
    stopped (cut before a header of the template: ``decoding.stop_at_template``)
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
from tinyhelen.exp2.instruct_data import format_prompt, template_headers
from tinyhelen.io import InputError, iter_jsonl, write_jsonl
from tinyhelen.train.config import ComputeConfig

log = logging.getLogger(__name__)

QUESTION_SETS = ("all", "inner_comparison", "heldout")


class Decoding(BaseModel):
    """Deterministic decoding parameters (passed to ``model.generate``). The study used the model's default
    generation config: greedy, no repetition penalty, nothing suppressed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_new_tokens: int = Field(48, ge=1)
    num_beams: int = Field(1, ge=1)
    repetition_penalty: float = Field(1.0, ge=1.0, description="1.0 (the study): none")
    no_repeat_ngram_size: int = Field(0, ge=0)
    suppress_leading_whitespace: bool = Field(
        True, description="until an answer has a visible character, whitespace-only tokens, special tokens and "
                          "<|endoftext|> are not chosen (the answer is stripped, so a leading newline run is "
                          "never part of it; an undertrained model greedily emits only newlines). Not the "
                          "study's (false): a difference listed in the report card")
    stop_at_template: bool = Field(
        True, description="an answer ends before the first section header of the instruction template it "
                          "generates (### TASK INPUT: / ### RESPONSE: for the study's): the tuning data is "
                          "packed, so a model that has not learnt to end with <|endoftext|> runs on into a new "
                          "example. Not the study's (false: everything up to <|endoftext|> or the length limit)")


class GenerateConfig(ComputeConfig):
    """``generate:`` section of params.yaml (``device``, ``precision``, ``threads`` as every training section)."""

    eval_dir: str = Field("data/leaner/eval", description="all.jsonl + inner_comparison.jsonl")
    max_questions: int | None = Field(200, ge=1, description="seeded bin-stratified subsample of all.jsonl; "
                                                             "null = every question (the study)")
    heldout_prompts: int = Field(32, ge=0, description="held-out instruction prompts of the recipe's tuning side "
                                                         "answered by the selected checkpoint (seeded subsample "
                                                         "of its validation split); 0: none")
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
def blank_token_ids(tok: Any) -> list[int]:
    """Ids of the tokens that add no visible character to a decoded answer: whitespace-only tokens and the
    special tokens (``<|endoftext|>``, padding, ...)."""
    special = set(tok.all_special_ids)
    return [i for i in range(len(tok)) if i in special or not tok.decode([i]).strip()]


class LeadingWhitespaceSuppressor:
    """A ``transformers`` logits processor: a row whose generated tokens so far are all blank
    (``blank_token_ids``) cannot choose a blank token, so greedy decoding takes the best token with a visible
    character. Rows that have one are left alone (newlines inside an answer stay possible)."""

    def __init__(self, blank: list[int], vocab_size: int, prompt_len: int):
        import torch

        self.blank = torch.zeros(vocab_size, dtype=torch.bool)
        self.blank[blank] = True
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        blank = self.blank.to(scores.device)
        new = input_ids[:, self.prompt_len:]
        started = (~blank[new]).any(-1) if new.shape[1] else new.new_zeros(new.shape[0], dtype=bool)
        mask = (~started)[:, None] & blank[:scores.shape[-1]][None, :]
        return scores.masked_fill(mask, float("-inf"))


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


def cut_at(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first of the ``stop`` strings in it, or up to one cut short at its very end (the
    length limit stopped it mid-way: at least its first four characters); and whether it was cut."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    cuts += [len(text) - k for s in stop for k in range(4, len(s)) if text.endswith(s[:k])]
    return (text[:min(cuts)], True) if cuts else (text, False)


def generate_answers(tok: Any, model: Any, prompts: list[str], cfg: GenerateConfig, stop: tuple[str, ...] = ()
                     ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Deterministic answers to ``prompts`` (the template applied: ``format_prompt``) in batches on the
    model's device (bf16 autocast where ``cfg.precision`` asks for it); an answer is cut before the first of
    the ``stop`` strings it contains. Returns per-prompt records (``finished``: ended with <|endoftext|>,
    ``stopped``: cut at a stop string) and throughput."""
    import torch
    from tqdm import tqdm

    from tinyhelen.train.compute import autocast, uses_bf16

    from transformers import LogitsProcessorList

    dec = cfg.decoding
    bf16 = uses_bf16(cfg, model.device)
    blank = blank_token_ids(tok) if dec.suppress_leading_whitespace else None
    out: list[dict[str, Any]] = []
    t0, n_new = time.time(), 0
    for i in tqdm(range(0, len(prompts), cfg.batch_size), desc="generate", mininterval=5, leave=False):
        ids = [tok(p, add_special_tokens=False)["input_ids"][-cfg.max_prompt_tokens:]
               for p in prompts[i:i + cfg.batch_size]]
        n = max(map(len, ids))
        input_ids = torch.full((len(ids), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for j, seq in enumerate(ids):  # left padding
            input_ids[j, n - len(seq):] = torch.tensor(seq)
            mask[j, n - len(seq):] = 1
        processors = LogitsProcessorList([LeadingWhitespaceSuppressor(blank, len(tok), n)] if blank else [])
        with torch.no_grad(), autocast(model.device, bf16):
            gen = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                 logits_processor=processors, do_sample=False, num_beams=dec.num_beams,
                                 max_new_tokens=dec.max_new_tokens,
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
            text, stopped = cut_at(tok.decode(row, skip_special_tokens=True), stop)
            out.append({"answer": text.strip(), "new_tokens": len(row), "finished": finished, "stopped": stopped})
    secs = time.time() - t0
    return out, {"questions": len(prompts), "new_tokens": n_new, "seconds": round(secs, 2),
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


def heldout_prompts(instruct_dir: Path | str, recipe: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The ``heldout`` question set of ``recipe``: a seeded subsample of ``n`` examples of the validation split
    of its tuning side's instruction data (``<instruct_dir>/<side>/validation.jsonl``, never trained on), in
    file order, as question records carrying their templated ``prompt``."""
    from tinyhelen.exp2.instruct_data import cap_examples, read_examples

    side = recipe.split("-", 1)[1]
    examples = cap_examples(read_examples(Path(instruct_dir) / side / "validation.jsonl"), n, seed)
    return [{"qid": e["id"], "question": f"{e['instruction']}\n{e['input']}" if e.get("input") else e["instruction"],
             "bin": None, "source": f"heldout:{e.get('source', '')}:{side}", "prompt": e["prompt"]}
            for e in examples]


def answer(model_dir: Path | str, recipe: str, sets: dict[str, list[dict[str, Any]]], plan: list[tuple[str, int]],
           cfg: GenerateConfig, out_path: Path | str, template: str = "study") -> dict[str, Any]:
    """The checkpoints ``plan`` (``[(name, step)]``) of one recipe answer the question sets ``sets`` (name ->
    question records; a record's ``prompt``, when present, is asked as it is, else its ``question`` with the
    template); write the records to ``out_path`` (JSONL) atomically and return the stage's metrics."""
    model_dir = Path(model_dir)
    records: list[dict[str, Any]] = []
    perf: dict[str, Any] = {}
    stop = template_headers(template) if cfg.decoding.stop_at_template else ()
    for ck, step in plan:
        tok, model = load_model(model_dir / ck, cfg)
        for qset, questions in sets.items():
            prompts = [q.get("prompt") or format_prompt(q["question"], template=template) for q in questions]
            answers, p = generate_answers(tok, model, prompts, cfg, stop)
            perf[f"{ck} {qset}"] = p
            log.info("%s %s %s: %d answers, %.0f new tokens/s", recipe, qset, ck, len(answers), p["tokens_per_s"])
            records += [{"set": qset, **{k: v for k, v in q.items() if k != "prompt"}, "recipe": recipe,
                         "checkpoint": ck, "step": step, **a} for q, a in zip(questions, answers, strict=True)]
    write_jsonl(out_path, records)
    timing.record(seconds=round(sum(p["seconds"] for p in perf.values()), 2), by_checkpoint=perf)

    def counts(recs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"answers": len(recs), "empty_answers": sum(1 for r in recs if not r["answer"]),
                "finished_rate": round(sum(r["finished"] for r in recs) / max(1, len(recs)), 4),
                "new_tokens": sum(r["new_tokens"] for r in recs)}

    return {"recipe": recipe, "sets": list(sets), "questions": sum(map(len, sets.values())),
            "checkpoints": [c for c, _ in plan], **counts(records),
            "by_set": {q: counts([r for r in records if r["set"] == q]) for q in sets} if len(sets) > 1 else None}


def answer_inner(model_dir: Path | str, recipe: str, cfg: GenerateConfig, out_path: Path | str,
                 template: str = "study") -> dict[str, Any]:
    """Checkpoint selection input: EVERY ``step-NNNNNN`` checkpoint answers the 31 inner-comparison questions."""
    ckpts = checkpoints(model_dir)
    if not ckpts:
        raise InputError(model_dir, "no step-* checkpoints; run the instruct_tune stage")
    inner = read_questions(Path(cfg.eval_dir) / "inner_comparison.jsonl")
    return answer(model_dir, recipe, {"inner_comparison": inner}, ckpts, cfg, out_path, template)


def answer_selected(model_dir: Path | str, recipe: str, step: int, cfg: GenerateConfig, out_path: Path | str,
                    seed: int, template: str = "study", instruct_dir: Path | str | None = None) -> dict[str, Any]:
    """The checkpoint selected for ``recipe`` (its ``step``) answers Leaner-Eval (``all``, subsampled by
    ``max_questions``) and, given ``instruct_dir`` and ``heldout_prompts`` > 0, the recipe's held-out
    instruction prompts (``heldout``)."""
    plan = [(name, s) for name, s in checkpoints(model_dir) if s == step]
    if not plan:
        raise InputError(model_dir, f"no checkpoint of the selected step {step} (have: "
                                    f"{[n for n, _ in checkpoints(model_dir)]})")
    sets = {"all": subsample(read_questions(Path(cfg.eval_dir) / "all.jsonl"), cfg.max_questions, seed)}
    if instruct_dir is not None and cfg.heldout_prompts:
        sets["heldout"] = heldout_prompts(instruct_dir, recipe, cfg.heldout_prompts, seed)
    return answer(model_dir, recipe, sets, plan, cfg, out_path, template) | {"selected_step": step}
