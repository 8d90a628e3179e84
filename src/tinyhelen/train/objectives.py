"""Pretraining objectives: a batch of packed token blocks -> model inputs with ``labels``.

An objective is ``fn(batch, generator) -> model kwargs``; its random choices come from ``generator`` only
(seeded per step by the caller), so masks do not depend on resuming. ``OBJECTIVES`` maps the names an
``ArchSpec`` uses (``tinyhelen.exp1.models``) to factories ``(tokenizer, cfg) -> objective``: ``clm`` causal LM
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


def _draw(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn from the CPU generator ``gen`` and moved to ``device``: the masks do not
    depend on the device the objective runs on."""
    return torch.rand(shape, generator=gen).to(device, non_blocking=True)


def mlm_objective(tokenizer: Any, probability: float = 0.15) -> Objective:
    """BERT masked LM: ``probability`` of the non-special tokens are predicted (labels elsewhere -100); of
    those 80% become ``<mask>``, 10% a random token, 10% stay. Built on the device of the batch."""
    special_ids = sorted(set(tokenizer.all_special_ids))
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        dev = ids.device
        special = torch.isin(ids, torch.tensor(special_ids, device=dev))
        picked = (_draw(ids.shape, gen, dev) < probability) & ~special
        r = _draw(ids.shape, gen, dev)
        random_ids = torch.randint(vocab, ids.shape, generator=gen).to(dev, non_blocking=True)
        labels = ids.masked_fill(~picked, -100)
        out_ids = torch.where(picked & (r < 0.8), torch.full_like(ids, mask_id), ids)
        out_ids = torch.where(picked & (r >= 0.8) & (r < 0.9), random_ids, out_ids)
        out = {"input_ids": out_ids, "labels": labels}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"]
        return out

    return fn


def span_mask(b: int, length: int, probability: float, max_span: int, gen: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """XLNet's span sampling, vectorised: each row is cut into consecutive contexts of ``floor(span /
    probability)`` tokens (``span`` uniform in 1..max_span); a span of ``span`` tokens at a uniform offset in
    each context is masked. ``(b, length)`` bool."""
    n_seg = length // max(1, int(1 / probability)) + 1  # contexts per row are at least 1/probability long
    span = torch.randint(1, max_span + 1, (b, n_seg), generator=gen)
    ctx = torch.floor(span.double() / probability).long()
    offset = torch.floor(torch.rand((b, n_seg), generator=gen, dtype=torch.float64)
                         * (ctx - span + 1).double()).long()
    seg_start = torch.cumsum(ctx, dim=1) - ctx
    start = (seg_start + offset).clamp(max=length)
    stop = (start + span).clamp(max=length)
    start, stop = start.to(device), stop.to(device)
    edges = torch.zeros(b, length + 1, dtype=torch.int32, device=device)
    edges.scatter_add_(1, start, torch.ones_like(start, dtype=torch.int32))
    edges.scatter_add_(1, stop, -torch.ones_like(stop, dtype=torch.int32))
    return edges.cumsum(1)[:, :length] > 0


def plm_objective(tokenizer: Any, probability: float = 1 / 6, max_span: int = 5) -> Objective:
    """XLNet permutation LM (the span sampling and leakage-free ``perm_mask`` of transformers'
    ``DataCollatorForPermutationLanguageModeling``), predicting only the sampled spans: ``target_mapping``
    is ``(B, K, L)`` over the K predicted positions (rows padded with zeros / label -100), so the query
    stream costs K/L of the full sequence. Inputs are not replaced by ``<mask>``: the permutation mask
    alone hides targets.

    The factorisation order of a row: a random permutation ``p`` of the first half of the positions and the
    same permutation shifted by half for the second half (``rank[j] = p[j]``, ``rank[j + L/2] = p[j] + L/2``);
    tokens that are neither targets nor special get rank -1 (seen by everyone). ``perm_mask[i, j, k] = 1``
    (j may not see k) when k is a target and ``rank[j] <= rank[k]``: a target sees neither itself nor
    targets later in the order. Vectorised over rows, built on the device of the batch; the random draws come
    from the CPU generator, so masks do not depend on the device."""
    special_ids = sorted(set(tokenizer.all_special_ids))

    def fn(batch: Batch, gen: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        b, length = ids.shape
        dev = ids.device
        if length % 2:
            raise ValueError("permutation LM needs an even sequence length")
        func = torch.isin(ids, torch.tensor(special_ids, device=dev))  # functional tokens (<eos>)
        masked = span_mask(b, length, probability, max_span, gen, dev) & ~func
        half = length // 2
        perm = torch.argsort(torch.rand((b, half), generator=gen), dim=1).to(dev, non_blocking=True)
        rank = torch.cat([perm, perm + half], dim=1).masked_fill(~masked & ~func, -1)
        perm_mask = ((rank[:, :, None] <= rank[:, None, :]) & masked[:, None, :]).float()
        k = max(1, int(masked.sum(1).max()))
        slot = (masked.long().cumsum(1) - 1).masked_fill(~masked, k)  # k: a spare column, dropped below
        target_mapping = torch.zeros(b, k + 1, length, device=dev)
        target_mapping.scatter_(1, slot[:, None, :], masked[:, None, :].float())
        labels = torch.full((b, k + 1), -100, dtype=torch.long, device=dev)
        labels.scatter_(1, slot, ids.masked_fill(~masked, -100))
        return {"input_ids": ids, "perm_mask": perm_mask, "target_mapping": target_mapping[:, :k].contiguous(),
                "labels": labels[:, :k].contiguous()}

    return fn


OBJECTIVES: dict[str, Callable[[Any, Any], Objective]] = {
    "clm": lambda tok, cfg: clm_objective(),
    "mlm": lambda tok, cfg: mlm_objective(tok, cfg.mlm_probability),
    "plm": lambda tok, cfg: plm_objective(tok, cfg.plm_probability, cfg.plm_max_span),
}


def make_objective(name: str, tokenizer: Any, cfg: Any) -> Objective:
    """The objective ``name`` (``OBJECTIVES``) for ``tokenizer``; ``cfg`` gives its knobs (``tinyhelen.exp1.pretrain.
    PretrainConfig``: ``mlm_probability``, ``plm_probability``, ``plm_max_span``)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown pretraining objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](tokenizer, cfg)
