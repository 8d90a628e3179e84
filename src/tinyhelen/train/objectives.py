"""Pretraining objectives: a batch of packed token blocks -> model inputs with ``labels``.

An objective is ``fn(batch, generator) -> model kwargs``; its random choices come from ``generator`` only
(seeded per step by the caller), so masks do not depend on resuming. ``OBJECTIVES`` maps the names an
``ArchSpec`` uses (``tinyhelen.models``) to factories ``(tokenizer, cfg) -> objective``: ``clm`` causal LM
(LLaMA, Mamba), ``mlm`` masked LM (BERT: 15%, 80/10/10), ``plm`` permutation LM (XLNet: span masking and
a factorisation-order ``perm_mask`` with a ``target_mapping`` over the predicted positions only).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Batch = dict[str, torch.Tensor]
Objective = Callable[[Batch, torch.Generator], Batch]


def clm_objective(pad_id: int | None = None) -> Objective:
    """Causal LM: labels = input ids (``labels`` in the batch win, e.g. prompt tokens set to -100)."""

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        labels = batch.get("labels")
        if labels is None:
            labels = ids.clone()
            if pad_id is not None:
                labels[ids == pad_id] = -100
        out = {"input_ids": ids, "labels": labels}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"]
        return out

    return fn


def mlm_objective(tokenizer: Any, probability: float = 0.15) -> Objective:
    """BERT masked LM: ``probability`` of the non-special tokens are predicted; of those 80% become
    ``<mask>``, 10% a random token, 10% stay."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"].clone()
        labels = ids.clone()
        prob = torch.full(ids.shape, probability)
        prob[torch.isin(ids, special)] = 0.0
        picked = torch.bernoulli(prob, generator=gen).bool()
        labels[~picked] = -100
        r = torch.rand(ids.shape, generator=gen)
        ids[picked & (r < 0.8)] = mask_id
        rand_pos = picked & (r >= 0.8) & (r < 0.9)
        ids[rand_pos] = torch.randint(vocab, ids.shape, generator=gen)[rand_pos]
        out = {"input_ids": ids, "labels": labels}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"]
        return out

    return fn


def plm_objective(tokenizer: Any, probability: float = 1 / 6, max_span: int = 5) -> Objective:
    """XLNet permutation LM (the span sampling and leakage-free ``perm_mask`` of transformers'
    ``DataCollatorForPermutationLanguageModeling``), predicting only the sampled spans: ``target_mapping``
    is ``(B, K, L)`` over the K predicted positions (rows padded with zeros / label -100), so the query
    stream costs K/L of the full sequence. Inputs are not replaced by ``<mask>``: the permutation mask
    alone hides targets."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        b, length = ids.shape
        if length % 2:
            raise ValueError("permutation LM needs an even sequence length")
        masked = torch.zeros(b, length, dtype=torch.bool)
        for i in range(b):
            cur = 0
            while cur < length:
                span = int(torch.randint(1, max_span + 1, (1,), generator=gen))
                ctx = int(span / probability)
                start = cur + int(torch.randint(ctx - span + 1, (1,), generator=gen))
                masked[i, start:start + span] = True
                cur += ctx
        func = torch.isin(ids, special)  # functional tokens (<eos> between documents)
        masked &= ~func
        non_func = ~func
        perm_mask = torch.zeros(b, length, length)
        half = length // 2
        for i in range(b):
            order = torch.arange(length).reshape(-1, half).transpose(0, 1)
            order = order[torch.randperm(half, generator=gen)]
            order = order.transpose(0, 1).flatten()
            order = order.masked_fill(~masked[i] & non_func[i], -1)
            perm_mask[i] = ((order.view(-1, 1) <= order.view(1, -1)) & masked[i]).float()
        k = max(1, int(masked.sum(1).max()))
        target_mapping = torch.zeros(b, k, length)
        labels = torch.full((b, k), -100, dtype=torch.long)
        for i in range(b):
            pos = masked[i].nonzero().flatten()
            target_mapping[i, torch.arange(len(pos)), pos] = 1.0
            labels[i, : len(pos)] = ids[i, pos]
        return {"input_ids": ids, "perm_mask": perm_mask, "target_mapping": target_mapping, "labels": labels}

    return fn


OBJECTIVES: dict[str, Callable[[Any, Any], Objective]] = {
    "clm": lambda tok, cfg: clm_objective(),
    "mlm": lambda tok, cfg: mlm_objective(tok, cfg.mlm_probability),
    "plm": lambda tok, cfg: plm_objective(tok, cfg.plm_probability, cfg.plm_max_span),
}


def make_objective(name: str, tokenizer: Any, cfg: Any) -> Objective:
    """The objective ``name`` (``OBJECTIVES``) for ``tokenizer``; ``cfg`` gives its knobs (``tinyhelen.pretrain.
    PretrainConfig``: ``mlm_probability``, ``plm_probability``, ``plm_max_span``)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown pretraining objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](tokenizer, cfg)
