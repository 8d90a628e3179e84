"""What a profile's training stages will cost before they run (``python -m tinyhelen.profiles estimate``).

Per training stage (pretraining, GLUE, instruction tuning, the EXP3 reference LM, proxy runs and their GLUE) the
params give the optimiser steps, the tokens and the FLOPs (``tinyhelen.exp1.models.flops_per_token``: 6 N plus
attention per trained token, a third of it per evaluated token); the time on a device comes from one of:

* ``cpu``: the FLOPs per CPU second measured for the architecture and size preset by ``benchmarks/bench_train.py
  --threads 1`` (through the training loop) on this repository's 2-core machine
  (``benchmarks/results/train_cpu_<preset>.json``; the fine-tuning rate for GLUE): CPU seconds, so that other
  jobs on the machine do not count; one thread, so a stage with 2 threads takes between half of it and all of
  it. Measured, then scaled by FLOPs to the stage's shapes.
* a GPU (``h100``, ``a100``, ... : ``tinyhelen.train.compute``'s peak table): an ESTIMATE, nothing of it was
  measured here: FLOPs / (dense bf16 peak x ``mfu``), but at least ``step_floor`` seconds per optimiser step
  (a step of a small model is bound by its fixed latency: kernel launches, the optimizer, Python). Both are
  assumptions (defaults ``ASSUMED_MFU``, ``ASSUMED_STEP_FLOOR_S``); ``--step-latency KIND=SECONDS`` puts a
  latency measured on the device (``bench_train.py`` there) in their place.

GLUE sizes come from the Leaner-GLUE train/validation/test files (the stage's input ``data/leaner/glue``, else the
release's ``leaner/glue``); a GLUE example counts its characters / ``CHARS_PER_TOKEN`` tokens (padding is not
counted). Stages that do not train (data, LLM, entropy, generation, judging, reports) are not in the estimate.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSUMED_MFU = 0.2  # GPU: share of the bf16 peak a step reaches (assumed: hidden sizes of 128-768 keep matmuls small)
ASSUMED_STEP_FLOOR_S = 0.02  # GPU: the least time an optimiser step of these small models takes (assumption)
CHARS_PER_TOKEN = 3.0  # Leaner-GLUE train text with the 2K BPE: 3.02 characters per token (measured)
MEASURED = Path("benchmarks/results")  # train_cpu_<preset>.json written by benchmarks/bench_train.py --out
KINDS = ("pretrain", "glue", "instruct_tune", "exp3_reference_lm", "exp3_train", "exp3_glue")


@dataclass
class Line:
    """One stage (a matrix stage: its items of one architecture) of a profile."""

    stage: str
    kind: str  # KINDS
    arch: str
    preset: str
    runs: int  # training runs (fine-tuning runs for GLUE) in the stage
    steps: int  # optimiser steps of all runs
    tokens: int  # tokens trained on
    flops: float  # training + evaluation


class _Vocab:
    """What building a model needs of a tokenizer (the ids do not change its FLOPs)."""

    pad_token_id = eos_token_id = bos_token_id = cls_token_id = sep_token_id = mask_token_id = 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def flops_per_token(arch: str, preset: str, seq_len: int, vocab: int, proxy: Any = None) -> float:
    """Training FLOPs per token of an EXP1 model, or of the EXP3 proxy / reference LM ``proxy`` (its
    ``ModelConfig``), built on the meta device (no memory)."""
    import torch

    from tinyhelen.exp1 import models

    if proxy is not None:
        from tinyhelen.exp3.curriculum import proxy_config

        arch, config = proxy.arch, proxy_config(proxy, _Vocab(vocab))
    else:
        config = models.build_config(arch, preset, _Vocab(vocab))
    with torch.device("meta"):
        model = models.build_lm(arch, config)
    return models.flops_per_token(model, seq_len, arch)


def glue_sizes(glue_dir: Path, tasks: list[str]) -> dict[str, dict[str, tuple[int, float]]]:
    """``{task: {split: (examples, mean tokens)}}`` of the train and evaluation files found."""
    from tinyhelen.exp1.glue import EVAL_SPLITS

    out: dict[str, dict[str, tuple[int, float]]] = {}
    for task in tasks:
        for split in ("train", *EVAL_SPLITS[task]):
            path = glue_dir / f"{task}_{split}.jsonl"
            if not path.exists():
                continue
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            chars = sum(len(v) for r in rows for k, v in r.items() if isinstance(v, str) and k not in ("task", "split"))
            out.setdefault(task, {})[split] = (len(rows), chars / CHARS_PER_TOKEN / max(len(rows), 1))
    return out


def _glue_line(stage: str, kind: str, arch: str, preset: str, proxy: Any, inits: int, glue: Any,
               tasks: list[str], seeds: int, sizes: dict, vocab: int) -> Line | None:
    steps = tokens = runs = 0
    flops = 0.0
    for task in tasks:
        split = sizes.get(task, {})
        if "train" not in split:
            continue
        n, mean = split["train"]
        n = min(n, glue.max_train_examples or n)
        fpt = flops_per_token(arch, preset, max(1, round(mean)), vocab, proxy)
        fine_tunes, epochs = inits * len(glue.lr) * seeds, glue.epochs_for(task)
        evaluated = sum(min(k, glue.max_eval_examples or k) * m * (epochs if s.startswith("validation") else 1)
                        for s, (k, m) in split.items() if s != "train")
        runs += fine_tunes
        steps += fine_tunes * epochs * math.ceil(n / glue.batch_size)
        tokens += round(fine_tunes * epochs * n * mean)
        flops += fpt * fine_tunes * (epochs * n * mean + evaluated / 3)
    return Line(stage, kind, arch, preset, runs, steps, tokens, flops) if runs else None


def lines(params: dict[str, Any], glue_dir: Path | None) -> list[Line]:
    """The training stages of a profile's params (``tinyhelen.profiles.compose``)."""
    from tinyhelen.exp1.config import Exp1Config, ModelsConfig
    from tinyhelen.exp1.glue import GlueConfig
    from tinyhelen.exp1.pretrain import PretrainConfig
    from tinyhelen.exp2.config import InstructConfig
    from tinyhelen.exp3.config import Exp3Config

    preset = ModelsConfig.model_validate(params["models"]).preset
    exp1, pre = Exp1Config.model_validate(params["exp1"]), PretrainConfig.model_validate(params["pretrain"])
    glue, tune = GlueConfig.model_validate(params["glue"]), InstructConfig.model_validate(params["instruct"]).tune
    exp3 = Exp3Config.model_validate(params["exp3"])
    vocab = int(params["tokenizer"]["vocab_size"])
    sizes = glue_sizes(glue_dir, sorted({*glue.tasks, *(exp3.glue.tasks or [])})) if glue_dir else {}
    out = []
    for arch in exp1.archs:
        fpt = flops_per_token(arch, preset, pre.seq_len, vocab)
        runs = len(exp1.sides) * len(pre.lr)
        evals = pre.steps // pre.eval_every + 2  # step 0, every eval_every, the last step
        out.append(Line(f"pretrain_{{{','.join(exp1.sides)}}}@{arch}", "pretrain", arch, preset, runs,
                        runs * pre.steps, runs * pre.tokens_per_run,
                        runs * fpt * (pre.tokens_per_run + evals * pre.eval_tokens / 3)))
        line = _glue_line(f"glue@{arch}-{{{','.join(exp1.inits)}}}", "glue", arch, preset, None, len(exp1.inits),
                          glue, glue.tasks, len(glue.seeds), sizes, vocab)
        out += [line] if line else []
    recipes, per_step = 4, tune.batch_size * tune.max_len  # instruct_tune: 2 pretraining x 2 tuning sides
    fpt = flops_per_token("llama", preset, tune.max_len, vocab)
    evals = tune.steps // tune.checkpoint_every + 1
    out.append(Line("instruct_tune@{leaner,ori}-{leaner,ori}", "instruct_tune", "llama", preset, recipes,
                    recipes * tune.steps, recipes * tune.steps * per_step,
                    recipes * fpt * (tune.steps * per_step + evals * tune.eval_examples * tune.max_len / 3)))
    ref, tr, val = exp3.reference_lm, exp3.train, exp3.units.val_tokens
    fpt = flops_per_token(ref.model.arch, ref.model.preset, ref.seq_len, vocab, ref.model)
    out.append(Line("exp3_reference_lm", "exp3_reference_lm", ref.model.arch, ref.model.preset, 1, ref.steps,
                    ref.steps * ref.batch_size * ref.seq_len,
                    fpt * (ref.steps * ref.batch_size * ref.seq_len + 2 * val / 3)))
    runs, tokens = len(exp3.strategies) * len(exp3.seeds), tr.max_steps * tr.batch_size * tr.seq_len
    fpt = flops_per_token(tr.model.arch, tr.model.preset, tr.seq_len, vocab, tr.model)
    evals = tr.max_steps // tr.eval_every + 1
    out.append(Line("exp3_train@{strategies}-{seeds}", "exp3_train", tr.model.arch, tr.model.preset, runs,
                    runs * tr.max_steps, runs * tokens, runs * fpt * (tokens + evals * val / 3)))
    if exp3.glue.enabled:
        points = len(exp3.strategies) * len(exp3.seeds) * len(tr.saved_steps) + len(exp3.seeds) * exp3.glue.untrained
        line = _glue_line("exp3_glue", "exp3_glue", tr.model.arch, tr.model.preset, tr.model, points, glue,
                          exp3.glue.tasks or glue.tasks, len(exp3.glue.seeds or glue.seeds), sizes, vocab)
        out += [line] if line else []
    return out


# ------------------------------------------------------------------------------------------------ time
def measured_rates(root: Path, vocab: int) -> dict[tuple[str, str, str], float]:
    """Training FLOPs per CPU second, one thread, per ``(lm | finetune, arch, preset)``, from the rows of
    ``bench_train.py --threads 1`` (CPU seconds per step: what a step costs on an idle core)."""
    rates: dict[tuple[str, str, str], float] = {}
    for path in sorted((root / MEASURED).glob("train_cpu_*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            arch, preset = row["arch"], row["preset"]
            rates[("lm", arch, preset)] = flops_per_token(arch, preset, row["seq_len"], vocab) * row[
                "cpu_tokens_per_s"]
            if row.get("finetune_cpu_seqs_per_s"):  # bench_train fine-tunes on 32 examples of 64 tokens per step
                rates[("finetune", arch, preset)] = flops_per_token(arch, preset, 64, vocab) * 64 * row[
                    "finetune_cpu_seqs_per_s"]
    return rates


def seconds(line: Line, device: str, *, mfu: float = ASSUMED_MFU, floor: float = ASSUMED_STEP_FLOOR_S,
            latency: dict[str, float] | None = None, rates: dict | None = None) -> tuple[float | None, str]:
    """Expected seconds of a line on ``device`` and how they were reached."""
    from tinyhelen.train.compute import peak_bf16_tflops

    if latency and line.kind in latency:
        return line.steps * latency[line.kind], f"{latency[line.kind]:g} s/step given"
    if device == "cpu":
        kind = "finetune" if line.kind in ("glue", "exp3_glue") else "lm"
        rate = (rates or {}).get((kind, line.arch, line.preset))
        if rate is None:
            return None, f"no CPU measurement of {line.arch} {line.preset}"
        return line.flops / rate, f"measured {rate / 1e9:.1f} GFLOP/s"
    peak = peak_bf16_tflops(device)
    by_flops, by_steps = line.flops / (peak * 1e12 * mfu), line.steps * floor
    return max(by_flops, by_steps), ("ESTIMATE: FLOPs / (peak x MFU)" if by_flops >= by_steps
                                     else "ESTIMATE: steps x step floor")


def _human(n: float) -> str:
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _clock(secs: float | None) -> str:
    if secs is None:
        return "n/a"
    secs = round(secs)
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def report(profile: str, params: dict[str, Any], device: str, *, glue_dir: Path | None, root: Path = Path("."),
           mfu: float = ASSUMED_MFU, floor: float = ASSUMED_STEP_FLOOR_S, latency: dict[str, float] | None = None
           ) -> str:
    """The estimate of a profile on a device as a table (one line per training stage, and the total)."""
    rates = measured_rates(root, int(params["tokenizer"]["vocab_size"])) if device == "cpu" else None
    rows = [(ln, *seconds(ln, device, mfu=mfu, floor=floor, latency=latency, rates=rates))
            for ln in lines(params, glue_dir)]
    if device == "cpu":
        head = ("FLOPs per CPU second of one thread measured by benchmarks/bench_train.py (benchmarks/results/"
                "train_cpu_*.json, 2-core machine): times for one thread on an idle core; a stage with 2 threads "
                "takes between half that and that")
    else:
        from tinyhelen.train.compute import peak_bf16_tflops

        head = (f"ESTIMATE, nothing measured on a GPU: {peak_bf16_tflops(device):g} TFLOP/s bf16 peak x {mfu:g} "
                f"MFU (assumed), at least {floor:g} s per optimiser step (assumed)")
    out = [f"profile {profile} on {device}: {head}",
           f"{'stage':44} {'runs':>5} {'steps':>9} {'tokens':>8} {'FLOPs':>8} {'time':>9}  basis"]
    for ln, secs, basis in rows:
        out.append(f"{ln.stage:44} {ln.runs:>5} {ln.steps:>9,} {_human(ln.tokens):>8} {_human(ln.flops):>8} "
                   f"{_clock(secs):>9}  {basis}")
    known = [s for _, s, _ in rows if s is not None]
    total = _clock(sum(known)) + ("" if len(known) == len(rows) else " (+ n/a)")
    out.append(f"{'total (training stages, one device, one after the other)':44} {'':>5} "
               f"{sum(ln.steps for ln, _, _ in rows):>9,} {'':>8} {_human(sum(ln.flops for ln, _, _ in rows)):>8} "
               f"{total:>9}")
    if glue_dir is None:
        out.append("GLUE: no Leaner-GLUE files found (data/leaner/glue or <data.local_dir>/leaner/glue): not counted")
    return "\n".join(out)
