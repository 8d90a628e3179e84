"""Difficulty scorers: a registry of functions that give units a score (low = easy).

Each ``Scorer`` declares what it needs (``NEEDS``: ``texts`` decoded unit texts, ``tokens`` unit token ids,
``reference_model`` the reference LM of ``exp3_reference_lm``, ``model`` the proxy being trained) and
whether it is *static* (every pool unit scored once by the ``exp3_difficulty`` stage) or *online* (scored
inside the trainer with the current model at each expansion). The strategy names of params.yaml
(``curriculum``, ``exp3.strategies``) are the registered scorers plus the two full-data baselines
(``BASELINES``: trainer modes without a scorer); a scorer receives exactly the inputs it declares.

=============  =======  ==========================================================================
scorer         kind     score of a unit
=============  =======  ==========================================================================
random         static   uniform in [0, 1) from sha256(``scorer_seed:unit_id``) (a random order)
sentlen        static   mean words per sentence (``tinyhelen.entropy.sentence_lengths``)
unigram        static   (beyond the study) mean word rarity: mean of ``-log2 p(w)`` over the unit's
                        words, ``p`` = add-one-smoothed unigram frequency over the whole pool
lmloss         static   mean token cross-entropy (nats) under the reference LM trained on held-out data
selfloss       online   mean token cross-entropy under the *current* proxy, recomputed over every unit
                        outside the pool at each expansion inside the trainer (the first pool is a
                        shuffled prefix; ``tinyhelen.exp3.curriculum``)
=============  =======  ==========================================================================

Static scores are written by the ``exp3_difficulty`` stage to ``data/curriculum/difficulty/<name>.jsonl``
(one ``{"unit_id", "score"}`` per pool unit, in pool order), a DVC output keyed by its inputs (units,
tokenizer, reference LM, ``exp3.scorer_seed``). Online scorers and the full-data baselines get a file with
``"score": null`` so every strategy has the same stage inputs. Units with no word (e.g. pure symbols)
score 0 under ``sentlen``/``unigram``; their count is logged. Ties are broken by pool order (stable sort).
Adding a scorer: ``docs/extending.md``.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyhelen.io import InputError, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

NEEDS = frozenset({"texts", "tokens", "reference_model", "model"})
BASELINES: tuple[str, ...] = ("full-random", "full-repeated")  # whole pool from the start, no scorer


@dataclass
class ScoringInputs:
    """What a scorer may use (only what it declares is filled in): unit ids, decoded texts, token ids, the
    reference LM or the current model, and settings."""

    unit_ids: list[str]
    texts: list[str]
    tokens: list[np.ndarray]
    seed: int = 0
    reference_model: Any = None
    model: Any = None
    eos_id: int = 0
    pad_id: int = 0
    batch_size: int = 32
    bf16: bool = False  # score under bf16 autocast (the training device's precision)


ScoreFn = Callable[[ScoringInputs], np.ndarray]


@dataclass(frozen=True)
class Scorer:
    name: str
    fn: ScoreFn
    needs: frozenset[str]
    online: bool = False


SCORERS: dict[str, Scorer] = {}


def register(name: str, *, needs: Sequence[str], online: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn`` as scorer ``name`` needing ``needs`` (a subset of ``NEEDS``); ``online``:
    scored by the trainer with the current model (needs ``model``) instead of once by a stage."""
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"scorer {name!r}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
    if name in BASELINES:
        raise ValueError(f"{name!r} is a baseline strategy, not a scorer name")
    if online and "model" not in needs:
        raise ValueError(f"online scorer {name!r} must need 'model'")

    def deco(fn: ScoreFn) -> ScoreFn:
        SCORERS[name] = Scorer(name, fn, frozenset(needs), online)
        return fn
    return deco


def strategy_names() -> list[str]:
    """Every strategy params.yaml may name: the registered scorers, then the baselines."""
    return [*SCORERS, *BASELINES]


def static_names() -> list[str]:
    return [n for n, s in SCORERS.items() if not s.online]


def check_strategy(name: str) -> str:
    """Pydantic validator helper: ``name`` must be a registered scorer or a baseline."""
    if name not in strategy_names():
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(strategy_names())}")
    return name


@register("random", needs=())
def score_random(inp: ScoringInputs) -> np.ndarray:
    """Uniform in [0, 1) from a hash of (seed, unit id): independent of pool order and size."""
    return np.array([int(hashlib.sha256(f"{inp.seed}:{u}".encode()).hexdigest()[:13], 16) / 16 ** 13
                     for u in inp.unit_ids], dtype=np.float64)


def mean_sentence_length(text: str) -> float:
    """Mean word tokens per sentence (0.0 when the text has no word)."""
    from tinyhelen.entropy.words import sentence_lengths  # imported here: trainer-only stages need not depend on it

    lens = sentence_lengths(text)
    return float(sum(lens) / len(lens)) if lens else 0.0


@register("sentlen", needs=("texts",))
def score_sentlen(inp: ScoringInputs) -> np.ndarray:
    return np.array([mean_sentence_length(t) for t in inp.texts], dtype=np.float64)


def unigram_rarity(texts: Sequence[str]) -> np.ndarray:
    """Mean ``-log2 p(w)`` per text, ``p`` = add-one-smoothed frequency over all ``texts``."""
    from tinyhelen.entropy.words import word_tokens

    toks = [word_tokens(t) for t in texts]
    counts = Counter(w for ws in toks for w in ws)
    total = sum(counts.values()) + len(counts) + 1
    out = np.zeros(len(texts), dtype=np.float64)
    for i, ws in enumerate(toks):
        if ws:
            out[i] = sum(-math.log2((counts[w] + 1) / total) for w in ws) / len(ws)
    return out


@register("unigram", needs=("texts",))
def score_unigram(inp: ScoringInputs) -> np.ndarray:
    return unigram_rarity(inp.texts)


@register("lmloss", needs=("tokens", "reference_model"))
def score_lmloss(inp: ScoringInputs) -> np.ndarray:
    if inp.reference_model is None:
        raise ValueError("lmloss needs the reference LM (exp3_reference_lm stage)")
    return unit_losses(inp.reference_model, inp.tokens, eos_id=inp.eos_id, pad_id=inp.pad_id,
                       batch_size=inp.batch_size, bf16=inp.bf16)


def unit_losses(model, units: Sequence[np.ndarray], *, eos_id: int, pad_id: int, batch_size: int = 32,
                bf16: bool = False, window: int = 1024) -> np.ndarray:
    """Mean token cross-entropy (nats) of each unit under a causal LM, on the model's device.

    Each unit is fed as ``<|endoftext|> + ids`` (the separator the LMs are trained with), so every token
    of the unit is predicted. A unit longer than ``window`` tokens (a whole book as one document) is read in
    consecutive windows, each continuing from the previous window's last token, and its mean is over all
    of its tokens. Windows are batched by length with right padding (masked out); ``bf16``: the forward pass
    runs under bf16 autocast (the loss is taken in fp32)."""
    import torch

    from tinyhelen.train.compute import autocast

    # windows: (unit, tokens fed = context token + up to `window` predicted tokens)
    pieces: list[tuple[int, np.ndarray]] = []
    for i, u in enumerate(units):
        u = np.asarray(u, dtype=np.int64)
        prev = eos_id
        for k in range(0, max(len(u), 1), window):
            chunk = u[k:k + window]
            pieces.append((i, np.concatenate([[prev], chunk])))
            prev = int(chunk[-1]) if len(chunk) else eos_id
    total = np.zeros(len(units), dtype=np.float64)
    count = np.zeros(len(units), dtype=np.float64)
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][1]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            lens = torch.tensor([len(pieces[j][1]) for j in idx])
            x = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(pieces[j][1]) for j in idx], batch_first=True,
                                                padding_value=pad_id).to(device)
            mask = (torch.arange(x.shape[1])[None, :] < lens[:, None]).long().to(device)
            with autocast(device, bf16):
                logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
            tgt = x[:, 1:]
            m = mask[:, 1:].float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                   reduction="none").view(tgt.shape)
            sums, ns = (ce * m).sum(1).double().cpu().numpy(), m.sum(1).double().cpu().numpy()
            units_of = np.array([pieces[j][0] for j in idx])
            np.add.at(total, units_of, sums)
            np.add.at(count, units_of, ns)
    model.train(was_training)
    return total / np.maximum(count, 1)


@register("selfloss", needs=("tokens", "model"), online=True)
def score_selfloss(inp: ScoringInputs) -> np.ndarray:
    return unit_losses(inp.model, inp.tokens, eos_id=inp.eos_id, pad_id=inp.pad_id, batch_size=inp.batch_size,
                       bf16=inp.bf16)


def get(name: str) -> Scorer:
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(SCORERS)}")
    return SCORERS[name]


def score(name: str, inp: ScoringInputs) -> np.ndarray | None:
    """Static scores of strategy ``name`` (None for online scorers and baselines: nothing to score up
    front); checks one finite score per unit."""
    if name in BASELINES or get(name).online:
        return None
    s = get(name).fn(inp)
    if len(s) != len(inp.unit_ids) or not np.all(np.isfinite(s)):
        raise ValueError(f"scorer {name!r} returned {len(s)} scores for {len(inp.unit_ids)} units "
                         f"or non-finite values")
    return np.asarray(s, dtype=np.float64)


def inputs_for(scorer: Scorer, unit_ids: list[str], tokens: list[np.ndarray], tokenizer: Any, **extra: Any
               ) -> ScoringInputs:
    """The ``ScoringInputs`` of ``scorer``: texts decoded only when it needs them; ``extra``: seed,
    models, batch size (a model it does not declare is not passed)."""
    texts = [tokenizer.decode(np.asarray(t).tolist()) for t in tokens] if "texts" in scorer.needs else []
    for key in ("reference_model", "model"):
        if key not in scorer.needs:
            extra.pop(key, None)
        elif extra.get(key) is None:
            raise ValueError(f"scorer {scorer.name!r} needs {key}")
    return ScoringInputs(unit_ids=unit_ids, texts=texts, tokens=tokens, eos_id=tokenizer.eos_token_id,
                         pad_id=tokenizer.pad_token_id, **extra)


def write_scores(path: Path | str, unit_ids: list[str], scores: np.ndarray | None) -> None:
    write_jsonl(path, ({"unit_id": u, "score": None if scores is None else round(float(s), 6)}
                       for u, s in zip(unit_ids, scores if scores is not None else [None] * len(unit_ids))))


def read_scores(path: Path | str, unit_ids: list[str]) -> np.ndarray | None:
    """Scores aligned with ``unit_ids`` (the pool); None when the file holds null scores (online/baseline)."""
    path = Path(path)
    got: dict[str, Any] = {}
    for line, rec in iter_jsonl(path):
        if "unit_id" not in rec or "score" not in rec:
            raise InputError(path, "record lacks unit_id or score", line)
        got[rec["unit_id"]] = rec["score"]
    missing = [u for u in unit_ids if u not in got]
    if missing:
        raise InputError(path, f"{len(missing)} pool units have no score (e.g. {missing[0]}); stale file?")
    vals = [got[u] for u in unit_ids]
    if all(v is None for v in vals):
        return None
    if any(v is None for v in vals):
        raise InputError(path, "mixture of null and numeric scores")
    return np.asarray(vals, dtype=np.float64)
