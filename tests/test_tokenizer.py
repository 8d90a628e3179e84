"""Byte-level BPE tokenizers: loadable by AutoTokenizer, special tokens, lossless round trip."""
from __future__ import annotations

import json

from transformers import AutoTokenizer

from tinyhelen.data import read_docs
from tinyhelen.tokenizer import SPECIAL_TOKENS


def test_autotokenizer_loads_with_all_special_tokens(tokenizers):
    for side, path in tokenizers.items():
        tok = AutoTokenizer.from_pretrained(str(path))
        assert len(tok) == 2000
        assert tok.eos_token == tok.bos_token == "<|endoftext|>"
        assert (tok.pad_token, tok.cls_token, tok.sep_token, tok.mask_token) == ("<pad>", "<cls>", "<sep>", "<mask>")
        ids = {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        assert len(ids) == len(SPECIAL_TOKENS) and max(ids) < len(SPECIAL_TOKENS)
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        assert cfg["tokenizer_class"] in ("PreTrainedTokenizerFast", "TokenizersBackend")


def test_round_trip_is_lossless_on_real_documents(tokenizers, prepared):
    tok = AutoTokenizer.from_pretrained(str(tokenizers["leaner"]))
    docs = list(read_docs(prepared / "corpus/leaner/validation.jsonl"))[:40]
    texts = [d["text"][:3000] for d in docs] + ["Caf\u00e9 \u2014 \u4f60\u597d \U0001F600 tabs\tand\nnewlines  "]
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == t
        assert tok.unk_token_id not in ids  # byte-level: nothing is unknown


def test_leaner_text_needs_fewer_tokens_per_word(tokenizers, prepared):
    """A 2K vocabulary fits the simplified register better: fewer BPE tokens per word on leaner text."""
    ratios = {}
    for side, path in tokenizers.items():
        tok = AutoTokenizer.from_pretrained(str(path))
        texts = [d["text"] for d in read_docs(prepared / f"corpus/{side}/validation.jsonl", genres=["wiki", "web"])]
        n_tok = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
        ratios[side] = n_tok / sum(len(t.split()) for t in texts)
    assert ratios["leaner"] < ratios["ori"]
