"""EXP1 models: preset sizes, a few training steps per arch, classification heads and padding, and the
architecture registry (a toy fifth architecture registered here runs through pretraining, GLUE and EXP1)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from tinyhelen.exp1 import models
from tinyhelen.exp1.pretrain import PretrainConfig
from tinyhelen.tokenizer import load
from tinyhelen.train.objectives import make_objective
from tinyhelen.train.optim import build_optimizer


@pytest.fixture(scope="module")
def tok(tokenizers):
    return load(tokenizers["leaner"])


@pytest.mark.parametrize("preset", models.PRESETS)
def test_preset_non_embedding_params_within_5_percent(tok, preset):
    target = models.TARGET_NON_EMBEDDING[preset]
    for arch in models.arch_names():
        model = models.build_lm(arch, models.build_config(arch, preset, tok))
        n = models.non_embedding_params(model)
        assert abs(n - target) / target <= 0.05, f"{arch}/{preset}: {n:,} vs target {target:,}"
        assert model.config.vocab_size == len(tok)
        assert models.total_params(model) > n  # embeddings exist and are excluded


def test_non_embedding_excludes_tied_and_untied_tables(tok):
    untied = models.build_lm("llama", models.build_config("llama", "tiny", tok))
    d = untied.config.hidden_size
    assert models.total_params(untied) - models.non_embedding_params(untied) == 2 * len(tok) * d  # in + out
    tied = models.build_lm("mamba1", models.build_config("mamba1", "tiny", tok))
    d = tied.config.hidden_size
    assert models.total_params(tied) - models.non_embedding_params(tied) == len(tok) * d  # tied: once


@pytest.mark.parametrize("preset", models.PRESETS)
def test_llama_and_mamba_follow_the_study(tok, preset):
    """LLaMA: untied embeddings, RoPE theta 500,000, SDPA attention; tiny = the study's EXP3 proxy shape.
    Mamba: the Mamba2 mixer with the gated-MLP block (d=768, 2 layers, MLP 1,536 at the paper preset)."""
    llama = models.build_lm("llama", models.build_config("llama", preset, tok))
    cfg = llama.config
    assert not cfg.tie_word_embeddings and llama.lm_head.weight is not llama.model.embed_tokens.weight
    assert cfg.rope_parameters["rope_theta"] == 500_000
    assert cfg._attn_implementation == "sdpa"
    if preset == "tiny":
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
            128, 4, 4, 512)
    mamba = models.build_lm("mamba", models.build_config("mamba", preset, tok))
    assert mamba.config.model_type == "mamba2" and not mamba.config.tie_word_embeddings
    block = mamba.backbone.layers[0]
    assert block.mlp is not None and block.mlp.fc2.in_features == mamba.config.mlp_intermediate_size
    if preset == "paper":
        c = mamba.config
        assert (c.hidden_size, c.num_hidden_layers, c.mlp_intermediate_size, c.state_size) == (768, 2, 1536, 128)
        assert abs(models.non_embedding_params(mamba) - 14.61e6) / 14.61e6 < 0.01


@pytest.mark.parametrize("arch", models.arch_names())
def test_each_arch_loss_decreases_in_a_few_steps(tok, arch, tokenizers):
    """Train 8 steps on one fixed batch of real text: the pretraining loss must drop clearly."""
    torch.manual_seed(0)
    cfg = PretrainConfig(seq_len=32, batch_size=8, token_budget=8 * 32 * 8, lr=3e-3, warmup_steps=0,
                         lr_schedule="constant")
    text = " ".join(["The little cat sat on the warm mat and looked at the red ball."] * 40)
    ids = tok(text)["input_ids"][: 8 * 32]
    batch = {"input_ids": torch.tensor(ids).view(8, 32)}
    model = models.build_lm(arch, models.build_config(arch, "tiny", tok))
    model.train()
    opt = build_optimizer(model, cfg, cfg.lr[0])
    obj = make_objective(models.get(arch).objective, tok, cfg)
    losses = []
    for step in range(8):
        gen = torch.Generator().manual_seed(step)
        loss = model(**obj(batch, gen)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, f"{arch}: {losses}"


@pytest.mark.parametrize("arch", models.arch_names())
def test_classifier_padding_does_not_change_logits(tok, arch):
    """Pooling uses the right token for each arch's padding side: padded and unpadded logits agree."""
    from tinyhelen.exp1.glue import collate, encode_pair

    torch.manual_seed(0)
    clf = models.build_classifier(arch, models.build_config(arch, "tiny", tok), 3).eval()
    short = encode_pair(tok, models.get(arch), "A dog runs.", "A cat sleeps.", 64)
    long = encode_pair(tok, models.get(arch), "The old man walked slowly to the shop at the end of the road.", None, 64)
    with_types, side = models.get(arch).token_type_ids, models.get(arch).padding_side
    both = collate([short, long], tok.pad_token_id, side, with_types)
    alone = collate([short], tok.pad_token_id, side, with_types)
    assert both["input_ids"].shape[1] > alone["input_ids"].shape[1]  # `short` really is padded
    with torch.no_grad():
        a = clf(**both).logits[0]
        b = clf(**alone).logits[0]
    assert a.shape == (3,)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", models.arch_names())
def test_classifier_from_pretrained_checkpoint_keeps_backbone(tok, arch, tmp_path):
    torch.manual_seed(0)
    lm = models.build_lm(arch, models.build_config(arch, "tiny", tok))
    lm.save_pretrained(str(tmp_path))
    clf = models.build_classifier(arch, tmp_path, 1)  # regression head
    lm_sd, clf_sd = lm.state_dict(), clf.state_dict()
    # every backbone tensor of the classifier equals the pretrained one (names differ by a prefix)
    matched = 0
    for k, v in clf_sd.items():
        for prefix in ("bert.", "model.", "transformer.", "backbone."):
            if k.startswith(prefix) and k in lm_sd:
                torch.testing.assert_close(v, lm_sd[k])
                matched += 1
    assert matched >= 10, f"{arch}: only {matched} backbone tensors matched"
    out = clf(input_ids=torch.tensor([[5, 6, 7, tok.eos_token_id]]), labels=torch.tensor([2.5]))
    assert out.logits.shape == (1, 1) and torch.isfinite(out.loss)


def test_wrong_checkpoint_arch_is_rejected(tok, tmp_path):
    models.build_lm("llama", models.build_config("llama", "tiny", tok)).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="not 'bert'"):
        models.build_classifier("bert", tmp_path, 2)


@pytest.mark.parametrize("parallel", [False, True])
def test_selective_scan_matches_reference_loop(parallel):
    from transformers.models.mamba import modeling_mamba as mm

    from tinyhelen.exp1.models.mamba import install_cpu_scan

    install_cpu_scan()
    g = torch.Generator().manual_seed(0)
    b, d, n, length = 2, 6, 4, 13
    hs = torch.randn(b, d, length, generator=g, requires_grad=True)
    dt, z = torch.randn(b, d, length, generator=g), torch.randn(b, d, length, generator=g)
    A, D = -torch.rand(d, n, generator=g), torch.randn(d, generator=g)
    B, C = torch.randn(b, n, length, generator=g), torch.randn(b, n, length, generator=g)
    # the transformers reference loop (recurrent path), written out
    dts = torch.nn.functional.softplus(dt)
    state = torch.zeros(b, d, n)
    ref = []
    for t in range(length):
        state = torch.exp(A * dts[:, :, t, None]) * state + dts[:, :, t, None] * B[:, None, :, t] * hs[:, :, t, None]
        ref.append((state * C[:, None, :, t]).sum(-1))
    ref = (torch.stack(ref, -1) + hs * D[None, :, None]) * torch.nn.functional.silu(z)
    out = mm.mamba_selective_scan(hs, dt, A, B, C, D=D, z=z, delta_softplus=True, parallel=parallel)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mamba2_chunked_scan_matches_the_recurrence_forward_and_backward():
    """The Mamba2 scan the classifier and LM run on CPU (transformers' chunked scan, sequences shorter and longer
    than a chunk) equals the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t, and so
    do its gradients: the scan is not why a Mamba2 classifier can fail to generalise (docs/exp1.md)."""
    from transformers.models.mamba2 import modeling_mamba2 as m2

    g = torch.Generator().manual_seed(0)
    b, length, heads, p, n = 2, 11, 3, 4, 5
    x = torch.randn(b, length, heads, p, generator=g, dtype=torch.float64, requires_grad=True)
    dt = torch.randn(b, length, heads, generator=g, dtype=torch.float64, requires_grad=True)
    A = (-torch.rand(heads, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    B = torch.randn(b, length, 1, n, generator=g, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, length, 1, n, generator=g, dtype=torch.float64, requires_grad=True)
    D = torch.ones(heads, dtype=torch.float64, requires_grad=True)
    d = torch.nn.functional.softplus(dt)
    h, ref = torch.zeros(b, heads, p, n, dtype=torch.float64), []
    for t in range(length):
        decay = torch.exp(d[:, t] * A)[..., None, None]
        h = decay * h + d[:, t, :, None, None] * x[:, t, ..., None] * B[:, t, 0, None, None]
        ref.append(torch.einsum("bhpn,bn->bhp", h, C[:, t, 0]) + D[None, :, None] * x[:, t])
    ref = torch.stack(ref, 1)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    want = torch.autograd.grad((ref * w).sum(), [x, dt, A, B, C, D])
    for chunk in (4, 64):  # several chunks, and one chunk longer than the sequence
        out = m2.mamba2_chunk_scan(x, dt, A, B, C, chunk_size=chunk, D=D, dt_softplus=True)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        got = torch.autograd.grad((out * w).sum(), [x, dt, A, B, C, D])
        for name, a, e in zip("x dt A B C D".split(), got, want):
            torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"d/d{name}: {m}")


# ------------------------------------------------------------------------ the architecture registry
def test_registry_is_the_only_list_of_architectures():
    from tinyhelen.exp1.config import Exp1Config

    assert models.arch_names() == ["bert", "llama", "xlnet", "mamba", "mamba1"] == list(models.ARCHITECTURES)
    assert models.default_arch_names() == ["bert", "llama", "xlnet", "mamba"] == Exp1Config().archs
    assert {models.get(a).objective for a in models.arch_names()} == {"mlm", "clm", "plm"}
    with pytest.raises(ValueError, match="unknown archs"):
        Exp1Config(archs=["llama", "gpt2"])
    with pytest.raises(ValueError, match="already registered"):
        models.register(models.get("llama"))


@pytest.fixture
def toy_arch(monkeypatch):
    """A fifth architecture, registered for this test only: a tiny GPT-2 from transformers."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    spec = models.ArchSpec(
        name="gpt2", description="GPT-2, causal LM (test only)", config_class=GPT2Config, lm_class=GPT2LMHeadModel,
        classifier_class=GPT2ForSequenceClassification, objective="clm", padding_side="right",
        layout=models.PairLayout(), presets={"tiny": dict(n_embd=64, n_layer=2, n_head=2, n_positions=256)})
    monkeypatch.setitem(models.ARCHITECTURES, "gpt2", spec)
    return spec


def test_toy_architecture_through_pretraining_glue_and_exp1(toy_arch, prepared, tokenizers, tmp_path):
    """Registering a spec is all it takes: pretraining, GLUE fine-tuning, their run files and the EXP1 result and
    tables work for it."""
    from tinyhelen import runfiles
    from tinyhelen.exp1 import glue, result, tables
    from tinyhelen.exp1.config import Exp1Config
    from tinyhelen.exp1.pretrain import pretrain, unique_tokens
    from tinyhelen.exp1.run_files import write_glue, write_pretrain

    assert Exp1Config(archs=["gpt2", "llama"]).archs == ["gpt2", "llama"]
    cfg = PretrainConfig(seq_len=32, batch_size=8, token_budget=8 * 32 * 4, eval_tokens=256, eval_every=2,
                         log_every=2, warmup_steps=1, max_train_docs=40, device="cpu")
    pre = pretrain("gpt2", "tiny", prepared / "corpus" / "leaner", tokenizers["leaner"], tmp_path / "gpt2-leaner",
                   cfg, seed=1, live_dir=tmp_path / "live")
    assert pre["final"]["tokens_seen"] == cfg.tokens_per_run and pre["final"]["val_loss"] is not None
    assert pre["final"]["flops_per_token"] > 6 * pre["final"]["params"]  # the transformer formula
    assert (tmp_path / "live" / "plots" / "metrics" / "train_loss.tsv").exists()
    gcfg = glue.GlueConfig(tasks=["wnli", "stsb"], lr=[1e-3], seeds=[0], epochs=1, batch_size=8,
                           max_train_examples=16, max_eval_examples=8, device="cpu")
    reports = {"gpt2-leaner": glue.evaluate_checkpoint(tmp_path / "gpt2-leaner" / "final", "gpt2", "tiny", None,
                                                       prepared / "glue", gcfg, seed=0),
               "gpt2-scratch": glue.evaluate_checkpoint(None, "gpt2", "tiny", tokenizers["leaner"], prepared / "glue",
                                                        gcfg, seed=0)}
    for rep in reports.values():
        assert set(rep["tasks"]) == {"wnli", "stsb"} and math.isfinite(rep["mean_test_score"])
    runs = tmp_path / "runs"  # as the stages write their run files, and exp1_report builds the result from them
    write_pretrain(runfiles.path(runs, "pretrain", arch="gpt2", side="leaner"), pre["runs"],
                   lambda step: unique_tokens(step, cfg.batch_size, pre["final"]["train_blocks"], cfg.seq_len),
                   preset="tiny", non_embedding_params=pre["final"]["non_embedding_params"])
    for name, rep in reports.items():
        write_glue(runfiles.path(runs, "glue", arch="gpt2", init=name.split("-")[1]), {None: rep["tasks"]})
    (tmp_path / "params.yaml").write_text(f"exp1:\n  archs: [gpt2]\n  sides: [leaner]\n  inits: [leaner, scratch]\n"
                                          f"pretrain:\n  seq_len: 32\n  batch_size: 8\n  token_budget: {8 * 32 * 4}\n")
    e1 = result.from_runs(runs, tmp_path / "params.yaml")
    assert {(c.init, c.task) for c in e1.cells} == {(i, t) for i in ("leaner", "scratch") for t in ("wnli", "stsb")}
    assert e1.pretrain[0].tokens_seen == cfg.tokens_per_run and e1.pretrain[0].best_step == pre["final"]["best_step"]
    assert re.search(r"\| gpt2 +\| leaner ", tables.document(e1))
