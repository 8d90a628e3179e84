"""What the "Protocol vs study" table reads from the objects in effect, not from a description: the learning-rate
schedule the training loop computes for a params section, the model configs and blocks the registry builds for
the paper preset, the weights the GLUE fine-tuning keeps for the test split, the labels and blocks instruction
tuning builds.
A changed behaviour changes the row (``tests/test_protocol.py`` mutates each and sees the row change)."""
from __future__ import annotations

import math
from typing import Any


class StubTokenizer:
    """The vocabulary size and special ids a model config needs, and a tokenizer call that maps each word to
    an id (enough to build the paper preset's config and instruction-tuning examples without a trained BPE)."""

    pad_token_id, eos_token_id, bos_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, 4, 5

    def __len__(self) -> int:
        return 64

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [6 + len(w) % 50 for w in text.split()]}


def schedule(section: Any, steps: int = 1000) -> str:
    """The shape of the learning rate ``tinyhelen.train.optim.lr_at`` gives over the steps after warm-up, as
    "<linear|cosine|constant> to <end> x lr" (read from the rates it returns for ``section``, peak 1)."""
    from tinyhelen.train.optim import lr_at

    warm = section.warmup_steps
    total = max(steps, warm + 10)
    span = total - warm
    after = [lr_at(s, 1.0, total, section) for s in range(warm, total + 1)]
    end = after[-1]
    shapes = {"constant": lambda t: 1.0, "linear": lambda t: end + (1 - end) * (1 - t),
              "cosine": lambda t: end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))}
    for name, shape in shapes.items():
        if all(math.isclose(v, shape(min(1.0, i / span)), abs_tol=1e-9) for i, v in enumerate(after)):
            return "constant" if name == "constant" else f"{name} to {end:g} x lr"
    return f"another shape (to {end:g} x lr)"


def llama_embeddings(_: Any = None) -> str:
    """Tied or untied input/output embeddings and the RoPE theta of the registry's LLaMA config at the paper
    preset."""
    from tinyhelen.exp1 import models

    cfg = models.build_config("llama", "paper", StubTokenizer())
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    return ("tied" if cfg.tie_word_embeddings else "untied") + (f", RoPE theta {theta:g}" if theta else "")


def mamba_block(_: Any = None) -> dict[str, Any]:
    """The block the registry's Mamba builds at the paper preset (on the meta device: no memory): its mixer, its
    MLP, the model width, the number of layers and the MLP's hidden size."""
    import torch

    from tinyhelen.exp1 import models

    spec = models.get("mamba")
    cfg = models.build_config(spec, "paper", StubTokenizer())
    with torch.device("meta"):
        model = models.build_lm(spec, cfg)
    layers = getattr(getattr(model, "backbone", None), "layers", None) or []
    block = layers[0] if layers else None
    mlp = getattr(block, "mlp", None)
    return {"mixer": type(getattr(block, "mixer", None)).__name__, "mlp": type(mlp).__name__ if mlp else "none",
            "d_model": cfg.hidden_size, "layers": len(layers),
            "mlp_hidden": mlp.fc2.in_features if mlp is not None and hasattr(mlp, "fc2") else None}


def glue_selection(_: Any = None) -> str:
    """The epoch whose weights the GLUE fine-tuning scores on test: its ``BestEpoch`` callback fed scripted
    validation scores (a peak in the middle, a tie, a rising curve), reading which epoch's weights it kept."""
    import torch

    from tinyhelen.exp1.glue import BestEpoch

    def kept(scores: list[float]) -> int:
        cb = BestEpoch("rte", ([], []), None, 0, 1, None)
        it = iter(scores)
        cb._score = lambda model, data: {"score": next(it)}
        model = torch.nn.Linear(1, 1, bias=False)
        for epoch in range(len(scores)):
            with torch.no_grad():
                model.weight.fill_(float(epoch))
            cb.on_evaluation(epoch + 1, None, {}, model)
        return int(cb.weights["weight"].item()) if cb.weights is not None else -1

    picks = (kept([0.2, 0.9, 0.5]), kept([0.6, 0.6, 0.1]), kept([0.1, 0.2, 0.3]))
    if picks == (1, 0, 2):
        return "best evaluation by the task metric (validation after every epoch; ties: the earlier)"
    if picks == (2, 2, 2):
        return "the last epoch"
    return f"another rule (keeps epochs {picks} on the probes)"


def loss_on_prompt(x: Any) -> bool:
    """Whether the labels instruction tuning builds (``tune.encode_example``, with ``instruct.tune`` in effect)
    carry a loss on the prompt's tokens."""
    from tinyhelen.exp2.tune import encode_example

    ids, labels = encode_example(StubTokenizer(), "a prompt here", "a reply", None,
                                 x.get("instruct.tune.loss_on_prompt"))
    return all(lab != -100 for lab in labels[:3])


def packed(x: Any) -> bool:
    """Whether instruction tuning trains on packed blocks: ``instruct.tune.packing`` and ``tune.pack`` joining
    short examples into one block."""
    from tinyhelen.exp2.tune import pack

    if not x.get("instruct.tune.packing"):
        return False
    return len(pack([([1, 2], [1, 2]), ([3, 4], [3, 4])], 4, seed=0)) == 1
