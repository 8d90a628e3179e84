"""EXP2 instruction data and instruction tuning: pairing, template, loss mask, online source, four recipes."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from tinyhelen.instruct import (RECIPES, SIDES, InstructConfig, OnlineFile, OnlineSources, TuneConfig,
                                build_instruct_data, format_prompt, read_examples)
from tinyhelen.instruct.sft import encode_example, tune
from tinyhelen.io import InputError

TINY_TUNE = TuneConfig(steps=6, batch_size=4, max_len=96, lr=2e-3, warmup_steps=1, checkpoint_every=3,
                       eval_examples=8, device="cpu")


def make_pretrained(tok_dir: Path, out: Path, seed: int) -> Path:
    """A randomly initialised tiny LLaMA saved like the pretrain stage's ``final/`` (model + tokenizer)."""
    import torch

    from tinyhelen import models, tokenizer

    tok = tokenizer.load(tok_dir)
    torch.manual_seed(seed)
    model = models.build_lm("llama", models.build_config("llama", "tiny", tok))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tokenizers) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    return {side: make_pretrained(tokenizers[side], root / f"llama-{side}" / "final", i)
            for i, side in enumerate(SIDES)}


@pytest.fixture(scope="session")
def instruct_dir(tmp_path_factory, prepared) -> Path:
    out = tmp_path_factory.mktemp("instruct") / "instruct"
    cfg = InstructConfig(leaner_corpus=str(prepared / "corpus" / "leaner"),
                         ori_corpus=str(prepared / "corpus" / "ori"))
    build_instruct_data(cfg, out, seed=1)
    return out


@pytest.fixture(scope="session")
def tuned(tmp_path_factory, pretrained, instruct_dir) -> dict[str, tuple[Path, dict]]:
    """The four recipes, tuned for a few steps (shared with test_generate)."""
    root = tmp_path_factory.mktemp("tuned")
    out = {}
    for recipe in RECIPES:
        p, t = recipe.split("-")
        out[recipe] = (root / recipe, tune(pretrained[p], instruct_dir / t / "train.jsonl",
                                           instruct_dir / t / "validation.jsonl", root / recipe, TINY_TUNE, 7,
                                           recipe))
    return out


def test_code_pairs_are_paired_twins(instruct_dir, prepared):
    for split in ("train", "validation"):
        le = read_examples(instruct_dir / "leaner" / f"{split}.jsonl")
        ori = read_examples(instruct_dir / "ori" / f"{split}.jsonl")
        assert [e["id"] for e in le] == [e["id"] for e in ori] and le, "same tasks on both sides, same order"
        assert all(e["source"] == "code_pairs" and e["prompt"] == format_prompt(e["instruction"]) for e in le + ori)
        assert sum(a["response"] != b["response"] for a, b in zip(le, ori)) > len(le) // 2, "leaner text differs"
        # the pairing id is the release's pairing hash: prompt + " " + response of the ORIGINAL twin
        assert all(hashlib.sha256((b["instruction"] + " " + b["output"]).encode()).hexdigest() == b["id"]
                   for b in ori)


def test_template_and_loss_mask(tokenizers):
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    prompt = format_prompt("Say hi.", "to a cat")
    assert prompt == "### Instruction:\nSay hi.\n\n### Input:\nto a cat\n\n### Response:\n"
    ids, labels = encode_example(tok, prompt, "Hi, cat!", 64, loss_on_prompt=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    ids2, labels2 = encode_example(tok, prompt, "Hi, cat!", 64, loss_on_prompt=True)
    assert ids2 == ids and labels2 == ids
    ids3, labels3 = encode_example(tok, prompt * 20, "word " * 200, 64, loss_on_prompt=False)
    assert len(ids3) == 64 and sum(x != -100 for x in labels3) >= 1  # cut, but the response keeps tokens


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_released_source_download_checksum_and_file_url(tmp_path):
    files = tmp_path / "www"
    files.mkdir()
    leaner = [{"instruction": f"Tell me about thing {i}.", "input": "", "output": f"Thing {i} is nice.",
               "hash": f"{i:064x}"} for i in range(40)]
    (files / "instruction0000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in leaner))
    alpaca = [{"instruction": f"Describe item {i}.", "input": "in one line" if i % 2 else "",
               "output": f"Item {i} is a useful item."} for i in range(40)]
    (files / "alpaca_data_cleaned.json").write_text(json.dumps(alpaca))
    digest = {n: hashlib.sha256((files / n).read_bytes()).hexdigest()
              for n in ("instruction0000.jsonl", "alpaca_data_cleaned.json")}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(files)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        online = OnlineSources(
            leaner=OnlineFile(url=f"{base}/instruction0000.jsonl", sha256=digest["instruction0000.jsonl"]),
            ori=OnlineFile(url=(files / "alpaca_data_cleaned.json").as_uri(), sha256=digest["alpaca_data_cleaned.json"]),
            download_dir=str(tmp_path / "dl"), validation_fraction=0.2, retries=0)
        stats = build_instruct_data(InstructConfig(source="released", online=online), tmp_path / "out")
        assert stats["inputs"]["leaner"]["verified"] and stats["inputs"]["leaner"]["records"] == 40
        for side in SIDES:
            tr = read_examples(tmp_path / "out" / side / "train.jsonl")
            va = read_examples(tmp_path / "out" / side / "validation.jsonl")
            assert len(tr) + len(va) == 40 and va and not {e["id"] for e in tr} & {e["id"] for e in va}
        ori = read_examples(tmp_path / "out" / "ori" / "train.jsonl")
        assert any("### Input:\nin one line" in e["prompt"] for e in ori)
        assert (tmp_path / "dl").is_dir(), "http download kept in download_dir"
        bad = online.model_copy(update={"leaner": OnlineFile(url=f"{base}/instruction0000.jsonl", sha256="0" * 64)})
        with pytest.raises(InputError, match="checksum mismatch"):
            build_instruct_data(InstructConfig(source="released", online=bad), tmp_path / "out2")
        (files / "broken.jsonl").write_text('{"instruction": "x"}\n')
        broken = online.model_copy(update={"leaner": OnlineFile(url=f"{base}/broken.jsonl")})
        with pytest.raises(InputError, match=r"broken.jsonl:1: missing or non-string field 'output'"):
            build_instruct_data(InstructConfig(source="released", online=broken), tmp_path / "out3")
    finally:
        srv.shutdown()
        srv.server_close()


def test_four_recipes_make_four_distinct_models(tuned):
    from safetensors.torch import load_file

    weights = {}
    for recipe, (out, metrics) in tuned.items():
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["final", "step-000003", "step-000006"]
        assert metrics["checkpoints"] == ["step-000003", "step-000006"] and metrics["steps"] == 6
        assert metrics["loss_on_prompt"] is False and 0 < metrics["loss_tokens"] < metrics["tokens"]
        assert [r["step"] for r in metrics["curve"]] == [3, 6] and not {"seconds", "tokens_per_s"} & set(metrics)
        weights[recipe] = load_file(str(out / "final" / "model.safetensors"))
        final_ck = load_file(str(out / "step-000006" / "model.safetensors"))
        assert all((final_ck[k] == weights[recipe][k]).all() for k in final_ck), "final = last checkpoint"
    names = list(weights)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert any(not (weights[a][k] == weights[b][k]).all() for k in weights[a]), f"{a} == {b}"


def test_tuning_is_reproducible_and_prompt_loss_switch(pretrained, instruct_dir, tuned, tmp_path):
    from safetensors.torch import load_file

    base, data = pretrained["ori"], instruct_dir / "leaner"
    m = tune(base, data / "train.jsonl", data / "validation.jsonl", tmp_path / "again", TINY_TUNE, 7, "ori-leaner")
    ref_dir, ref = tuned["ori-leaner"]
    assert m["curve"] == ref["curve"], "same seed and data -> same losses"
    a, b = load_file(str(tmp_path / "again/final/model.safetensors")), load_file(str(ref_dir / "final/model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    cfg = TINY_TUNE.model_copy(update={"loss_on_prompt": True, "steps": 2, "checkpoint_every": 2})
    m2 = tune(base, data / "train.jsonl", data / "validation.jsonl", tmp_path / "p", cfg, 7, "ori-leaner")
    assert m2["loss_tokens"] == m2["tokens"] - 2 * cfg.batch_size, "every non-pad token but the first"


def test_missing_base_model_is_a_clear_error(instruct_dir, tmp_path):
    with pytest.raises(InputError, match="pretrained model not found"):
        tune(tmp_path / "nope", instruct_dir / "ori/train.jsonl", instruct_dir / "ori/validation.jsonl",
             tmp_path / "o", TINY_TUNE, 1)


@pytest.mark.slow
def test_instruct_tune_stage_metrics_are_byte_identical(pretrained, instruct_dir, tmp_path):
    from test_train import run_stage_twice

    params = {"seed": 5, "instruct": {"tune": dict(steps=4, batch_size=4, max_len=64, lr=2e-3, warmup_steps=1,
                                                   checkpoint_every=2, eval_examples=8, device="cpu", threads=1)}}
    files = run_stage_twice("instruct_tune.py", ["--base", str(pretrained["leaner"]), "--data",
                                                 str(instruct_dir / "ori"), "--out", "leaner-ori", "--metrics",
                                                 "tune.json", "--live", "live"],
                            params, tmp_path, ["tune.json", "live", "leaner-ori/tune_metrics.json"])
    metrics = json.loads(files["tune.json"])
    assert metrics["recipe"] == "leaner-ori" and metrics["checkpoints"] == ["step-000002", "step-000004"]
    assert files["live/plots/metrics/val_loss.tsv"].decode().splitlines()[1:] == [
        f"{r['step']}\t{r['val_loss']}" for r in json.loads(files["leaner-ori/tune_metrics.json"])["curve"]]
