"""EXP2 instruction data and instruction tuning: pairing, template, loss mask, online source, four recipes."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from tinyhelen.exp2.config import RECIPES, SIDES, InstructConfig, OnlineFile, OnlineSources, TuneConfig
from tinyhelen.exp2.instruct_data import build_instruct_data, format_prompt, read_examples
from tinyhelen.exp2.tune import encode_example, tune
from tinyhelen.io import InputError

TINY_TUNE = TuneConfig(steps=6, batch_size=4, max_len=96, lr=2e-3, warmup_steps=1, checkpoint_every=3,
                       eval_examples=8, device="cpu")


def make_pretrained(tok_dir: Path, out: Path, seed: int) -> Path:
    """A randomly initialised tiny LLaMA saved like the pretrain stage's ``final/`` (model + tokenizer)."""
    import torch

    from tinyhelen import tokenizer
    from tinyhelen.exp1 import models

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


# the released prompts/templates/instruction_template.txt of EmpathYang/TinyHelen @ 1aa4c03, verbatim
RELEASED_TEMPLATE = "### TASK INPUT:\n{input}\n\n### RESPONSE:\n{response}"


def test_template_is_the_studys(tokenizers):
    from tinyhelen.tokenizer import load

    assert InstructConfig().template == "study"
    for ins, inp, resp in (("Say hi.", "", "Hi!"), ("Say hi.", "to a cat", "Hi, cat!")):
        text = format_prompt(ins, inp) + resp  # the study: input = instruction (+ "\n" + input), no stripping
        assert text == RELEASED_TEMPLATE.replace("{input}", ins + "\n" + inp if inp else ins).replace("{response}", resp)
    assert format_prompt("Say hi.") == "### TASK INPUT:\nSay hi.\n\n### RESPONSE:\n"
    tok = load(tokenizers["leaner"])
    prompt = format_prompt("Say hi.", "to a cat")
    ids, labels = encode_example(tok, prompt, "Hi, cat!", 64, loss_on_prompt=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id
    ids2, labels2 = encode_example(tok, prompt, "Hi, cat!", 64, loss_on_prompt=True)
    assert ids2 == ids and labels2 == ids
    ids3, labels3 = encode_example(tok, prompt * 20, "word " * 200, 64, loss_on_prompt=False)
    assert len(ids3) == 64 and sum(x != -100 for x in labels3) >= 1  # cut, but the response keeps tokens


def test_packed_blocks_carry_loss_on_all_tokens_by_default(tokenizers):
    from tinyhelen.exp2.tune import pack
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    assert TuneConfig().packing and TuneConfig().loss_on_prompt, "the study's defaults"
    exs = [(format_prompt(f"Task number {i}: name a colour."), f"Colour {i} is blue.") for i in range(12)]
    for on_prompt in (True, False):
        enc = [encode_example(tok, p, r, None, on_prompt) for p, r in exs]
        blocks = pack(enc, 16, seed=3)
        total = sum(len(i) for i, _ in enc)
        assert [len(b) for b, _ in blocks] == [16] * (total // 16), "full blocks, the remainder dropped"
        assert pack(enc, 16, seed=3) == blocks and pack(enc, 16, seed=4) != blocks, "seeded example order"
        ids = [t for b, _ in blocks for t in b]
        labels = [t for _, lab in blocks for t in lab]
        assert ids.count(tok.eos_token_id) >= total // 16 * 16 // max(len(i) for i, _ in enc), "examples end with eos"
        if on_prompt:
            assert labels == ids, "labels = inputs: loss on every token of the packed blocks"
        else:
            prompt_tokens = {len(tok(p, add_special_tokens=False)["input_ids"]) for p, _ in exs}
            assert labels != ids and labels.count(-100) >= len(blocks) * 16 // max(len(i) for i, _ in enc) * min(prompt_tokens)
            assert all(lab in (-100, t) for lab, t in zip(labels, ids)), "masked prompt tokens, response labels kept"


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
        ori = read_examples(tmp_path / "out" / "ori" / "train.jsonl") + read_examples(tmp_path / "out/ori/validation.jsonl")
        assert any(e["prompt"].endswith(".\nin one line\n\n### RESPONSE:\n") for e in ori)
        assert (tmp_path / "dl").is_dir(), "http download kept in download_dir"
        bad = online.model_copy(update={"leaner": OnlineFile(url=f"{base}/instruction0000.jsonl", sha256="0" * 64)})
        with pytest.raises(InputError, match="checksum mismatch"):
            build_instruct_data(InstructConfig(source="released", online=bad), tmp_path / "out2")
        unpinned = online.model_copy(update={"leaner": OnlineFile(url=f"{base}/instruction0000.jsonl")})
        with pytest.raises(InputError, match=r"instruct.online.leaner.sha256 is not pinned"):
            build_instruct_data(InstructConfig(source="released", online=unpinned), tmp_path / "out4")
        assert not (tmp_path / "out4").exists()
        (files / "broken.jsonl").write_text('{"instruction": "x"}\n')
        broken = online.model_copy(update={"leaner": OnlineFile(url=f"{base}/broken.jsonl"), "allow_unpinned": True})
        with pytest.raises(InputError, match=r"broken.jsonl:1: missing or non-string field 'output'"):
            build_instruct_data(InstructConfig(source="released", online=broken), tmp_path / "out3")
    finally:
        srv.shutdown()
        srv.server_close()


def test_recipes_start_from_their_pretraining_side_and_tune_on_their_tuning_side(tuned, pretrained):
    """dvc.yaml maps recipe <p>-<t> to the pretrained LLaMA of side p and the instruction data of side t; a
    tuned model is its base moved by tuning (closer to its own base than to the other side's)."""
    import yaml
    from safetensors.torch import load_file

    stage = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]["instruct_tune"]
    for p in stage["matrix"]["pretrain"]:
        for t in stage["matrix"]["tune"]:
            cmd = stage["cmd"].replace("${item.pretrain}", p).replace("${item.tune}", t).split()
            arg = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
            assert arg["--base"] == f"data/models/pretrain/llama-{p}/final" and arg["--data"] == f"data/instruct/{t}"
            assert Path(arg["--out"]).name == f"{p}-{t}" in RECIPES
    base = {side: load_file(str(pretrained[side] / "model.safetensors")) for side in SIDES}
    dist = lambda a, b: sum(float((a[k].float() - b[k].float()).norm()) for k in a)  # noqa: E731
    for recipe, (out, metrics) in tuned.items():
        p = recipe.split("-")[0]
        other = next(s for s in SIDES if s != p)
        assert sorted(d.name for d in out.iterdir() if d.is_dir()) == ["final", "step-000003", "step-000006"]
        w = load_file(str(out / "final" / "model.safetensors"))
        last = load_file(str(out / "step-000006" / "model.safetensors"))
        assert all((w[k] == last[k]).all() for k in w), "final = last checkpoint"
        assert 0 < dist(w, base[p]) < dist(w, base[other]), f"{recipe} does not start from llama-{p}"
        assert metrics["packing"] and metrics["loss_on_prompt"]
        assert metrics["loss_tokens"] == metrics["tokens"] - metrics["steps"] * TINY_TUNE.batch_size, \
            "packed blocks: every token but the first of a row carries a loss"
        assert [r["step"] for r in metrics["curve"]] == [3, 6] and not {"seconds", "tokens_per_s"} & set(metrics)


def test_tuning_is_reproducible_and_prompt_loss_switch(pretrained, instruct_dir, tuned, tmp_path):
    from safetensors.torch import load_file

    base, data = pretrained["ori"], instruct_dir / "leaner"
    m = tune(base, data / "train.jsonl", data / "validation.jsonl", tmp_path / "again", TINY_TUNE, 7, "ori-leaner")
    ref_dir, ref = tuned["ori-leaner"]
    assert m["curve"] == ref["curve"], "same seed and data -> same losses"
    a, b = load_file(str(tmp_path / "again/final/model.safetensors")), load_file(str(ref_dir / "final/model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    cfg = TINY_TUNE.model_copy(update={"loss_on_prompt": False, "steps": 2, "checkpoint_every": 2})
    m2 = tune(base, data / "train.jsonl", data / "validation.jsonl", tmp_path / "p", cfg, 7, "ori-leaner")
    assert 0 < m2["loss_tokens"] < m2["tokens"] - 2 * cfg.batch_size, "masked prompt tokens carry no loss"
    cfg = TINY_TUNE.model_copy(update={"packing": False, "steps": 2, "checkpoint_every": 2})
    m3 = tune(base, data / "train.jsonl", data / "validation.jsonl", tmp_path / "u", cfg, 7, "ori-leaner")
    assert m3["loss_tokens"] == m3["tokens"] - 2 * cfg.batch_size and not m3["packing"]
    assert m3["train_sequences"] == m3["train_examples"] > m["train_sequences"] / 10


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
                                                 "tune.json", "--live", "live", "--run-file", "leaner-ori.tsv"],
                            params, tmp_path, ["tune.json", "live", "leaner-ori/tune_metrics.json", "leaner-ori.tsv"])
    metrics = json.loads(files["tune.json"])
    assert metrics["recipe"] == "leaner-ori" and metrics["checkpoints"] == ["step-000002", "step-000004"]
    curve = json.loads(files["leaner-ori/tune_metrics.json"])["curve"]
    assert files["live/plots/metrics/val_loss.tsv"].decode().splitlines()[1:] == [
        f"{r['step']}\t{r['val_loss']}" for r in curve]
    from tinyhelen import runfiles

    rf = runfiles.read(tmp_path / "run1" / "leaner-ori.tsv", "instruct")  # the run file: the curve with tokens
    assert [(r["step"], r["tokens"], r["val_loss"]) for r in rf.rows] == [
        (r["step"], r["tokens"], r["val_loss"]) for r in curve] and rf.rows[-1]["tokens"] == metrics["tokens"]
