"""EXP2 generation: deterministic, batched answers to the Leaner-Eval questions; stratified subsample."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyhelen.exp2.generate import (Decoding, GenerateConfig, answer_inner, answer_selected, checkpoints, cut_at,
                                     read_questions, subsample)
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
    from tinyhelen.exp2.instruct_data import format_prompt, template_headers

    prompts = [format_prompt(r["question"]) for r in recs]
    by_step = {ck: [a["answer"] for a in generate_answers(*load_model(model_dir / ck, cfg), prompts, cfg,
                                                            template_headers())[0]]
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
                                      "heldout_prompts": 2, "device": "cpu", "decoding": {"max_new_tokens": 4}},
              "exp2": {"recipes": ["leaner-ori", "ori-ori"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    models = tmp_path / "models"
    models.mkdir()
    for recipe in params["exp2"]["recipes"]:
        (models / recipe).symlink_to(model_dir, target_is_directory=True)
    for side in ("leaner", "ori"):
        (tmp_path / "instruct" / side).mkdir(parents=True)
        (tmp_path / "instruct" / side / "validation.jsonl").write_text("".join(json.dumps(
            {"id": f"{side}{i}", "instruction": f"task {i}", "prompt": f"task {i}\n", "response": "r"}) + "\n"
            for i in range(3)))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "TINYHELEN_LOG": "WARNING"}

    def run(selected: dict) -> subprocess.CompletedProcess:
        (tmp_path / "sel.json").write_text(json.dumps({"selected": selected}))
        cmd = [sys.executable, str(root / "stages" / "generate.py"), "--params", str(tmp_path / "params.yaml"),
               "--models", str(models), "--selection", str(tmp_path / "sel.json"),
               "--instruct", str(tmp_path / "instruct"),
               "--out", str(tmp_path / "gen"), "--metrics", str(tmp_path / "m.json")]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    res = run({"leaner-ori": 5, "ori-ori": 10, "ori-leaner": 5})
    assert res.returncode == 0, res.stderr[-3000:]
    assert {r["step"] for r in read_jsonl(tmp_path / "gen" / "leaner-ori.jsonl")} == {5}
    assert [r["set"] for r in read_jsonl(tmp_path / "gen" / "leaner-ori.jsonl")] == ["all"] * 3 + ["heldout"] * 2
    assert {r["step"] for r in read_jsonl(tmp_path / "gen" / "ori-ori.jsonl")} == {10}
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["leaner-ori.jsonl", "ori-ori.jsonl"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["leaner-ori"]["selected_step"] == 5 and metrics["ori-ori"]["selected_step"] == 10

    res = run({"leaner-ori": 5})
    assert res.returncode == 2 and "sel.json" in res.stderr and "ori-ori" in res.stderr


def test_checkpoints_listing(model_dir):
    assert checkpoints(model_dir) == [("step-000005", 5), ("step-000010", 10)]


def _fixed_head(vocab: int, prefer: list[int]):
    """An LM head whose logits ignore the hidden state: ``prefer`` token ids in falling order."""
    import torch

    class FixedHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("logits", torch.zeros(vocab))
            for rank, t in enumerate(prefer):
                self.logits[t] = 10.0 - rank

        def forward(self, hidden):
            return self.logits.expand(*hidden.shape[:-1], -1).clone()

    return FixedHead()


def test_a_leading_newline_run_is_suppressed_until_a_visible_token(model_dir, tokenizers):
    """A model that always prefers a newline answers nothing under the study's greedy decoding; with
    ``suppress_leading_whitespace`` it takes its best visible token, and newlines stay possible after it."""
    from tinyhelen import tokenizer
    from tinyhelen.exp2.generate import blank_token_ids, generate_answers, load_model
    from tinyhelen.exp2.instruct_data import format_prompt

    tok = tokenizer.load(tokenizers["leaner"])
    nl, hi = tok("\n", add_special_tokens=False)["input_ids"][0], tok("hi", add_special_tokens=False)["input_ids"][0]
    blank = set(blank_token_ids(tok))
    assert {nl, tok.eos_token_id, tok.pad_token_id} <= blank and hi not in blank
    study = GenerateConfig(device="cpu", decoding=Decoding(max_new_tokens=5, suppress_leading_whitespace=False))
    _, model = load_model(model_dir / "final", study)
    model.lm_head = _fixed_head(len(tok), [nl, tok.eos_token_id, hi])
    prompts = [format_prompt("Why is the sky blue?"), format_prompt("Tell me a story.")]
    empty, _ = generate_answers(tok, model, prompts, study)
    assert [a["answer"] for a in empty] == ["", ""] and all(a["new_tokens"] == 5 for a in empty)
    ours, _ = generate_answers(tok, model, prompts, study.model_copy(update={"decoding": Decoding(max_new_tokens=5)}))
    # step 1: newline and eos are blocked, 'hi' wins; then the answer has a visible token: newlines again
    assert [a["answer"] for a in ours] == ["hi", "hi"] and not any(a["finished"] for a in ours)


def test_an_answer_ends_before_a_template_header():
    h = ("### TASK INPUT:", "### RESPONSE:")
    assert cut_at("Cats purr.\n\n### RESPONSE:\nDogs", h) == ("Cats purr.\n\n", True)
    assert cut_at("Cats purr.\n\n### RESPO", h) == ("Cats purr.\n\n", True)  # cut short by the length limit
    assert cut_at("a ### TASK INPUT: b ### RESPONSE:", h) == ("a ", True)
    assert cut_at("## not a header ###", h) == ("## not a header ###", False)
    from tinyhelen.exp2.instruct_data import template_headers

    assert template_headers("study") == h
    assert template_headers("alpaca_v1") == ("### Instruction:", "### Input:", "### Response:")


def test_selected_checkpoint_answers_held_out_prompts_of_its_tuning_side(model_dir, prepared, tmp_path):
    """With the instruction data given, the selected checkpoint also answers ``heldout_prompts`` prompts of
    the validation split of the recipe's TUNING side, asked exactly as they were formatted for tuning."""
    import json

    inst = tmp_path / "instruct"
    for side in ("leaner", "ori"):
        (inst / side).mkdir(parents=True)
        rows = [{"id": f"{side}{i}", "instruction": f"{side} task {i}", "input": "", "prompt": f"P {side} {i}\n",
                 "response": "r", "source": "code_pairs"} for i in range(5)]
        (inst / side / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(eval_dir=str(prepared / "eval"), max_questions=4, heldout_prompts=3, batch_size=4,
                         device="cpu", decoding=Decoding(max_new_tokens=3))
    stats = answer_selected(model_dir, "leaner-ori", 10, cfg, tmp_path / "all.jsonl", seed=1, instruct_dir=inst)
    recs = read_jsonl(tmp_path / "all.jsonl")
    held = [r for r in recs if r["set"] == "heldout"]
    assert len(recs) == 7 and len(held) == 3 and {r["step"] for r in recs} == {10}
    assert {r["qid"][:3] for r in held} == {"ori"} and all(r["question"].startswith("ori task") for r in held)
    assert "prompt" not in held[0] and stats["by_set"]["heldout"]["answers"] == 3
    again = answer_selected(model_dir, "leaner-ori", 10, cfg, tmp_path / "b.jsonl", seed=1, instruct_dir=inst)
    assert read_jsonl(tmp_path / "b.jsonl") == recs and again == stats
    from tinyhelen.exp2.generate import generate_answers, load_model

    direct, _ = generate_answers(*load_model(model_dir / "step-000010", cfg), [f"P ori {r['qid'][3:]}\n" for r in held],
                                 cfg, ("### TASK INPUT:", "### RESPONSE:"))
    assert [a["answer"] for a in direct] == [r["answer"] for r in held], "asked with the tuning prompt as it is"
