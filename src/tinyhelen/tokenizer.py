"""Byte-level BPE tokenizers (2K vocabulary by default): one shared by both corpus sides (the study's), or one
per side (``tokenizer.shared: false``).

Trained with the ``tokenizers`` library on the training split of a corpus, saved with
``PreTrainedTokenizerFast.save_pretrained`` so ``transformers.AutoTokenizer.from_pretrained(path)`` loads
it. Special tokens cover GPT-style (eos/bos = ``<|endoftext|>``, ``<pad>``), BERT-style (``<cls>``,
``<sep>``, ``<mask>``, ``<pad>``) and XLNet-style models (same set; XLNet appends ``<sep> <cls>``).
Byte-level BPE never needs ``<unk>``; it is defined for libraries that insist on one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import Field

from tinyhelen import timing
from tinyhelen.config import Section
from tinyhelen.data import read_docs
from tinyhelen.io import atomic_path

log = logging.getLogger(__name__)

EOS, PAD, UNK, CLS, SEP, MASK = "<|endoftext|>", "<pad>", "<unk>", "<cls>", "<sep>", "<mask>"
SPECIAL_TOKENS = [EOS, PAD, UNK, CLS, SEP, MASK]


class TokenizerConfig(Section):
    """``tokenizer:`` section of params.yaml."""

    vocab_size: int = Field(2000, ge=len(SPECIAL_TOKENS) + 256 + 1,
                            description="total vocabulary incl. 256 byte symbols and special tokens")
    min_frequency: int = Field(2, ge=1)
    shared: bool = Field(True, description="one BPE for both corpus sides, trained on the leaner training split "
                         "(the study's: the same tokenizer for both corpora); false: one per side, each on its own")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2):
    """Train a byte-level BPE and wrap it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        cls_token=CLS, sep_token=SEP, mask_token=MASK, model_max_length=1_000_000,
        clean_up_tokenization_spaces=False)


def _texts(shard: Path, stats: dict[str, int]) -> Iterator[str]:
    for rec in read_docs(shard):
        stats["docs"] = stats.get("docs", 0) + 1
        stats["chars"] = stats.get("chars", 0) + len(rec["text"])
        yield rec["text"]


def build(shard: Path | str, out_dirs: list[Path | str], cfg: TokenizerConfig) -> dict[str, float]:
    """Train on one prepared shard, save to each of ``out_dirs`` atomically (the same files), return stats."""
    t0 = time.time()
    stats: dict[str, int] = {}
    tok = train_tokenizer(_texts(Path(shard), stats), cfg.vocab_size, cfg.min_frequency)
    for out_dir in out_dirs:
        with atomic_path(out_dir) as tmp:
            tok.save_pretrained(str(tmp))
    secs = time.time() - t0
    info = {"vocab_size": len(tok), "train_docs": stats.get("docs", 0), "train_chars": stats.get("chars", 0)}
    timing.record(seconds=round(secs, 2), chars_per_s=round(info["train_chars"] / max(secs, 1e-9)))
    log.info("tokenizer %s: %s (%.0f chars/s)", ", ".join(map(str, out_dirs)), info, info["train_chars"] / max(secs, 1e-9))
    return info


def load(path: Path | str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
