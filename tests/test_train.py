"""The shared training loop: exact resume (weights, rows and DVCLive log), equal token budget, data order,
objectives, the optimiser builder and the learning-rate schedule."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tinyhelen.exp1 import models, pretrain
from tinyhelen.tokenizer import load
from tinyhelen.train import checkpoint, objectives
from tinyhelen.train.config import OptimConfig
from tinyhelen.train.live import TrainLog
from tinyhelen.train.loop import Cadence, LoopConfig, LoopContext, train_loop
from tinyhelen.train.optim import build_optimizer, lr_at


@pytest.fixture(scope="module")
def tok(tokenizers):
    return load(tokenizers["leaner"])


@pytest.fixture(scope="module")
def blocks(prepared, tok):
    from tinyhelen.data import read_docs

    texts = [r["text"] for r in read_docs(prepared / "corpus" / "leaner" / "train.jsonl")][:60]
    return pretrain.pack(pretrain.tokenize_docs(texts, tok), 32)


def _cfg(**kw):
    base = dict(seq_len=32, batch_size=8, token_budget=8 * 32 * 6, lr=2e-3, warmup_steps=1, log_every=1,
                eval_every=3, checkpoint_every=100, device="cpu")
    return pretrain.PretrainConfig(**{**base, **kw})


def _run(arch, tok, cfg, data, val, out, *, seed=7, stop_after=None, live=None, key="run"):
    torch.manual_seed(0)
    model = models.build_lm(arch, models.build_config(arch, "tiny", tok))
    obj = objectives.make_objective(models.get(arch).objective, tok, cfg)
    loop = LoopConfig.of(cfg, lr=cfg.lr[0], steps=cfg.steps, ckpt_dir=out / "checkpoints", run_key=key,
                         stop_after=stop_after, cadence=Cadence(cfg.log_every, cfg.eval_every, cfg.checkpoint_every))
    return train_loop(model, pretrain.BlockSource(data, cfg.batch_size, seed, obj), loop,
                      evaluate=pretrain.block_loss(val, obj, seed, cfg.batch_size),
                      callbacks=[TrainLog(live)] if live else [])


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arch", ["bert", "llama"])  # MLM (random masks, dropout) and CLM
def test_resume_equals_uninterrupted(tmp_path, tok, blocks, arch):
    cfg = _cfg()
    data, val = {"input_ids": blocks[:-8]}, {"input_ids": blocks[-8:]}
    full = _run(arch, tok, cfg, data, val, tmp_path / "full", live=tmp_path / "live_full")
    part = _run(arch, tok, cfg, data, val, tmp_path / "part", stop_after=2, live=tmp_path / "live_part")
    assert part.final["steps"] == 2 and not part.finished  # "interrupted" after 2 of 6 steps
    assert (tmp_path / "part" / "checkpoints" / "step-0000002" / "optimizer.pt").exists()
    torch.manual_seed(123)  # a different global RNG state: the checkpoint must restore it
    resumed = _run(arch, tok, cfg, data, val, tmp_path / "part", live=tmp_path / "live_part")
    assert resumed.final["steps"] == cfg.steps == 6
    assert resumed.final["tokens_seen"] == full.final["tokens_seen"] == cfg.tokens_per_run
    for (k, a), (k2, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b), f"{arch}: {k} differs after resume"
    assert full.history == resumed.history
    # the DVCLive log of the resumed run is byte for byte the log of the uninterrupted one
    assert _files(tmp_path / "live_full") == _files(tmp_path / "live_part")
    assert sorted(_files(tmp_path / "live_full")) == ["metrics.json", "plots/metrics/lr.tsv",
                                                      "plots/metrics/train_loss.tsv", "plots/metrics/val_loss.tsv"]
    summary = json.loads((tmp_path / "live_full" / "metrics.json").read_text())
    assert summary == {"step": 6, "train_loss": full.history[-1]["train_loss"],
                       "val_loss": full.history[-1]["val_loss"]}


def test_checkpoint_of_other_config_is_not_resumed(tmp_path, tok, blocks):
    cfg = _cfg()
    data = {"input_ids": blocks}
    _run("llama", tok, cfg, data, data, tmp_path, stop_after=1)
    assert checkpoint.latest_checkpoint(tmp_path / "checkpoints", "other") is None
    assert checkpoint.latest_checkpoint(tmp_path / "checkpoints", "run") is not None


def test_resume_with_a_later_checkpoint_of_another_run_in_the_folder(tmp_path, tok, blocks):
    """An older run of another configuration left a checkpoint at a later step in the folder: pruning keeps
    this run's own newest checkpoint (other run keys never count), so a run killed after a checkpoint resumes
    from it on the rerun and ends exactly as an uninterrupted run; the other run's checkpoint is left alone."""
    cfg = _cfg(checkpoint_every=2)
    data, val = {"input_ids": blocks[:-8]}, {"input_ids": blocks[-8:]}
    full = _run("llama", tok, cfg, data, val, tmp_path / "full")
    older = _run("llama", tok, _cfg(checkpoint_every=5, token_budget=8 * 32 * 5), data, val, tmp_path / "part",
                 key="older")
    ckpts = tmp_path / "part" / "checkpoints"
    assert older.finished and [d.name for d in ckpts.iterdir()] == ["step-0000005"]
    part = _run("llama", tok, cfg, data, val, tmp_path / "part", stop_after=3)  # killed after step 3
    assert not part.finished and checkpoint.latest_checkpoint(ckpts, "run").name == "step-0000003"
    resumed = _run("llama", tok, cfg, data, val, tmp_path / "part")
    assert len(resumed.step_losses) == 3, "the rerun resumed from step 3, it did not start afresh"
    assert resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()))
    assert sorted(d.name for d in ckpts.iterdir()) == ["step-0000005", "step-0000006"]
    assert checkpoint.latest_checkpoint(ckpts, "older").name == "step-0000005"  # not pruned by this run


def test_a_non_finite_loss_stops_the_run_at_the_next_row_naming_the_steps():
    """Losses stay on the device between history rows; a non-finite one raises at the next row (or before a
    checkpoint), naming the steps since the previous row."""
    from types import SimpleNamespace

    from tinyhelen.train.config import ComputeConfig

    class Toy(torch.nn.Module):  # the loss is the input's mean: inf from step 3 on
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, labels):
            return SimpleNamespace(loss=(self.w * x).mean())

    class Steps:  # step s: a batch of value s (inf from step 3)
        def size(self, step):
            return 2

        def batch(self, step, shard):
            return {"x": torch.full((2, 1), float("inf") if step >= 2 else 1.0), "labels": torch.zeros(2)}

        def tokens(self, batch):
            return 2

        def state(self):
            return {}

        def load_state(self, state):
            pass

    cfg = LoopConfig(optim=OptimConfig(), compute=ComputeConfig(device="cpu"), lr=1e-3, steps=6, progress=False,
                     cadence=Cadence(2, 100, 100, eval_at_start=False))
    with pytest.raises(FloatingPointError, match="non-finite loss in steps 3-4"):
        train_loop(Toy(), Steps(), cfg)


def test_stream_indices_cover_every_block_once_per_epoch():
    n, b = 10, 4
    seen = torch.cat([pretrain.stream_indices(s, b, n, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])  # reshuffled per epoch
    assert torch.equal(pretrain.stream_indices(2, b, n, 3), pretrain.stream_indices(2, b, n, 3))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_schedule_warmup_and_decay(schedule):
    cfg = OptimConfig(warmup_steps=10, lr_schedule=schedule, min_lr_ratio=0.1)
    lrs = [lr_at(s, 2.0, 100, cfg) for s in range(100)]
    assert lrs[:10] == [2.0 * (s + 1) / 10 for s in range(10)]  # linear warm-up to the peak
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    if schedule == "constant":
        assert set(lrs[10:]) == {2.0}
    else:
        assert lr_at(100, 2.0, 100, cfg) == pytest.approx(0.2)  # min_lr_ratio x peak after the last step
        t = 45 / 90
        mid = 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else 1 - t
        assert lrs[55] == pytest.approx(2.0 * (0.1 + 0.9 * mid))


def test_optimizer_groups_by_weight_decay_scope(tok):
    model = models.build_lm("bert", models.build_config("bert", "tiny", tok))
    names = {id(p): n for n, p in model.named_parameters()}
    matrices = build_optimizer(model, OptimConfig(weight_decay=0.1), 1e-3)
    decay, rest = matrices.param_groups
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.ndim >= 2 and "embed" not in names[id(p)].lower() for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in rest["params"]) and any(p.ndim == 1 for p in rest["params"])
    everything = build_optimizer(model, OptimConfig(weight_decay=0.1, weight_decay_scope="all", adam_beta2=0.95), 1e-3)
    (group,) = everything.param_groups
    assert len(group["params"]) == len(decay["params"]) + len(rest["params"]) and group["betas"] == (0.9, 0.95)


def test_token_budget_validation():
    with pytest.raises(ValueError, match="smaller than one batch"):
        pretrain.PretrainConfig(token_budget=100, batch_size=8, seq_len=32)
    with pytest.raises(ValueError, match="even"):
        pretrain.PretrainConfig(seq_len=33)


# ------------------------------------------------------------------ the study's pretraining objectives
def _structure(objective: str, out: dict, ids: torch.Tensor, tok) -> bool:
    """Whether ``out`` has the structure of ``objective``'s inputs for the blocks ``ids``."""
    if objective == "clm":
        return torch.equal(out["labels"], ids) and torch.equal(out["input_ids"], ids) and "perm_mask" not in out
    if objective == "mlm":
        return (bool((out["labels"] == -100).float().mean() > 0.7) and bool((out["input_ids"] == tok.mask_token_id).any())
                and "perm_mask" not in out)
    return {"perm_mask", "target_mapping"} <= set(out) and out["labels"].shape[1] < ids.shape[1]


def test_each_architecture_pretrains_with_the_study_objective(tok):
    """LLaMA and Mamba: causal LM; BERT: masked LM; XLNet: permutation LM (the objective pretraining builds,
    checked by the structure of its inputs, and the model takes them)."""
    from tinyhelen.study import STUDY_OBJECTIVES

    cfg = _cfg()
    ids = torch.randint(10, len(tok), (4, 32), generator=torch.Generator().manual_seed(0))
    for arch, objective in STUDY_OBJECTIVES.items():
        out = pretrain.objective_for(arch, tok, cfg)({"input_ids": ids}, torch.Generator().manual_seed(1))
        assert _structure(objective, out, ids, tok), f"{arch} does not pretrain with {objective}"
        model = models.build_lm(arch, models.build_config(arch, "tiny", tok))
        assert torch.isfinite(model(**out).loss)


def test_mlm_labels_only_masked_positions_80_10_10_specials_never(tok):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (64, 256), generator=gen)
    ids[:, ::7] = tok.eos_token_id  # special tokens all over the blocks
    out = objectives.mlm_objective(tok)({"input_ids": ids}, torch.Generator().manual_seed(3))
    picked = out["labels"] != -100
    special = ids == tok.eos_token_id
    assert not picked[special].any() and torch.equal(out["input_ids"][special], ids[special])
    frac = picked.float().sum() / (~special).float().sum()
    assert 0.14 < frac < 0.16
    assert torch.equal(out["labels"][picked], ids[picked])  # a label is the original token
    assert torch.equal(out["input_ids"][~picked], ids[~picked])  # nothing else changes
    new = out["input_ids"][picked]
    masked = (new == tok.mask_token_id).float().mean()
    kept = (new == ids[picked]).float().mean()
    replaced = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(replaced - 0.1) < 0.015


def _check_factorisation_order(perm: torch.Tensor, masked: torch.Tensor) -> None:
    """``perm`` (L, L; 1 = may not see) is leakage-free for the targets ``masked`` (L,): no target sees itself;
    the targets are totally ordered (of two targets exactly one sees the other, without cycles); a target
    sees only targets earlier in that order; non-targets are seen by every position and see no target."""
    t = masked.nonzero().flatten()
    nt = (~masked).nonzero().flatten()
    assert (perm[:, nt] == 0).all(), "a non-target is hidden"
    assert (perm[t, t] == 1).all(), "a target sees itself"
    sub = perm[t][:, t]  # among targets
    off = ~torch.eye(len(t), dtype=torch.bool)
    assert ((sub + sub.T)[off] == 1).all(), "targets are not totally ordered"
    # acyclic: sorting by the number of targets each one sees gives a strict order consistent with ``sub``
    seen = (1 - sub).sum(1) - 0  # targets visible to each target
    order = torch.argsort(seen)
    ranked = sub[order][:, order]
    assert torch.equal(ranked, torch.triu(torch.ones_like(ranked))), "the order has a cycle"
    assert (perm[nt][:, t] == 1).all(), "a non-target sees a target"


def test_plm_permutation_structure(tok):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (6, 48), generator=gen)
    ids[:, 20] = tok.eos_token_id
    out = objectives.plm_objective(tok)({"input_ids": ids}, torch.Generator().manual_seed(1))
    tm, perm, labels = out["target_mapping"], out["perm_mask"], out["labels"]
    k = tm.shape[1]
    assert tm.shape == (6, k, 48) and labels.shape == (6, k) and perm.shape == (6, 48, 48)
    for i in range(6):
        masked = tm[i].sum(0) > 0
        assert not masked[20]  # special tokens are never targets
        assert 0.05 < masked.float().mean() < 0.35  # spans of about 1/6 of the tokens
        n = int(masked.sum())
        assert torch.equal(labels[i, :n], ids[i, masked]) and (labels[i, n:] == -100).all()
        assert torch.equal(tm[i, torch.arange(n), masked.nonzero().flatten()], torch.ones(n))
        # the functional token is not a target but keeps its place in the order: treat it as a target here
        func = ids[i] == tok.eos_token_id
        _check_factorisation_order(perm[i][~func][:, ~func], masked[~func])


def test_plm_is_deterministic_and_row_independent_of_device_path(tok):
    ids = torch.randint(10, len(tok), (3, 24), generator=torch.Generator().manual_seed(0))
    fn = objectives.plm_objective(tok)
    a = fn({"input_ids": ids}, torch.Generator().manual_seed(5))
    b = fn({"input_ids": ids}, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mlm_rejects_unknown_objective_name(tok):
    with pytest.raises(ValueError, match="unknown pretraining objective"):
        objectives.make_objective("nope", tok, _cfg())


@pytest.mark.slow
def test_pretrain_sweeps_lr_and_writes_the_best_weights(tmp_path, prepared, tokenizers):
    """Two learning rates, each its own run; the one with the lowest validation loss is selected, and final/
    holds its weights at its best evaluation (what GLUE fine-tunes), on the device asked for."""
    cfg = _cfg(token_budget=8 * 32 * 4, eval_tokens=256, eval_every=2, lr=[2e-3, 0.5])
    res = pretrain.pretrain("mamba", "tiny", prepared / "corpus" / "ori", tokenizers["ori"], tmp_path / "m",
                            cfg, seed=5, name="mamba-ori", live_dir=tmp_path / "live")
    final = tmp_path / "m" / "final"
    assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
    info = json.loads((final / "train_info.json").read_text())
    assert info["tokens_seen"] == cfg.tokens_per_run == res["final"]["tokens_seen"] and info["device"] == "cpu"
    assert not {"seconds", "tokens_per_s", "mfu"} & set(info)  # wall clock is not a figure of the run
    sweep = info["lr_sweep"]
    assert set(sweep) == {"0.002", "0.5"} and all((tmp_path / "m" / f"lr-{k}" / "live").is_dir() for k in sweep)
    best = min(sweep, key=lambda k: sweep[k]["best_val_loss"])
    assert info["lr"] == float(best) and info["best_val_loss"] == sweep[best]["best_val_loss"]
    assert info["best_val_loss"] == min(r["val_loss"] for r in res["history"] if r["val_loss"] is not None)
    assert (tmp_path / "live" / "plots" / "metrics" / "val_loss.tsv").exists()  # the selected run's log
    # final/ holds the weights of the best evaluation
    model = models.resolve(models.get("mamba").lm_class).from_pretrained(str(final))
    from tinyhelen.tokenizer import load as load_tok

    tok = load_tok(tokenizers["ori"])
    texts = pretrain.read_corpus(prepared / "corpus" / "ori", "validation", cfg)
    val = pretrain.even_blocks(pretrain.pack(pretrain.tokenize_docs(texts, tok), cfg.seq_len), cfg.eval_tokens)
    obj = pretrain.objective_for("mamba", tok, cfg)
    ctx = LoopContext(res_accelerator(), torch.device("cpu"), world=1, rank=0)
    model.eval()
    with torch.no_grad():
        loss = pretrain.block_loss({"input_ids": val}, obj, 5, cfg.batch_size)(model, ctx)
    assert loss == pytest.approx(info["best_val_loss"], abs=1e-4)
    clf = models.build_classifier("mamba", final, 2)  # the GLUE stage can load it
    assert clf.config.vocab_size == len(tok)


def res_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_pretraining_reads_the_study_genres_only(prepared):
    cfg = _cfg()
    assert set(cfg.genres) == {"book", "conversation", "textbook", "web", "wiki"}
    from tinyhelen.data import read_docs

    path = prepared / "corpus" / "leaner"
    kept = list(pretrain.read_corpus(path, "train", cfg))
    by_genre = [r for r in read_docs(path / "train.jsonl") if r["genre"] in cfg.genres]
    assert kept == [r["text"] for r in by_genre] and len(by_genre) < len(list(read_docs(path / "train.jsonl")))
    assert list(pretrain.read_corpus(path, "train", _cfg(genres=None), limit=3)) == [
        r["text"] for r in list(read_docs(path / "train.jsonl"))[:3]]


# ------------------------------------------------------------------ same params -> byte-identical metrics
def run_stage_twice(script: str, args: list[str], params: dict, tmp_path, outputs: list[str]) -> dict[str, bytes]:
    """Run ``stages/<script>`` twice, each in a fresh process and its own working directory, and assert that
    the ``outputs`` (files, or directories compared file by file) are byte-identical. Returns run 1's files."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    runs = []
    for i in (1, 2):
        cwd = tmp_path / f"run{i}"
        cwd.mkdir()
        (cwd / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "PYTHONPATH": str(repo / "src"), "TINYHELEN_LOG": "WARNING"}
        res = subprocess.run([sys.executable, str(repo / "stages" / script), *args, "--params", "params.yaml"],
                             cwd=cwd, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        files = {}
        for out in outputs:
            p = cwd / out
            assert p.exists(), f"{script} did not write {out}"
            for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
                if f.is_file():
                    files[f.relative_to(cwd).as_posix()] = f.read_bytes()
        assert (cwd / "reports" / "timings").is_dir()  # the wall-clock figures went there instead
        runs.append(files)
    assert runs[0] == runs[1], [k for k in runs[0] if runs[0][k] != runs[1].get(k)]
    return runs[0]


@pytest.mark.slow
def test_pretrain_stage_metrics_are_byte_identical(tmp_path, prepared, tokenizers):
    params = {"seed": 3, "models": {"preset": "tiny"},
              "pretrain": dict(token_budget=8 * 32 * 4, seq_len=32, batch_size=8, eval_tokens=256, eval_every=2,
                               log_every=1, warmup_steps=1, max_train_docs=40, threads=1)}
    files = run_stage_twice("pretrain.py", ["bert", "leaner", "--corpus", str(prepared / "corpus" / "leaner"),
                                            "--tokenizer", str(tokenizers["leaner"]), "--out", "run",
                                            "--metrics", "run.json", "--live", "live", "--run-file", "bert-leaner.tsv"],
                            params, tmp_path, ["run.json", "live", "run/final/train_info.json", "bert-leaner.tsv"])
    metrics = json.loads(files["run.json"])
    assert metrics["tokens_seen"] == 8 * 32 * 4 and not {"seconds", "tokens_per_s", "mfu"} & set(metrics)
    assert "live/plots/metrics/val_loss.tsv" in files
    from tinyhelen import runfiles
    from tinyhelen.exp1.result import pretrain_run

    rf = runfiles.read(tmp_path / "run1" / "bert-leaner.tsv", "pretrain")  # every evaluation, unique tokens
    assert [r["step"] for r in rf.rows] == [0, 2, 4] and [r["unique_tokens"] for r in rf.rows] == [0, 512, 1024]
    run = pretrain_run(rf, "bert", "leaner")  # the run the stage selected, rebuilt from the run file
    assert (run.tokens_seen, run.val_loss, run.best_step, run.non_embedding_params) == (
        metrics["tokens_seen"], metrics["val_loss"], metrics["best_step"], metrics["non_embedding_params"])

