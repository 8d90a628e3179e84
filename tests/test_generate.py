"""EXP2 generation: deterministic, batched answers to the Leaner-Eval questions; stratified subsample."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyhelen.generate import Decoding, GenerateConfig, checkpoints, read_questions, run, subsample
from tinyhelen.io import read_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizers) -> Path:
    """A tuned-model directory layout (two step checkpoints) holding a tiny random LLaMA."""
    import torch

    from tinyhelen import models, tokenizer

    root = tmp_path_factory.mktemp("gen") / "leaner-ori"
    tok = tokenizer.load(tokenizers["leaner"])
    for i, step in enumerate((5, 10)):
        torch.manual_seed(i)
        m = models.build_lm("llama", models.build_config("llama", "tiny", tok))
        m.save_pretrained(str(root / f"step-{step:06d}"))
        tok.save_pretrained(str(root / f"step-{step:06d}"))
    shutil.copytree(root / "step-000010", root / "final")
    return root


def test_subsample_is_stratified_seeded_and_ordered(prepared):
    qs = read_questions(prepared / "eval" / "all.jsonl")
    a, b = subsample(qs, 40, 3), subsample(qs, 40, 3)
    assert a == b and len(a) == 40 and subsample(qs, 40, 4) != a
    pos = {q["qid"]: i for i, q in enumerate(qs)}
    assert [pos[q["qid"]] for q in a] == sorted(pos[q["qid"]] for q in a)
    share = {bn: sum(q["bin"] == bn for q in qs) / len(qs) for bn in {q["bin"] for q in qs}}
    for bn, s in share.items():
        assert abs(sum(q["bin"] == bn for q in a) - 40 * s) <= 1
    assert subsample(qs, None, 3) == qs


@pytest.mark.slow
def test_generation_is_deterministic(model_dir, prepared, tmp_path):
    cfg = GenerateConfig(eval_dir=str(prepared / "eval"), max_questions=12, batch_size=5, device="cpu",
                         decoding=Decoding(max_new_tokens=12))
    s1 = run(model_dir, "leaner-ori", cfg, tmp_path / "g1", seed=1)
    s2 = run(model_dir, "leaner-ori", cfg, tmp_path / "g2", seed=1)
    for name in ("all", "inner_comparison"):
        r1, r2 = read_jsonl(tmp_path / "g1" / f"{name}.jsonl"), read_jsonl(tmp_path / "g2" / f"{name}.jsonl")
        assert r1 == r2
    allr = read_jsonl(tmp_path / "g1" / "all.jsonl")
    inner = read_jsonl(tmp_path / "g1" / "inner_comparison.jsonl")
    assert len(allr) == 12 and {r["checkpoint"] for r in allr} == {"final"} and {r["step"] for r in allr} == {10}
    assert len(inner) == 31 * 2 and sorted({r["step"] for r in inner}) == [5, 10]
    assert all(0 < r["new_tokens"] <= 12 or r["finished"] for r in allr)
    assert s1["answers"] == {"all": 12, "inner_comparison": 62} and s1["new_tokens"] == s2["new_tokens"]
    # batch composition does not change greedy answers (left padding + attention mask)
    s3 = run(model_dir, "leaner-ori", cfg.model_copy(update={"batch_size": 12, "checkpoint_curve": False}),
             tmp_path / "g3", seed=1)
    r3 = read_jsonl(tmp_path / "g3" / "all.jsonl")
    same = sum(a["answer"] == b["answer"] for a, b in zip(allr, r3))
    assert same >= 11, f"only {same}/12 answers identical across batch sizes"
    assert s3["checkpoints"] == ["step-000005", "step-000010"] and s3["answers"]["inner_comparison"] == 31


def test_checkpoints_listing(model_dir):
    assert checkpoints(model_dir) == [("step-000005", 5), ("step-000010", 10)]
