"""Instruction tuning (supervised fine-tuning, SFT) of a pretrained causal LM on one side's instruction data.

Each example is ``prompt + response + <eos>`` (``encode_example``). As the study (HF ``run_clm``), the
examples are shuffled (seeded), joined and cut into blocks of ``max_len`` tokens (``pack``; the remainder
is dropped) with labels = inputs: the loss covers every token, prompts included (``loss_on_prompt: false``
masks the prompt tokens; ``packing: false`` trains on one padded example per row instead). Batches are
seeded shuffled passes over the blocks (``ShuffledExamples``); training runs through
``tinyhelen.train.loop.train_loop`` with warm-up, then ``lr_schedule`` (linear); the validation loss (mean over the tokens with a loss) is computed at every checkpoint
(``checkpoint_every`` steps and the last step), where the model is saved as ``step-NNNNNN/``.
"""
from __future__ import annotations

import json
import random
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tinyhelen import timing
from tinyhelen.exp2.config import TuneConfig
from tinyhelen.exp2.instruct_data import cap_examples, read_examples
from tinyhelen.io import InputError, atomic_path


def encode_example(tok: Any, prompt: str, response: str, max_len: int | None, loss_on_prompt: bool
                   ) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 = no loss) of ``prompt + response + <eos>``, cut to ``max_len`` (None: whole).

    The prompt keeps at least its first ``max_len // 2`` tokens; the response fills the rest (its tail is
    cut, losing the closing eos when it does not fit)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if max_len is not None and len(p) + len(r) > max_len:
        p = p[:max(max_len // 2, max_len - len(r))]
        r = r[:max_len - len(p)]
    ids = p + r
    labels = (list(p) if loss_on_prompt else [-100] * len(p)) + list(r)
    return ids, labels


def pack(examples: list[tuple[list[int], list[int]]], block: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Blocks of ``block`` tokens: the examples in a seeded shuffled order, joined, cut; the remainder is
    dropped (kept as one shorter block only when there is no full block). Labels travel with their tokens."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    ids = [t for i in order for t in examples[i][0]]
    labels = [t for i in order for t in examples[i][1]]
    n = len(ids) // block * block or len(ids)
    return [(ids[i:i + block], labels[i:i + block]) for i in range(0, n, block)]


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int, length: int | None = None):
    """Right-padded ``(input_ids, attention_mask, labels)`` to ``length`` (default: the longest row)."""
    import torch

    n = length or max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):  # right padding (training)
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return input_ids, mask, labels


class ShuffledExamples:
    """Batch source: ``batch_size`` examples per step, in the order of seeded shuffled passes over the
    examples (a pass that runs out continues into the next one). Counts the tokens that carry a loss (of the
    whole batch, on every process). A process collates its rows, padded to the batch's longest row."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], batch_size: int, seed: int, pad_id: int):
        self.examples, self.batch_size, self.pad_id = examples, batch_size, pad_id
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.loss_tokens = 0

    def size(self, step: int) -> int:
        return self.batch_size

    def batch(self, step: int, shard: Any = None) -> dict[str, Any]:
        while len(self.order) < self.batch_size:
            perm = list(range(len(self.examples)))
            self.rng.shuffle(perm)
            self.order.extend(perm)
        rows = [self.examples[self.order.pop(0)] for _ in range(self.batch_size)]
        self.loss_tokens += sum(t != -100 for _, lab in rows for t in lab[1:])  # labels are shifted by one
        mine = rows[shard.rows(len(rows))] if shard is not None else rows
        ids, mask, labels = collate(mine, self.pad_id, max(len(ids) for ids, _ in rows))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def tokens(self, batch: dict[str, Any]) -> int:
        return int(batch["attention_mask"].sum())

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "order": list(self.order), "loss_tokens": self.loss_tokens}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.setstate(state["rng"])
        self.order, self.loss_tokens = list(state["order"]), state["loss_tokens"]


def token_loss(data: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int):
    """Evaluation function: mean cross-entropy over the tokens that carry a label (``-100``: none); the batches
    are dealt among the processes, the sums of loss and tokens added up."""

    def evaluate(model, ctx) -> float:
        import torch

        from tinyhelen.train import dist

        tot = torch.zeros((), dtype=torch.float64, device=ctx.device)
        n = 0
        for j, i in enumerate(range(0, len(data), batch_size)):
            if not ctx.mine(j):
                continue
            ids, mask, labels = (t.to(ctx.device) for t in collate(data[i:i + batch_size], pad_id))
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tgt = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            tot += loss.double()
            n += sum(t != -100 for _, lab in data[i:i + batch_size] for t in lab[1:])
        tot, n = dist.all_sum(torch.stack([tot, torch.tensor(float(n), dtype=torch.float64, device=ctx.device)])
                              ).tolist()
        return tot / max(int(n), 1)

    return evaluate


def checkpoint_steps(cfg: TuneConfig) -> list[int]:
    """Steps at which checkpoints are saved (every ``checkpoint_every`` and always the last step)."""
    steps = list(range(cfg.checkpoint_every, cfg.steps + 1, cfg.checkpoint_every))
    return steps if steps and steps[-1] == cfg.steps else [*steps, cfg.steps]


def step_dir(step: int) -> str:
    return f"step-{step:06d}"


def tune(base_dir: Path | str, train_path: Path | str, val_path: Path | str, out_dir: Path | str,
         cfg: TuneConfig, seed: int, recipe: str = "", live_dir: Path | str | None = None) -> dict[str, Any]:
    """Instruction-tune the causal LM at ``base_dir`` (``tinyhelen.train.loop.train_loop``); write the checkpoints
    ``step-NNNNNN`` (every ``checkpoint_every`` steps and the last, each with the validation loss) and
    ``final`` to ``out_dir`` atomically (the main process of several). ``live_dir``: DVCLive log of the loss
    curve.

    Returns the metrics (losses per checkpoint, token counts, settings); wall-clock figures go to
    ``tinyhelen.timing``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinyhelen.train import dist
    from tinyhelen.train.compute import device_of
    from tinyhelen.train.live import TrainLog
    from tinyhelen.train.loop import Cadence, Callback, LoopConfig, train_loop

    class SaveCheckpoints(Callback):
        """Save the model and tokenizer to ``<out_dir>/step-NNNNNN`` at every evaluation (main process)."""

        main_process_only = True

        def on_evaluation(self, step: int, val_loss: float | None, row: dict[str, Any], model: Any) -> None:
            model.save_pretrained(str(tmp / step_dir(step)))
            tok.save_pretrained(str(tmp / step_dir(step)))

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").exists():
        raise InputError(base_dir, "pretrained model not found (config.json missing); run the pretrain stage")
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise InputError(base_dir, "tokenizer lacks pad/eos tokens")
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).to(device_of(cfg))

    def encode(exs: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
        enc = [encode_example(tok, e["prompt"], e["response"], None if cfg.packing else cfg.max_len,
                              cfg.loss_on_prompt) for e in exs]
        return pack(enc, cfg.max_len, seed) if cfg.packing else enc

    train_examples = read_examples(train_path)
    train = encode(train_examples)
    val = encode(cap_examples(read_examples(val_path), cfg.eval_examples, seed))
    source = ShuffledExamples(train, cfg.batch_size, seed, tok.pad_token_id)
    every = cfg.checkpoint_every
    with atomic_path(out_dir) if dist.is_main() else nullcontext(None) as tmp:  # one process writes
        if tmp is not None:
            tmp.mkdir(parents=True)
        loop = LoopConfig.of(cfg, lr=cfg.lr, steps=cfg.steps, desc=f"tune {recipe}",
                             cadence=Cadence(every, every, every, eval_at_start=False))
        res = train_loop(model, source, loop, evaluate=token_loss(val, cfg.batch_size, tok.pad_token_id),
                         callbacks=[SaveCheckpoints(), *([TrainLog(live_dir)] if live_dir is not None else [])])
        curve = [{k: r[k] for k in ("step", "tokens", "train_loss", "val_loss", "lr")} for r in res.history]
        metrics = {
            "recipe": recipe, "base": str(base_dir), "train_examples": len(train_examples),
            "packing": cfg.packing, "train_sequences": len(train), "val_sequences": len(val),
            "steps": cfg.steps, "checkpoints": [step_dir(s) for s in checkpoint_steps(cfg)],
            "loss_on_prompt": cfg.loss_on_prompt, "final_train_loss": curve[-1]["train_loss"],
            "final_val_loss": curve[-1]["val_loss"], "curve": curve, "tokens": res.final["tokens_seen"],
            "loss_tokens": source.loss_tokens, "device": res.final["device"],
        }
        if tmp is not None:
            shutil.copytree(tmp / step_dir(cfg.steps), tmp / "final")
            (tmp / "tune_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    timing.record(**res.timing)
    return metrics
