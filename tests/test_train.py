"""The generic training loop: exact resume, equal token budget, data order, objectives, schedule."""
from __future__ import annotations

import json

import pytest
import torch

from tinyhelen import models, train
from tinyhelen.tokenizer import load


@pytest.fixture(scope="module")
def tok(tokenizers):
    return load(tokenizers["leaner"])


@pytest.fixture(scope="module")
def blocks(prepared, tok):
    from tinyhelen.data import read_docs

    texts = [r["text"] for r in read_docs(prepared / "corpus" / "leaner" / "train.jsonl")][:60]
    return train.pack(train.tokenize_docs(texts, tok), 32)


def _cfg(**kw):
    base = dict(seq_len=32, batch_size=8, token_budget=8 * 32 * 6, lr=2e-3, warmup_ratio=0.2, log_every=1,
                eval_every=3, checkpoint_every=100)
    return train.PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize("arch", ["bert", "llama"])  # MLM (random masks, dropout) and CLM
def test_resume_equals_uninterrupted(tmp_path, tok, blocks, arch):
    cfg = _cfg()
    data, val = {"input_ids": blocks[:-8]}, {"input_ids": blocks[-8:]}

    def run(out, stop_after=None):
        torch.manual_seed(0)
        model = models.build_lm(arch, models.build_config(arch, "tiny", tok))
        return train.train_loop(model, data, cfg, steps=cfg.steps, seed=7, objective=train.make_objective(arch, tok, cfg),
                                out_dir=out, val=val, stop_after=stop_after)

    full = run(tmp_path / "full")
    part = run(tmp_path / "part", stop_after=2)  # "interrupted" after 2 of 6 steps, checkpoint written
    assert part["final"]["steps"] == 2
    assert (tmp_path / "part" / "checkpoints" / "step-0000002" / "optimizer.pt").exists()
    torch.manual_seed(123)  # a different global RNG state: the checkpoint must restore it
    resumed = run(tmp_path / "part")
    assert resumed["final"]["steps"] == cfg.steps == 6
    assert resumed["final"]["tokens_seen"] == full["final"]["tokens_seen"] == cfg.tokens_per_run
    for (k, a), (k2, b) in zip(full["model"].state_dict().items(), resumed["model"].state_dict().items()):
        assert k == k2
        assert torch.equal(a, b), f"{arch}: {k} differs after resume"
    strip = lambda h: [(r["step"], r["train_loss"], r["val_loss"]) for r in h]  # noqa: E731
    assert strip(full["history"]) == strip(resumed["history"])


def test_checkpoint_of_other_config_is_not_resumed(tmp_path, tok, blocks):
    cfg = _cfg()
    model = models.build_lm("llama", models.build_config("llama", "tiny", tok))
    train.train_loop(model, {"input_ids": blocks}, cfg, steps=cfg.steps, seed=1,
                     objective=train.clm_objective(), out_dir=tmp_path, stop_after=1)
    fp_other = train._fingerprint(_cfg(lr=1e-3), {})
    assert train.latest_checkpoint(tmp_path / "checkpoints", fp_other) is None
    assert train.latest_checkpoint(tmp_path / "checkpoints") is not None


def test_stream_indices_cover_every_block_once_per_epoch():
    n, b = 10, 4
    seen = torch.cat([train.stream_indices(s, b, n, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])  # reshuffled per epoch
    assert torch.equal(train.stream_indices(2, b, n, 3), train.stream_indices(2, b, n, 3))


def test_lr_schedule_warmup_and_decay():
    lrs = [train.lr_lambda(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_token_budget_validation():
    with pytest.raises(ValueError, match="smaller than one batch"):
        train.PretrainConfig(token_budget=100, batch_size=8, seq_len=32)
    with pytest.raises(ValueError, match="even"):
        train.PretrainConfig(seq_len=33)


def test_plm_objective_hides_targets(tok):
    ids = torch.randint(10, len(tok), (3, 24), generator=torch.Generator().manual_seed(0))
    out = train.plm_objective(tok)({"input_ids": ids}, torch.Generator().manual_seed(1))
    tm, perm, labels = out["target_mapping"], out["perm_mask"], out["labels"]
    k = tm.shape[1]
    assert tm.shape == (3, k, 24) and labels.shape == (3, k) and perm.shape == (3, 24, 24)
    for i in range(3):
        for j in range(k):
            if labels[i, j] == -100:
                assert tm[i, j].sum() == 0
                continue
            pos = int(tm[i, j].argmax())
            assert labels[i, j] == ids[i, pos]
            assert perm[i, pos, pos] == 1  # a target never sees itself


def test_mlm_objective_masks_about_15_percent(tok):
    ids = torch.randint(10, len(tok), (16, 64), generator=torch.Generator().manual_seed(0))
    out = train.mlm_objective(tok)({"input_ids": ids}, torch.Generator().manual_seed(0))
    frac = (out["labels"] != -100).float().mean().item()
    assert 0.10 < frac < 0.20
    picked = out["labels"] != -100
    assert (out["input_ids"][picked] == tok.mask_token_id).float().mean() > 0.6
    assert torch.equal(out["input_ids"][~picked], ids[~picked])


def test_pretrain_writes_final_model_with_tokenizer(tmp_path, prepared, tokenizers):
    cfg = _cfg(token_budget=8 * 32 * 3, eval_tokens=256)
    res = train.pretrain("mamba", "tiny", prepared / "corpus" / "ori", tokenizers["ori"], tmp_path / "m",
                         cfg, seed=5, name="mamba-ori")
    final = tmp_path / "m" / "final"
    assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
    info = json.loads((final / "train_info.json").read_text())
    assert info["tokens_seen"] == cfg.tokens_per_run == res["final"]["tokens_seen"]
    assert res["history"][0]["step"] == 0 and res["history"][-1]["val_loss"] is not None
    clf = models.build_classifier("mamba", final, 2)  # the GLUE stage can load it
    assert clf.config.vocab_size == len(load(tokenizers["ori"]))
