"""Pretraining objectives: a batch of packed token blocks -> model inputs with ``labels``.

An objective is ``fn(batch, generator, rows=None, device=None) -> model kwargs``; its random choices come from
``generator`` only (seeded per step by the caller), so masks do not depend on resuming. The random numbers are
drawn for the whole ``batch`` (on the host); ``rows`` (a slice) keeps some of its rows, built on ``device``
(default: the batch's), so a process that builds its rows of a global batch gets exactly the masks those rows
have in the whole batch, and an empty ``rows`` only advances the generator (returns ``{}``). Everything that
decides a shape is computed on the host from the host batch: no device synchronisation.

``OBJECTIVES`` maps the names an ``ArchSpec`` uses (``tinyhelen.exp1.models``) to factories ``(tokenizer, cfg)
-> objective``: ``clm`` causal LM (LLaMA, Mamba), ``mlm`` masked LM (BERT: 15%, 80/10/10), ``plm`` permutation
LM (XLNet: span masking and a factorisation-order ``perm_mask`` with a ``target_mapping`` over the predicted
positions only).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Batch = dict[str, torch.Tensor]
Objective = Callable[..., Batch]  # (batch, generator, rows=None, device=None)


def _take(tensors: dict[str, torch.Tensor], rows: slice | None, device: torch.device | None) -> dict[str, torch.Tensor]:
    """``rows`` of each tensor, on ``device`` (pinned, non-blocking to a GPU)."""
    from tinyhelen.train.compute import to_device

    out = {k: v[rows] if rows is not None else v for k, v in tensors.items()}
    return to_device(out, device) if device is not None else out


def _empty(ids: torch.Tensor, rows: slice | None) -> bool:
    return rows is not None and not len(range(ids.shape[0])[rows])


def clm_objective(pad_id: int | None = None) -> Objective:
    """Causal LM: labels = input ids (``labels`` in the batch win, e.g. prompt tokens set to -100)."""

    def fn(batch: Batch, gen: torch.Generator, rows: slice | None = None, device: Any = None) -> Batch:
        if _empty(batch["input_ids"], rows):
            return {}
        batch = _take(batch, rows, device)
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
    """BERT masked LM: ``probability`` of the non-special tokens are predicted (labels elsewhere -100); of
    those 80% become ``<mask>``, 10% a random token, 10% stay. Built on ``device``."""
    special_ids = sorted(set(tokenizer.all_special_ids))
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)

    def fn(batch: Batch, gen: torch.Generator, rows: slice | None = None, device: Any = None) -> Batch:
        shape = batch["input_ids"].shape
        draws = {"pick": torch.rand(shape, generator=gen), "how": torch.rand(shape, generator=gen),
                 "random_ids": torch.randint(vocab, shape, generator=gen)}
        if _empty(batch["input_ids"], rows):
            return {}
        dev = torch.device(device) if device is not None else batch["input_ids"].device
        got = _take({**batch, **draws}, rows, dev)
        ids, r = got["input_ids"], got["how"]
        special = torch.isin(ids, torch.tensor(special_ids, device=dev))
        picked = (got["pick"] < probability) & ~special
        labels = ids.masked_fill(~picked, -100)
        out_ids = torch.where(picked & (r < 0.8), torch.full_like(ids, mask_id), ids)
        out_ids = torch.where(picked & (r >= 0.8) & (r < 0.9), got["random_ids"], out_ids)
        out = {"input_ids": out_ids, "labels": labels}
        if "attention_mask" in got:
            out["attention_mask"] = got["attention_mask"]
        return out

    return fn


def span_mask(b: int, length: int, probability: float, max_span: int, gen: torch.Generator,
              device: torch.device | str = "cpu") -> torch.Tensor:
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
    is ``(B, K, L)`` over the K predicted positions (rows padded with zeros / label -100; K: the most targets
    of a row of the whole batch), so the query stream costs K/L of the full sequence. Inputs are not replaced
    by ``<mask>``: the permutation mask alone hides targets.

    The factorisation order of a row: a random permutation ``p`` of the first half of the positions and the
    same permutation shifted by half for the second half (``rank[j] = p[j]``, ``rank[j + L/2] = p[j] + L/2``);
    tokens that are neither targets nor special get rank -1 (seen by everyone). ``perm_mask[i, j, k] = 1``
    (j may not see k) when k is a target and ``rank[j] <= rank[k]``: a target sees neither itself nor
    targets later in the order. The targets and the order (``(B, L)``) are drawn on the host; the ``(B, L, L)``
    mask and the target mapping are built on the device for the rows kept."""
    special_ids = sorted(set(tokenizer.all_special_ids))

    def fn(batch: Batch, gen: torch.Generator, rows: slice | None = None, device: Any = None) -> Batch:
        ids = batch["input_ids"].cpu()
        b, length = ids.shape
        if length % 2:
            raise ValueError("permutation LM needs an even sequence length")
        func = torch.isin(ids, torch.tensor(special_ids))  # functional tokens (<eos>)
        masked = span_mask(b, length, probability, max_span, gen) & ~func
        half = length // 2
        perm = torch.argsort(torch.rand((b, half), generator=gen), dim=1)
        if _empty(ids, rows):
            return {}
        k = max(1, int(masked.sum(1).max()))  # over the whole batch, on the host
        dev = torch.device(device) if device is not None else batch["input_ids"].device
        got = _take({"ids": ids, "masked": masked, "func": func, "perm": perm}, rows, dev)
        ids, masked, perm = got["ids"], got["masked"], got["perm"]
        b = ids.shape[0]
        rank = torch.cat([perm, perm + half], dim=1).masked_fill(~masked & ~got["func"], -1)
        perm_mask = ((rank[:, :, None] <= rank[:, None, :]) & masked[:, None, :]).float()
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
