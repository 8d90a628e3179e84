"""The architecture registry of EXP1: ``ArchSpec`` (what the pipeline knows about an architecture), ``register``
and ``get``, and what is built or counted from a spec: configs, LMs, classifiers, non-embedding parameters,
training FLOPs. The registered architectures are in ``tinyhelen.exp1.models.archs``; the package docstring
describes them."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn


PRESETS: tuple[str, ...] = ("tiny", "paper")
# target non-embedding parameter count per preset (the test allows +-5%)
TARGET_NON_EMBEDDING = {"tiny": 1_000_000, "paper": 14_000_000}
MAX_POSITIONS = 512  # absolute position table of BERT (LLaMA: RoPE, XLNet: relative, Mamba: none)


# ----------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class PairLayout:
    """Special tokens around a classification input ``a`` or pair ``(a, b)``.

    ``start + a + after_a [+ b + after_b] + end``; names are tokenizer attributes without ``_token``
    (``cls``, ``sep``, ``eos``). Segment ids (``token_type_ids``, when ``segments``): 0 for ``start``, ``a``
    and ``after_a``, 1 for ``b`` and ``after_b``, ``end_segment`` for ``end``; all 0 otherwise."""

    start: tuple[str, ...] = ()
    after_a: tuple[str, ...] = ("sep",)
    after_b: tuple[str, ...] = ()
    end: tuple[str, ...] = ("eos",)
    segments: bool = False
    end_segment: int = 0

    def n_special(self, pair: bool) -> int:
        return len(self.start) + len(self.after_a) + len(self.end) + (len(self.after_b) if pair else 0)

    def build(self, tok: Any, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        """Token ids and segment ids of ``a`` (and ``b``) with the special tokens inserted."""
        ids_of = lambda names: [getattr(tok, f"{n}_token_id") for n in names]  # noqa: E731
        first = [*ids_of(self.start), *a, *ids_of(self.after_a)]
        second = [*b, *ids_of(self.after_b)] if b is not None else []
        end = ids_of(self.end)
        if not self.segments:
            return first + second + end, [0] * (len(first) + len(second) + len(end))
        return first + second + end, [0] * len(first) + [1] * len(second) + [self.end_segment] * len(end)


@dataclass(frozen=True)
class ArchSpec:
    """Everything the pipeline knows about one architecture.

    Classes are given as classes or as ``"module:Name"`` strings (imported on first use, so importing this
    module does not import transformers). ``presets`` maps a size preset to the config's shape kwargs;
    ``config_kwargs`` are the fixed config values of every preset. ``objective`` names a pretraining
    objective of ``tinyhelen.train.objectives``. ``classifier_class`` must accept ``cls(config)`` (random
    init) and ``cls.from_pretrained(dir, config=config)`` (pretrained backbone, fresh head). ``flops`` gives
    training FLOPs per token ``(model, seq_len)``; ``setup`` runs before a model is built; ``default``: part
    of the default ``exp1.archs``."""

    name: str
    config_class: type | str
    lm_class: type | str
    classifier_class: type | str
    objective: str
    padding_side: Literal["left", "right"]
    layout: PairLayout
    presets: Mapping[str, Mapping[str, Any]]
    config_kwargs: Mapping[str, Any] = field(default_factory=dict)
    token_type_ids: bool = False
    flops: Callable[[nn.Module, int], float] | None = None
    setup: Callable[[], None] | None = None
    description: str = ""
    default: bool = True  # in the default EXP1 matrix (``exp1.archs``); false: an option

    @property
    def model_type(self) -> str:
        """``config.model_type`` of checkpoints of this architecture (checked when loading one)."""
        return resolve(self.config_class).model_type


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(spec: ArchSpec, *, replace: bool = False) -> ArchSpec:
    """Add an architecture to the registry (``replace``: overwrite one of the same name)."""
    if spec.name in ARCHITECTURES and not replace:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    ARCHITECTURES[spec.name] = spec
    return spec


def arch_names() -> list[str]:
    """Registered architectures, in registration order."""
    return list(ARCHITECTURES)


def default_arch_names() -> list[str]:
    """Registered architectures of the default EXP1 matrix (the study's four), in registration order."""
    return [name for name, spec in ARCHITECTURES.items() if spec.default]


def get(arch: str | ArchSpec) -> ArchSpec:
    """The registered spec of ``arch`` (a spec is returned as it is: look an architecture up once, pass the
    spec on)."""
    if isinstance(arch, ArchSpec):
        return arch
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}") from None


def resolve(obj: type | str) -> Any:
    """A class given directly or as ``"module:Name"``."""
    if not isinstance(obj, str):
        return obj
    module, name = obj.split(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------------------- building
def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id,
           "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}; build it with tinyhelen.tokenizer")
    return ids


def build_config(arch: str | ArchSpec, preset: str, tokenizer: Any):
    """``transformers`` config of ``arch`` at size ``preset`` with the tokenizer's vocabulary/special ids."""
    spec = get(arch)
    if preset not in spec.presets:
        raise ValueError(f"arch {arch!r} has no preset {preset!r}; known: {', '.join(spec.presets)}")
    ids = _special_ids(tokenizer)
    common = dict(vocab_size=len(tokenizer), pad_token_id=ids["pad"], eos_token_id=ids["eos"],
                  bos_token_id=ids["bos"])
    return resolve(spec.config_class)(**common, **spec.presets[preset], **spec.config_kwargs)


def build_lm(arch: str | ArchSpec, config):
    """Randomly initialised model with its pretraining head."""
    spec = get(arch)
    if spec.setup is not None:
        spec.setup()
    return resolve(spec.lm_class)(config)


def build_classifier(arch: str | ArchSpec, config_or_checkpoint: Any, num_labels: int):
    """Sequence classification (``num_labels >= 2``) or regression (``num_labels == 1``) model.

    ``config_or_checkpoint``: a config from ``build_config`` (random init = from-scratch baseline) or the
    directory of a pretrained LM (``data/models/pretrain/<arch>-<side>/final``): the backbone weights are
    loaded, the pretraining head is dropped and a fresh classification head is added."""
    from transformers import AutoConfig

    spec = get(arch)
    from_dir = isinstance(config_or_checkpoint, (str, Path))
    config = AutoConfig.from_pretrained(str(config_or_checkpoint)) if from_dir else config_or_checkpoint
    config = config.__class__.from_dict(config.to_dict())  # private copy
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if config.model_type != spec.model_type:
        raise ValueError(f"{config_or_checkpoint}: checkpoint is a {config.model_type!r} model, not {arch!r}")
    if spec.setup is not None:
        spec.setup()
    cls = resolve(spec.classifier_class)
    if not from_dir:
        return cls(config)
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialised head" warning is expected
    try:
        return cls.from_pretrained(str(config_or_checkpoint), config=config)
    finally:
        transformers.logging.set_verbosity(verbosity)


# ----------------------------------------------------------------------------------------- counting
def _embedding_params(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for mod in model.modules():
        if isinstance(mod, nn.Embedding):
            ids.update(id(p) for p in mod.parameters())
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    if out is not None:
        ids.add(id(out.weight))  # tied: already counted as the input table; untied: the output table
    return ids


def non_embedding_params(model: nn.Module) -> int:
    """Number of parameters outside token/position/segment embeddings and the output embedding matrix.

    Biases of an output layer (e.g. BERT's MLM decoder bias, XLNet's lm_loss bias) are counted."""
    emb = _embedding_params(model)
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in emb:
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def transformer_flops(model: nn.Module, seq_len: int, attention_factor: float = 1.0) -> float:
    """Approximate training FLOPs per token of a transformer (forward + backward = 6 N + attention term).

    N = all matrix-multiply parameters incl. the output projection (``total_params`` minus position
    tables is close enough); attention adds 12 * layers * d * seq_len (PaLM appendix B), times
    ``attention_factor`` (XLNet's two-stream attention: 2)."""
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.d_model
    return 6.0 * total_params(model) + 12.0 * layers * d * seq_len * attention_factor


def mamba_flops(model: nn.Module, seq_len: int) -> float:
    """6 N plus the selective scan, O(d_inner * d_state) per token and layer (counted as 6 * 9 * d_inner *
    d_state per layer; negligible); no attention term."""
    cfg = model.config
    return 6.0 * total_params(model) + 6.0 * 9 * cfg.intermediate_size * cfg.state_size * cfg.num_hidden_layers


def mamba2_flops(model: nn.Module, seq_len: int) -> float:
    """6 N plus the chunked SSM: per token and layer about ``2 * chunk * d_inner`` (intra-chunk, attention-like)
    plus ``4 * d_inner * state`` (states in and out), times 3 for forward + backward."""
    cfg = model.config
    d_inner = cfg.expand * cfg.hidden_size
    chunk = min(cfg.chunk_size, seq_len)
    return 6.0 * total_params(model) + 3.0 * cfg.num_hidden_layers * d_inner * (2 * chunk + 4 * cfg.state_size)


def flops_per_token(model: nn.Module, seq_len: int, arch: str | ArchSpec) -> float:
    """Training FLOPs per token of ``model`` (an ``arch`` model) at ``seq_len`` (for MFU)."""
    spec = get(arch)
    return (spec.flops or transformer_flops)(model, seq_len)
