"""EXP2 instruction data and instruction tuning (supervised fine-tuning, SFT) of pretrained LLaMA models.

Instruction data sources (``instruct.source``)
---------------------------------------------
``code_pairs`` (offline default; this machine, tests, CI)
    The released copy has no instruction file, so the paired instruction sets are built from released
    material that is instruction-shaped on both sides: the code genre's prompt/response pairs. The leaner
    twin comes from ``instruct.leaner_corpus`` (default ``data/leaner/corpus``, the ``leaner_corpus`` stage)
    and the original from ``instruct.ori_corpus`` (``data/prepared/corpus/ori``); both are document shards
    with ``parts = {prompt, response}`` for code, paired by ``doc_id`` (the release's sha256 pairing hash),
    so both sides hold exactly the same tasks. NOT the study's instruction data: say so with any result. Leaner code exists only for the released validation/test splits;
    the default split map puts released validation into our ``train`` and released test into ``validation``.
``released``  (online)
    The study's own data: the released Leaner-Instruct file (leaner side) and the public alpaca-cleaned set
    (original side; the study's source), downloaded from pinned URLs (``instruct.online``), verified
    against a sha256 when one is configured, and split into train/validation by a hash of each record.
    Any URL may be a local path or ``file://`` URL (air-gapped mirrors, tests).

Every example is formatted with ONE instruction template (``PROMPT_TEMPLATE``), the same one the
``generate`` stage uses to ask the Leaner-Eval questions. Output records (``data/instruct/<side>/<split>.jsonl``)::

    id, side, split, source, instruction, input, output, prompt (template applied), response (= output)

Instruction tuning (``instruct.tune``)
--------------------------------------
Starting from ``data/models/pretrain/llama-<pretrain side>/final`` (HF ``save_pretrained`` + tokenizer),
each of the four recipes {pretrain leaner, ori} x {tune leaner, ori} is tuned with AdamW, linear warm-up
then cosine decay, gradient clipping, seeded batches. The loss covers the response tokens (+ the closing
``<|endoftext|>``) only by default; ``tune.loss_on_prompt: true`` also trains on the prompt tokens, as the
study did. Checkpoints are written every ``tune.checkpoint_every`` steps as ``step-NNNNNN/`` plus ``final/``
(the last step) under ``data/models/instruct/<pretrain>-<tune>/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinyhelen.config import Section
from tinyhelen.io import InputError, atomic_path, iter_jsonl, read_bytes, write_json, write_jsonl

log = logging.getLogger(__name__)

SIDES = ("leaner", "ori")
SPLITS = ("train", "validation")
RECIPES = tuple(f"{p}-{t}" for p in SIDES for t in SIDES)  # "<pretrain side>-<tune side>"

# The one instruction template (training data and generation prompts). ``{input_block}`` is empty or
# "### Input:\n<input>\n\n". The response follows the prompt directly and ends with <|endoftext|>.
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
TEMPLATE_ID = "instruct-v1"


def format_prompt(instruction: str, input_text: str = "") -> str:
    """Apply the instruction template (used for training examples and for generation)."""
    block = f"### Input:\n{input_text.strip()}\n\n" if input_text and input_text.strip() else ""
    return PROMPT_TEMPLATE.format(instruction=instruction.strip(), input_block=block)


# ----------------------------------------------------------------------------------------- config
class _Sub(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnlineFile(_Sub):
    """One downloadable instruction file: pinned URL (or local path / file:// URL) and its sha256."""

    url: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="expected sha256; null = not verified (the digest seen is logged "
                                           "and recorded in reports/instruct_data.json)")


class OnlineSources(_Sub):
    """``instruct.online``: the study's instruction data (needs the network unless the URLs are local)."""

    leaner: OnlineFile = OnlineFile(
        url="https://raw.githubusercontent.com/EmpathYang/TinyHelen/1aa4c03/data/leaner/instruction0000.jsonl")
    ori: OnlineFile = OnlineFile(
        url="https://huggingface.co/datasets/yahma/alpaca-cleaned/resolve/"
            "12567cabf869d7c92e573c7c783905fc160e9639/alpaca_data_cleaned.json")
    download_dir: str = "data/raw/instruct"
    validation_fraction: float = Field(0.02, gt=0, lt=1)
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(3, ge=0)


class TuneConfig(_Sub):
    """``instruct.tune``: supervised fine-tuning hyper-parameters (CPU default: tiny, seconds per recipe)."""

    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    max_len: int = Field(192, ge=16, description="tokens per example (prompt is cut first, keeping >= 1/2)")
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    loss_on_prompt: bool = Field(False, description="true: loss on prompt tokens too (the study's setting)")
    checkpoint_every: int = Field(25, ge=1)
    eval_examples: int = Field(64, ge=1, description="validation examples for the loss at each checkpoint")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=0, description="torch CPU threads (0 = torch's default). 1: tiny models gain "
                                              "little from more; several threads slow ~10x on busy cores")


class InstructConfig(Section):
    """``instruct:`` section of params.yaml."""

    source: Literal["code_pairs", "released"] = "code_pairs"
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


# ----------------------------------------------------------------------------------------- data
def make_example(ex_id: str, side: str, split: str, source: str, instruction: str, input_text: str,
                 output: str) -> dict[str, Any]:
    return {"id": ex_id, "side": side, "split": split, "source": source, "instruction": instruction,
            "input": input_text, "output": output, "prompt": format_prompt(instruction, input_text),
            "response": output.strip()}


def code_pair_examples(leaner_shard: Path, ori_shard: Path, split: str) -> tuple[dict[str, list], dict[str, int]]:
    """Paired instruction examples from the code genre of two prepared shards (same doc_id on both sides).

    Returns ``({side: [example, ...]}, stats)``; documents present on one side only are counted, not
    silently dropped (``unpaired_leaner`` / ``unpaired_ori``)."""
    docs: dict[str, dict[str, dict]] = {}
    for side, shard in (("leaner", leaner_shard), ("ori", ori_shard)):
        docs[side] = {}
        for line, rec in iter_jsonl(shard):
            if not isinstance(rec, dict) or "genre" not in rec:
                raise InputError(shard, "not a prepared document record (no 'genre')", line)
            if rec["genre"] != "code":
                continue
            parts = rec.get("parts")
            if not isinstance(parts, dict) or not isinstance(parts.get("prompt"), str) \
                    or not isinstance(parts.get("response"), str):
                raise InputError(shard, "code document without parts {prompt, response}", line)
            if not parts["prompt"].strip() or not parts["response"].strip():
                raise InputError(shard, "code document with an empty prompt or response", line)
            docs[side][rec["doc_id"]] = parts
    common = sorted(set(docs["leaner"]) & set(docs["ori"]))  # sorted: order independent of file order
    stats = {"paired": len(common), "unpaired_leaner": len(set(docs["leaner"]) - set(common)),
             "unpaired_ori": len(set(docs["ori"]) - set(common))}
    out = {side: [make_example(d, side, split, "code_pairs", docs[side][d]["prompt"], "",
                               docs[side][d]["response"]) for d in common] for side in SIDES}
    return out, stats


def fetch(url: str, download_dir: Path, *, sha256: str | None, timeout: float, retries: int
          ) -> tuple[Path, str]:
    """Local copy of ``url`` (http(s) download, ``file://`` URL or plain path) and its sha256.

    Downloads go to ``download_dir`` (kept, reused when the checksum matches). A configured sha256 that
    does not match raises InputError naming the file."""
    from tinyhelen.data import download, sha256_file

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("http", "https"):
        name = Path(parsed.path).name or "download"
        digest_dir = hashlib.sha256(url.encode()).hexdigest()[:12]
        path = Path(download_dir) / digest_dir / name
        if not path.exists() or (sha256 and sha256_file(path) != sha256):
            log.info("downloading %s -> %s", url, path)
            download(url, path, timeout=timeout, retries=retries)
    elif parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "":
        path = Path(url)
    else:
        raise InputError(url, f"unsupported URL scheme {parsed.scheme!r} (http, https, file or a path)")
    if not path.exists():
        raise InputError(path, "instruction file not found")
    got = sha256_file(path)
    if sha256 and got != sha256:
        raise InputError(path, f"checksum mismatch: sha256 {got[:16]}... expected {sha256[:16]}... "
                               "(file corrupt or changed upstream)")
    if not sha256:
        log.warning("%s: no sha256 configured; sha256 seen = %s (pin it in instruct.online)", url, got)
    return path, got


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array file (alpaca) or JSONL (Leaner-Instruct); yields (record number / line, record)."""
    raw = read_bytes(path)
    head = raw.lstrip()[:1]
    if head == b"[":
        try:
            arr = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON array: {exc}") from None
        yield from enumerate(arr, 1)
    else:
        yield from iter_jsonl(path)


_FIELD_ALIASES = {"instruction": ("instruction", "task"), "input": ("input",), "output": ("output", "response")}


def parse_instruction_record(rec: Any, path: Path, line: int) -> tuple[str, str, str]:
    """(instruction, input, output) of an alpaca-style record (also accepts task/response names)."""
    if not isinstance(rec, dict):
        raise InputError(path, f"expected a JSON object, got {type(rec).__name__}", line)
    vals = {}
    for key, names in _FIELD_ALIASES.items():
        val = next((rec[n] for n in names if n in rec), "" if key == "input" else None)
        if not isinstance(val, str):
            raise InputError(path, f"missing or non-string field {key!r} (fields: {sorted(rec)[:8]})", line)
        vals[key] = val
    if not vals["instruction"].strip() or not vals["output"].strip():
        raise InputError(path, "empty instruction or output", line)
    return vals["instruction"], vals["input"], vals["output"]


def released_examples(path: Path, side: str, validation_fraction: float, source: str
                      ) -> tuple[dict[str, list], dict[str, int]]:
    """Examples of one online file, split into train/validation by a hash of the record content."""
    out: dict[str, list] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    stats = {"records": 0, "duplicates": 0}
    for line, rec in _records(path):
        ins, inp, outp = parse_instruction_record(rec, path, line)
        stats["records"] += 1
        ex_id = hashlib.sha256(json.dumps([ins, inp, outp]).encode()).hexdigest()
        if ex_id in seen:
            stats["duplicates"] += 1  # counted and reported, not silently dropped
            continue
        seen.add(ex_id)
        split = "validation" if int(ex_id[:8], 16) / 0xFFFFFFFF < validation_fraction else "train"
        out[split].append(make_example(ex_id, side, split, source, ins, inp, outp))
    return out, stats


def _cap(examples: list[dict], n: int | None, seed: int) -> list[dict]:
    if n is None or len(examples) <= n:
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def build_instruct_data(cfg: InstructConfig, out_dir: Path | str = "data/instruct", seed: int = 1234
                        ) -> dict[str, Any]:
    """Write ``out_dir/<side>/<split>.jsonl`` for both sides atomically; return stats for the metrics file."""
    t0 = time.time()
    data: dict[str, dict[str, list]] = {side: {} for side in SIDES}
    stats: dict[str, Any] = {"source": cfg.source, "template_id": TEMPLATE_ID}
    if cfg.source == "code_pairs":
        for split in SPLITS:
            ex, st = code_pair_examples(Path(cfg.leaner_corpus) / f"{split}.jsonl",
                                        Path(cfg.ori_corpus) / f"{split}.jsonl", split)
            stats[f"pairing_{split}"] = st
            for side in SIDES:
                data[side][split] = ex[side]
        stats["inputs"] = {"leaner": cfg.leaner_corpus, "ori": cfg.ori_corpus}
    else:
        stats["inputs"] = {}
        for side in SIDES:
            f: OnlineFile = getattr(cfg.online, side)
            path, digest = fetch(f.url, Path(cfg.online.download_dir), sha256=f.sha256,
                                 timeout=cfg.online.timeout_s, retries=cfg.online.retries)
            name = "leaner_instruct" if side == "leaner" else "alpaca_cleaned"
            ex, st = released_examples(path, side, cfg.online.validation_fraction, name)
            data[side] = ex
            stats["inputs"][side] = {"url": f.url, "sha256": digest, "verified": f.sha256 is not None, **st}
    with atomic_path(out_dir) as tmp:
        for side in SIDES:
            for split in SPLITS:
                exs = _cap(data[side][split], cfg.max_examples.get(split), seed)
                if not exs:
                    raise InputError(out_dir, f"no {split} instruction examples for side {side} "
                                              f"(source {cfg.source}); check the inputs")
                write_jsonl(tmp / side / f"{split}.jsonl", exs)
                stats.setdefault("examples", {}).setdefault(side, {})[split] = len(exs)
                stats.setdefault("words", {}).setdefault(side, {})[split] = sum(
                    len(e["prompt"].split()) + len(e["response"].split()) for e in exs)
    stats["seconds"] = round(time.time() - t0, 2)
    log.info("instruct data: %s", {k: stats[k] for k in ("source", "examples")})
    return stats


def read_examples(path: Path | str) -> list[dict[str, Any]]:
    out = []
    for line, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) \
                or not isinstance(rec.get("response"), str):
            raise InputError(path, "instruction record needs string fields 'prompt' and 'response'", line)
        out.append(rec)
    if not out:
        raise InputError(path, "no instruction examples")
    return out


# ----------------------------------------------------------------------------------------- SFT
def encode_example(tok: Any, prompt: str, response: str, max_len: int, loss_on_prompt: bool
                   ) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 = no loss) of ``prompt + response + <eos>``, cut to ``max_len``.

    The prompt keeps at least its first ``max_len // 2`` tokens; the response fills the rest (its tail is
    cut, losing the closing eos when it does not fit)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(p) + len(r) > max_len:
        p = p[:max(max_len // 2, max_len - len(r))]
        r = r[:max_len - len(p)]
    ids = p + r
    labels = (list(p) if loss_on_prompt else [-100] * len(p)) + list(r)
    return ids, labels


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    n = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):  # right padding (training)
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return input_ids, mask, labels


def lr_at(step: int, cfg: TuneConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("instruct.tune.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def _eval_loss(model, data: list, cfg: TuneConfig, pad_id: int, device) -> float:
    import torch

    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), cfg.batch_size):
            ids, mask, labels = (t.to(device) for t in collate(data[i:i + cfg.batch_size], pad_id))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tgt = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            tot += float(loss)
            n += int((tgt != -100).sum())
    model.train()
    return tot / max(n, 1)


def checkpoint_steps(cfg: TuneConfig) -> list[int]:
    """Steps at which checkpoints are saved (every ``checkpoint_every`` and always the last step)."""
    steps = list(range(cfg.checkpoint_every, cfg.steps + 1, cfg.checkpoint_every))
    return steps if steps and steps[-1] == cfg.steps else [*steps, cfg.steps]


def step_dir(step: int) -> str:
    return f"step-{step:06d}"


def tune(base_dir: Path | str, train_path: Path | str, val_path: Path | str, out_dir: Path | str,
         cfg: TuneConfig, seed: int, recipe: str = "") -> dict[str, Any]:
    """Instruction-tune the causal LM at ``base_dir``; write checkpoints to ``out_dir`` atomically.

    Returns the metrics (losses per checkpoint, throughput, settings)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tqdm import tqdm

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").exists():
        raise InputError(base_dir, "pretrained model not found (config.json missing); run the pretrain stage")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    device = _device(cfg.device)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise InputError(base_dir, "tokenizer lacks pad/eos tokens")
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).to(device)
    model.train()
    enc = lambda exs: [encode_example(tok, e["prompt"], e["response"], cfg.max_len, cfg.loss_on_prompt)  # noqa: E731
                       for e in exs]
    train = enc(read_examples(train_path))
    val_all = read_examples(val_path)
    val = enc(_cap(val_all, cfg.eval_examples, seed))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    rng = random.Random(seed)
    order: list[int] = []
    saves = set(checkpoint_steps(cfg))
    curve: list[dict[str, Any]] = []
    n_tokens, n_loss_tokens, t0 = 0, 0, time.time()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        bar = tqdm(range(1, cfg.steps + 1), desc=f"tune {recipe}", mininterval=5, leave=False)
        running = []
        for step in bar:
            if len(order) < cfg.batch_size:
                perm = list(range(len(train)))
                rng.shuffle(perm)
                order.extend(perm)
            batch = [train[order.pop(0)] for _ in range(cfg.batch_size)]
            ids, mask, labels = (t.to(device) for t in collate(batch, tok.pad_token_id))
            for g in opt.param_groups:
                g["lr"] = lr_at(step - 1, cfg)
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            loss = out.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{recipe}: non-finite loss at step {step}; lower instruct.tune.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            running.append(loss.item())
            n_tokens += int(mask.sum())
            n_loss_tokens += int((labels[:, 1:] != -100).sum())
            if step in saves:
                val_loss = _eval_loss(model, val, cfg, tok.pad_token_id, device)
                train_loss = sum(running) / len(running)
                running = []
                curve.append({"step": step, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                              "lr": lr_at(step - 1, cfg)})
                d = tmp / step_dir(step)
                model.save_pretrained(str(d))
                tok.save_pretrained(str(d))
                log.info("%s step %d: train loss %.4f, val loss %.4f (%.0f tokens/s)", recipe, step,
                         train_loss, val_loss, n_tokens / max(time.time() - t0, 1e-9))
        shutil.copytree(tmp / step_dir(cfg.steps), tmp / "final")
        secs = time.time() - t0
        metrics = {
            "recipe": recipe, "base": str(base_dir), "train_examples": len(train), "val_examples": len(val),
            "steps": cfg.steps, "checkpoints": [step_dir(s) for s in sorted(saves)],
            "loss_on_prompt": cfg.loss_on_prompt, "final_train_loss": curve[-1]["train_loss"],
            "final_val_loss": curve[-1]["val_loss"], "curve": curve, "tokens": n_tokens,
            "loss_tokens": n_loss_tokens, "seconds": round(secs, 2),
            "tokens_per_s": round(n_tokens / max(secs, 1e-9), 1), "device": str(device),
        }
        (tmp / "tune_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_tune_metrics(path: Path | str, metrics: dict[str, Any]) -> None:
    write_json(path, metrics)
