"""EXP2's instruction data: the paired instruction sets of both sides and the one instruction template.

Instruction data sources (``instruct.source``)
---------------------------------------------
``code_pairs`` (offline default; this machine, tests, CI)
    The released copy has no instruction file, so the paired instruction sets are built from released
    material that is instruction-shaped on both sides: the code genre's prompt/response pairs. The leaner
    twin comes from ``instruct.leaner_corpus`` (default ``data/leaner/corpus``, the ``leaner_corpus`` stage)
    and the original from ``instruct.ori_corpus`` (``data/prepared/corpus/ori``); both are document shards
    with ``parts = {prompt, response}`` for code, paired by ``doc_id`` (the release's sha256 pairing hash),
    so both sides hold exactly the same tasks. NOT the study's instruction data: say so with any result. Leaner
    code exists only for the released validation/test splits; the default split map puts released validation
    into our ``train`` and released test into ``validation``.
``released``  (online)
    The study's own data: the released Leaner-Instruct file (leaner side) and the public alpaca-cleaned set
    (original side; the study's source), downloaded from pinned URLs (``instruct.online``), verified
    against a sha256 when one is configured, and split into train/validation by a hash of each record.
    Any URL may be a local path or ``file://`` URL (air-gapped mirrors, tests).

Every example is formatted with ONE instruction template (``instruct.template``, registered in
``TEMPLATES``), the same one the ``generate`` stage uses to ask the Leaner-Eval questions. The default,
``study``, is the released ``prompts/templates/instruction_template.txt``: ``### TASK INPUT:\n{input}\n\n###
RESPONSE:\n`` where ``{input}`` is the instruction, or ``instruction + "\n" + input`` when the record has an
input (the study's ``unify_set_split_text_field``); the response follows directly. Output records
(``data/instruct/<side>/<split>.jsonl``)::

    id, side, split, source, instruction, input, output, prompt (template applied), response (= output)

Instruction tuning itself (``instruct.tune``) is in ``tinyhelen.exp2.tune``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyhelen import timing
from tinyhelen.io import InputError, atomic_path, iter_jsonl, read_bytes, write_jsonl
from tinyhelen.study import STUDY_TEMPLATE
from tinyhelen.exp2.config import SIDES, SPLITS, InstructConfig, OnlineFile

log = logging.getLogger(__name__)


# The instruction templates (training data and generation prompts), by ``instruct.template`` name. The
# response follows the prompt directly and ends with <|endoftext|>.
TEMPLATES: dict[str, str] = {
    "study": STUDY_TEMPLATE,  # {input} = instruction, or instruction + "\n" + input
    "alpaca_v1": "### Instruction:\n{instruction}\n\n{input_block}### Response:\n",  # earlier default
}


def format_prompt(instruction: str, input_text: str = "", template: str = "study") -> str:
    """Apply the instruction template ``template`` (``TEMPLATES``; training examples and generation)."""
    if template == "study":  # the study joins instruction and input with one newline and strips nothing
        return STUDY_TEMPLATE.format(input=f"{instruction}\n{input_text}" if input_text else instruction)
    block = f"### Input:\n{input_text.strip()}\n\n" if input_text and input_text.strip() else ""
    return TEMPLATES[template].format(instruction=instruction.strip(), input_block=block)


def template_headers(template: str = "study") -> tuple[str, ...]:
    """The section headers of an instruction template (``### TASK INPUT:``, ``### RESPONSE:`` for ``study``),
    read from a prompt it formats: where a generated answer runs on into a new example."""
    import re

    return tuple(dict.fromkeys(re.findall(r"^###[^\n]*:", format_prompt("i", "x", template), flags=re.M)))


# ----------------------------------------------------------------------------------------- data
def make_example(ex_id: str, side: str, split: str, source: str, instruction: str, input_text: str,
                 output: str, template: str = "study") -> dict[str, Any]:
    return {"id": ex_id, "side": side, "split": split, "source": source, "instruction": instruction,
            "input": input_text, "output": output, "prompt": format_prompt(instruction, input_text, template),
            "response": output}


def code_pair_examples(leaner_shard: Path, ori_shard: Path, split: str, template: str = "study"
                       ) -> tuple[dict[str, list], dict[str, int]]:
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
                               docs[side][d]["response"], template) for d in common] for side in SIDES}
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
        log.warning("%s: not pinned (instruct.online.allow_unpinned); sha256 seen = %s", url, got)
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


def released_examples(path: Path, side: str, validation_fraction: float, source: str, template: str = "study"
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
        out[split].append(make_example(ex_id, side, split, source, ins, inp, outp, template))
    return out, stats


def cap_examples(examples: list[dict], n: int | None, seed: int) -> list[dict]:
    """A seeded subsample of ``n`` examples in their order (all if ``n`` is None or larger)."""
    if n is None or len(examples) <= n:
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def build_instruct_data(cfg: InstructConfig, out_dir: Path | str = "data/instruct", seed: int = 1234
                        ) -> dict[str, Any]:
    """Write ``out_dir/<side>/<split>.jsonl`` for both sides atomically; return stats for the metrics file."""
    t0 = time.time()
    data: dict[str, dict[str, list]] = {side: {} for side in SIDES}
    stats: dict[str, Any] = {"source": cfg.source, "template": cfg.template}
    if cfg.source == "code_pairs":
        for split in SPLITS:
            ex, st = code_pair_examples(Path(cfg.leaner_corpus) / f"{split}.jsonl",
                                        Path(cfg.ori_corpus) / f"{split}.jsonl", split, cfg.template)
            stats[f"pairing_{split}"] = st
            for side in SIDES:
                data[side][split] = ex[side]
        stats["inputs"] = {"leaner": cfg.leaner_corpus, "ori": cfg.ori_corpus}
    else:
        unpinned = [side for side in SIDES if getattr(cfg.online, side).sha256 is None]
        if unpinned and not cfg.online.allow_unpinned:
            raise InputError(", ".join(getattr(cfg.online, s).url for s in unpinned),
                             f"instruct.online.{'/'.join(unpinned)}.sha256 is not pinned: set the file's sha256 "
                             "(or instruct.online.allow_unpinned: true to accept whatever the URL serves)")
        stats["inputs"] = {}
        for side in SIDES:
            f: OnlineFile = getattr(cfg.online, side)
            path, digest = fetch(f.url, Path(cfg.online.download_dir), sha256=f.sha256,
                                 timeout=cfg.online.timeout_s, retries=cfg.online.retries)
            name = "leaner_instruct" if side == "leaner" else "alpaca_cleaned"
            ex, st = released_examples(path, side, cfg.online.validation_fraction, name, cfg.template)
            data[side] = ex
            stats["inputs"][side] = {"url": f.url, "sha256": digest, "verified": f.sha256 is not None, **st}
    with atomic_path(out_dir) as tmp:
        for side in SIDES:
            for split in SPLITS:
                exs = cap_examples(data[side][split], cfg.max_examples.get(split), seed)
                if not exs:
                    raise InputError(out_dir, f"no {split} instruction examples for side {side} "
                                              f"(source {cfg.source}); check the inputs")
                write_jsonl(tmp / side / f"{split}.jsonl", exs)
                stats.setdefault("examples", {}).setdefault(side, {})[split] = len(exs)
                stats.setdefault("words", {}).setdefault(side, {})[split] = sum(
                    len(e["prompt"].split()) + len(e["response"].split()) for e in exs)
    timing.record(seconds=round(time.time() - t0, 2))
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
