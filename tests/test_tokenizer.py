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


def _run_stage(tmp_path, prepared, shared: bool) -> dict[str, bytes]:
    """Run the tokenizer stage in ``tmp_path``; return each side's tokenizer.json."""
    import argparse
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "stages" / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("tokenizer_stage", script)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "params.yaml").write_text(f"tokenizer:\n  shared: {str(shared).lower()}\n")
    stage.main(argparse.Namespace(params="params.yaml", leaner=str(prepared / "corpus" / "leaner"),
                                  ori=str(prepared / "corpus" / "ori"), leaner_out="data/tokenizers/leaner",
                                  ori_out="data/tokenizers/ori", leaner_report="reports/tokenizer_leaner.json",
                                  ori_report="reports/tokenizer_ori.json"))
    out = {}
    for side in ("leaner", "ori"):
        out[side] = (tmp_path / "data/tokenizers" / side / "tokenizer.json").read_bytes()
        report = json.loads((tmp_path / f"reports/tokenizer_{side}.json").read_text())
        assert report["shared"] is shared and "seconds" not in report
        assert report["trained_on"].endswith(("leaner" if shared else side) + "/train.jsonl")
    return out


def test_shared_tokenizer_is_one_bpe_for_both_sides(tmp_path, monkeypatch, prepared):
    """The study's protocol: the same tokenizer for both corpora (trained on leaner text) by default."""
    from tinyhelen.tokenizer import TokenizerConfig

    assert TokenizerConfig().shared is True
    monkeypatch.chdir(tmp_path)
    shared = _run_stage(tmp_path, prepared, shared=True)
    assert shared["leaner"] == shared["ori"]
    per_side = _run_stage(tmp_path, prepared, shared=False)
    assert per_side["leaner"] == shared["leaner"] and per_side["ori"] != shared["ori"]
