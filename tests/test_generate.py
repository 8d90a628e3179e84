"""EXP2 generation: deterministic, batched answers to the Leaner-Eval questions; stratified subsample."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyhelen.exp2.generate import (Decoding, GenerateConfig, answer_inner, answer_selected, checkpoints, read_questions,
                                subsample)
from tinyhelen.io import InputError, read_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizers) -> Path:
    """A tuned-model directory layout (two step checkpoints) holding a tiny random LLaMA."""
    import torch

    from tinyhelen import tokenizer
    from tinyhelen.exp1 import models

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
    s1 = answer_inner(model_dir, "leaner-ori", cfg, tmp_path / "i1.jsonl")
    s2 = answer_inner(model_dir, "leaner-ori", cfg, tmp_path / "i2.jsonl")
    inner = read_jsonl(tmp_path / "i1.jsonl")
    assert inner == read_jsonl(tmp_path / "i2.jsonl") and s1["new_tokens"] == s2["new_tokens"]
    assert len(inner) == 31 * 2 and sorted({r["step"] for r in inner}) == [5, 10], "every checkpoint answers"
    assert s1["checkpoints"] == ["step-000005", "step-000010"] and s1["answers"] == 62
    answer_selected(model_dir, "leaner-ori", 10, cfg, tmp_path / "a1.jsonl", seed=1)
    allr = read_jsonl(tmp_path / "a1.jsonl")
    assert len(allr) == 12 and all(0 < r["new_tokens"] <= 12 or r["finished"] for r in allr)
    # batch composition does not change greedy answers (left padding + attention mask)
    answer_selected(model_dir, "leaner-ori", 10, cfg.model_copy(update={"batch_size": 12}), tmp_path / "a3.jsonl", 1)
    same = sum(a["answer"] == b["answer"] for a, b in zip(allr, read_jsonl(tmp_path / "a3.jsonl")))
    assert same >= 11, f"only {same}/12 answers identical across batch sizes"


def test_selected_checkpoint_answers_the_full_set(model_dir, prepared, tmp_path):
    """The checkpoint selected on the inner comparison (not the last one) answers Leaner-Eval."""
    from tinyhelen.exp2.generate import generate_answers, load_model

    cfg = GenerateConfig(eval_dir=str(prepared / "eval"), max_questions=6, batch_size=6, device="cpu",
                         decoding=Decoding(max_new_tokens=6))
    stats = answer_selected(model_dir, "leaner-ori", 5, cfg, tmp_path / "all.jsonl", seed=1)
    recs = read_jsonl(tmp_path / "all.jsonl")
    assert stats["selected_step"] == 5 and stats["checkpoints"] == ["step-000005"]
    assert {(r["set"], r["checkpoint"], r["step"]) for r in recs} == {("all", "step-000005", 5)} and len(recs) == 6
    questions = [r["question"] for r in recs]
    by_step = {ck: [a["answer"] for a in generate_answers(*load_model(model_dir / ck, cfg), questions, cfg)[0]]
               for ck in ("step-000005", "step-000010")}
    assert by_step["step-000005"] != by_step["step-000010"], "the two checkpoints answer differently"
    assert [r["answer"] for r in recs] == by_step["step-000005"], "the answers are the selected checkpoint's"
    with pytest.raises(InputError, match="no checkpoint of the selected step 7"):
        answer_selected(model_dir, "leaner-ori", 7, cfg, tmp_path / "x.jsonl", seed=1)


def test_generate_stage_reads_the_selection(model_dir, prepared, tmp_path):
    """`generate` answers, for every recipe of exp2.recipes, with the step `judge_inner` selected for it;
    a recipe without a selection is an error naming the selection file."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    params = {"seed": 1, "generate": {"eval_dir": str(prepared / "eval"), "max_questions": 3, "batch_size": 3,
                                      "device": "cpu", "decoding": {"max_new_tokens": 4}},
              "exp2": {"recipes": ["leaner-ori", "ori-ori"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    models = tmp_path / "models"
    models.mkdir()
    for recipe in params["exp2"]["recipes"]:
        (models / recipe).symlink_to(model_dir, target_is_directory=True)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "TINYHELEN_LOG": "WARNING"}

    def run(selected: dict) -> subprocess.CompletedProcess:
        (tmp_path / "sel.json").write_text(json.dumps({"selected": selected}))
        cmd = [sys.executable, str(root / "stages" / "generate.py"), "--params", str(tmp_path / "params.yaml"),
               "--models", str(models), "--selection", str(tmp_path / "sel.json"),
               "--out", str(tmp_path / "gen"), "--metrics", str(tmp_path / "m.json")]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    res = run({"leaner-ori": 5, "ori-ori": 10, "ori-leaner": 5})
    assert res.returncode == 0, res.stderr[-3000:]
    assert {r["step"] for r in read_jsonl(tmp_path / "gen" / "leaner-ori.jsonl")} == {5}
    assert {r["step"] for r in read_jsonl(tmp_path / "gen" / "ori-ori.jsonl")} == {10}
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["leaner-ori.jsonl", "ori-ori.jsonl"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["leaner-ori"]["selected_step"] == 5 and metrics["ori-ori"]["selected_step"] == 10

    res = run({"leaner-ori": 5})
    assert res.returncode == 2 and "sel.json" in res.stderr and "ori-ori" in res.stderr


def test_checkpoints_listing(model_dir):
    assert checkpoints(model_dir) == [("step-000005", 5), ("step-000010", 10)]
