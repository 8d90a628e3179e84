"""The "Protocol vs study" rows that follow the study are computed from the objects in effect
(``tinyhelen.report.in_effect``), so a changed behaviour changes the row: each test changes the behaviour (a
params key, a registry entry, the function the training uses) and sees its row differ."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tinyhelen.report import in_effect, protocol
from tinyhelen.report.provenance import resolved_params

REPO = Path(__file__).resolve().parents[1]


def _row(knob: str, params: dict | None = None, experiment: str | None = None):
    p = params if params is not None else resolved_params(REPO / "params.yaml")
    return next(r for r in protocol.compare(p) if r.knob == knob and experiment in (None, r.experiment))


def _params(tmp_path, text: str) -> dict:
    (tmp_path / "params.yaml").write_text(text)
    return resolved_params(tmp_path / "params.yaml")


def test_the_default_follows_the_study_on_these_rows():
    for exp, knob in (("EXP1", "LR schedule"), ("EXP2", "LR schedule"), ("EXP1", "LLaMA embeddings (paper preset)"),
                      ("EXP1", "Mamba block (paper preset)"), ("EXP1 GLUE", "checkpoint scored on test"),
                      ("EXP2", "loss on prompt tokens"), ("EXP2", "packed blocks"),
                      ("tokenizer", "tokenizer shared by both corpora")):
        row = _row(knob, experiment=exp)
        assert not row.differs, row


@pytest.mark.parametrize("section, exp", [("pretrain", "EXP1"), ("instruct:\n  tune", "EXP2")])
def test_the_schedule_row_reads_the_rates_the_loop_computes(tmp_path, monkeypatch, section, exp):
    indent = "    " if "tune" in section else "  "
    row = _row("LR schedule", _params(tmp_path, f"{section}:\n{indent}lr_schedule: cosine\n"), exp)
    assert row.differs and row.ours == "cosine to 0 x lr"
    row = _row("LR schedule", _params(tmp_path, f"{section}:\n{indent}min_lr_ratio: 0.1\n"), exp)
    assert row.differs and row.ours == "linear to 0.1 x lr"
    from tinyhelen.train import optim

    plain = optim.lr_at  # the loop's schedule ignoring min_lr_ratio and decaying to 10%: the params say linear to 0
    monkeypatch.setattr(optim, "lr_at", lambda s, lr, total, cfg: plain(s, lr, total, cfg) * 0.9 + 0.1 * lr)
    row = _row("LR schedule", _params(tmp_path, ""), exp)
    assert row.differs and row.ours == "linear to 0.1 x lr"


def test_schedule_shapes():
    from tinyhelen.exp1.pretrain import PretrainConfig

    assert in_effect.schedule(PretrainConfig(lr_schedule="constant", warmup_steps=0)) == "constant"
    assert in_effect.schedule(PretrainConfig(lr_schedule="cosine", min_lr_ratio=0.5)) == "cosine to 0.5 x lr"


def _replace_spec(monkeypatch, name: str, **changes):
    from tinyhelen.exp1.models import registry

    spec = registry.ARCHITECTURES[name]
    monkeypatch.setitem(registry.ARCHITECTURES, name, dataclasses.replace(spec, **changes))


def test_the_llama_row_reads_the_registry_config_of_the_paper_preset(monkeypatch):
    from tinyhelen.exp1.models import registry

    kw = dict(registry.ARCHITECTURES["llama"].config_kwargs)
    _replace_spec(monkeypatch, "llama", config_kwargs={**kw, "tie_word_embeddings": True})
    row = _row("LLaMA embeddings (paper preset)")
    assert row.differs and row.ours == "tied, RoPE theta 500000"
    _replace_spec(monkeypatch, "llama", config_kwargs={**kw, "rope_theta": 10_000.0})
    assert _row("LLaMA embeddings (paper preset)").ours == "untied, RoPE theta 10000"


def test_the_mamba_row_reads_the_block_the_registry_builds(monkeypatch):
    from tinyhelen.exp1.models import registry

    spec = registry.ARCHITECTURES["mamba"]
    paper = dict(spec.presets["paper"])
    _replace_spec(monkeypatch, "mamba", presets={**spec.presets, "paper": {**paper, "mlp_intermediate_size": 1024}})
    row = _row("Mamba block (paper preset)")
    assert row.differs and "MLP 1,024" in row.ours
    _replace_spec(monkeypatch, "mamba", presets={**spec.presets, "paper": {**paper, "mlp_intermediate_size": 0}})
    row = _row("Mamba block (paper preset)")  # the block without its MLP: transformers' plain Mamba2 block
    assert row.differs and "+ none" in row.ours
    _replace_spec(monkeypatch, "mamba", lm_class="transformers:Mamba2ForCausalLM")
    assert _row("Mamba block (paper preset)").differs


def test_the_glue_row_reads_the_weights_the_fine_tuning_keeps(monkeypatch):
    from tinyhelen.exp1 import glue

    assert in_effect.glue_selection().startswith("best evaluation by the task metric")
    monkeypatch.setattr(glue, "select_epoch", lambda scores: len(scores) - 1)  # always the last epoch
    row = _row("checkpoint scored on test")
    assert row.differs and row.ours == "the last epoch"


def test_the_prompt_loss_and_packing_rows_read_what_tuning_builds(tmp_path, monkeypatch):
    assert _row("loss on prompt tokens", _params(tmp_path, "instruct:\n  tune:\n    loss_on_prompt: false\n")).differs
    assert _row("packed blocks", _params(tmp_path, "instruct:\n  tune:\n    packing: false\n")).differs
    from tinyhelen.exp2 import tune

    plain = tune.encode_example
    monkeypatch.setattr(tune, "encode_example", lambda tok, p, r, n, _: plain(tok, p, r, n, False))
    assert _row("loss on prompt tokens").differs  # the param says true, the labels mask the prompt
    monkeypatch.setattr(tune, "pack", lambda examples, block, seed: list(examples))  # no joining
    assert _row("packed blocks").differs
