"""The selection rules the verdicts rest on, each pinned by a test that fails when the rule changes: the GLUE
epoch whose weights are scored on test (the best validation epoch, not the last), and WNLI, which is fine-tuned
and shown but never in a mean (the GLUE stage's, the typed result's metrics and claims, the card and
reports/exp1.md). EXP2's checkpoint selection without a signal: tests/test_judge.py."""
from __future__ import annotations

import pytest
import torch

from tinyhelen.exp1 import glue


def test_best_epoch_selection_rule():
    """The epoch scored on test: the best validation score, ties the earlier (never the last by default)."""
    assert glue.select_epoch([0.2, 0.8, 0.5]) == 1
    assert glue.select_epoch([0.5, 0.5, 0.4]) == 0
    assert glue.select_epoch([0.1, 0.2, 0.3]) == 2
    with pytest.raises(ValueError):
        glue.select_epoch([])


def test_the_test_split_is_scored_with_the_best_validation_epochs_weights(tokenizers, monkeypatch):
    """A real fine-tuning run (3 epochs) whose predictions are scripted per epoch: the validation scores peak at
    epoch 2, the test scores rise to epoch 3. Each prediction call recognises the weights it is given (the epoch
    they come from), so the test score reported is the one of the weights actually scored: epoch 2's 0.75, not
    the last epoch's 1.0. The run file keeps every epoch and its rebuild picks the same."""
    from tinyhelen.exp1 import models
    from tinyhelen.exp1.result import task_results
    from tinyhelen.exp1.run_files import glue_rows
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    spec = models.get("llama")
    enc = [glue.encode_pair(tok, spec, f"sentence number {i}", f"another one {i}", 32) for i in range(4)]
    data = {"train": (enc, [1, 0, 1, 0]), "validation": (enc, [1, 1, 1, 1]), "test": (list(enc), [1, 1, 1, 1])}
    val_correct, test_correct = [2, 4, 3], [1, 3, 4]  # per epoch: validation peaks at 2, test rises to 3
    epoch_of: dict[float, int] = {}

    def fingerprint(model) -> float:
        return float(torch.cat([p.detach().flatten() for p in model.parameters()]).double().sum())

    def scripted(model, x, *args, **kwargs):
        fp = fingerprint(model)
        if x is data["validation"][0]:
            epoch_of.setdefault(fp, len(epoch_of))
            k = val_correct[epoch_of[fp]]
        else:
            k = test_correct[epoch_of[fp]]  # the epoch these weights come from
        return [1] * k + [0] * (4 - k)

    monkeypatch.setattr(glue, "_predict", scripted)
    cfg = glue.GlueConfig(tasks=["rte"], lr=[3e-3], seeds=[0], epochs=3, batch_size=4, warmup_steps=0, threads=1,
                          device="cpu")
    out = glue.finetune_task(None, spec, "tiny", tok, "rte", data, cfg, 3e-3, 0)
    assert out["validation_by_epoch"] == [0.5, 1.0, 0.75] and out["test_by_epoch"] == [0.25, 0.75, 1.0]
    assert out["best_epoch"] == 2 and out["validation"]["score"] == 1.0
    assert out["test"]["score"] == 0.75  # the weights of epoch 2, not the last epoch's 1.0
    rows = glue_rows({"rte": {"runs": [{**out, "seed": 0}]}})
    assert len(rows) == 3 and task_results(rows, "run file")["rte"]["test_score"] == 0.75


def test_wnli_is_never_in_the_mean():
    """WNLI is fine-tuned and shown, never averaged (the study did not run it), in every mean: the GLUE stage's,
    the typed result's (its metrics and the claims) and the tables of the card and reports/exp1.md."""
    from tinyhelen.exp1 import tables
    from tinyhelen.exp1.result import Exp1Result, GlueCell, PretrainRun
    from tinyhelen.report.claims import ReportConfig, claims_exp1

    assert glue.mean_score({"rte": 0.5, "mrpc": 0.7, "wnli": 1.0}) == (pytest.approx(0.6), ["rte", "mrpc"])
    assert glue.mean_score({"wnli": 0.4}) == (0.4, ["wnli"])  # only tasks outside the study's: those
    cells = [GlueCell(arch="llama", init=i, task=t, test=v, std=0.0, best_lr=1e-3, seeds={0: v})
             for i in ("leaner", "ori") for t, v in (("rte", 0.5), ("mrpc", 0.7), ("wnli", 1.0 if i == "ori" else 0.0))]
    pre = [PretrainRun(arch="llama", side=s, preset="tiny", tokens_seen=8, steps=1, non_embedding_params=1,
                       train_loss=1.0, val_loss=1.0) for s in ("leaner", "ori")]
    e1 = Exp1Result(preset="tiny", archs=["llama"], inits=["leaner", "ori"], tasks=["rte", "mrpc", "wnli"],
                    tokens_per_run=8, cells=cells, pretrain=pre)
    assert e1.study_tasks() == ["rte", "mrpc"]
    assert e1.metrics()["glue_mean"] == {"llama-leaner": 0.6, "llama-ori": 0.6} and e1.metrics()["glue_tasks"] == 2
    for md in ("\n".join(tables.card(e1)), tables.document(e1)):
        rows = [line for line in md.splitlines() if line.startswith("| llama")][:2]
        assert len(rows) == 2 and all("**0.600**" in line for line in rows), rows
        assert "wnli: shown, not in the mean" in md
    assert claims_exp1(e1, ReportConfig())[0].numbers["pairs"] == 2  # leaner - ori over rte and mrpc, not wnli
