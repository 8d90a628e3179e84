"""GLUE metrics on hand examples, the fine-tuning protocol, the EXP1 table and the EXP1 stage graph."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyhelen.exp1 import glue, glue_metrics, models
from tinyhelen.io import InputError
from tinyhelen.pipeline import CODE_STAGE

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- metrics
def test_accuracy_and_f1_by_hand():
    y, p = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    assert glue_metrics.accuracy(y, p) == pytest.approx(4 / 6)
    # tp=3, fp=1, fn=1 -> F1 = 6 / 8
    assert glue_metrics.f1_binary(y, p) == pytest.approx(0.75)
    assert glue_metrics.f1_binary([0, 0], [0, 0]) == 0.0


def test_mcc_by_hand():
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert glue_metrics.matthews_corrcoef([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(1 / 6)
    assert glue_metrics.matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert glue_metrics.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert glue_metrics.matthews_corrcoef([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0  # constant prediction: undefined -> 0


def test_correlations_by_hand():
    assert glue_metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert glue_metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert glue_metrics.pearson([1, 2, 3], [5, 5, 5]) == 0.0
    # x=[1,2,3,4], y=[1,3,2,4]: Pearson = 0.8; monotone transform of y keeps Spearman = 0.8
    assert glue_metrics.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert glue_metrics.spearman([1, 2, 3, 4], [1, 30, 20, 400]) == pytest.approx(0.8)
    assert glue_metrics.spearman([1, 2, 3], [1, 1, 2]) == pytest.approx(0.8660254, abs=1e-6)  # ties: average ranks


def test_task_scores_follow_glue():
    assert glue_metrics.task_metrics("cola", [1, 0], [1, 0])["score"] == pytest.approx(1.0)
    m = glue_metrics.task_metrics("mrpc", [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1])
    assert m["score"] == pytest.approx((0.75 + 4 / 6) / 2)
    s = glue_metrics.task_metrics("stsb", [0.0, 1.0, 2.0, 3.0], [0.1, 1.2, 1.9, 3.5])
    assert s["pearson"] > 0.95 and s["spearman"] == pytest.approx(1.0)


def test_aggregate_picks_best_lr_on_validation_not_test():
    runs = [{"lr": lr, "seed": s, "validation": {"score": v}, "test": {"score": t, "accuracy": t}}
            for lr, s, v, t in [(1e-3, 0, 0.6, 0.1), (1e-3, 1, 0.7, 0.2), (3e-4, 0, 0.5, 0.9), (3e-4, 1, 0.5, 0.9)]]
    agg = glue.aggregate(runs)
    assert agg["best_lr"] == 1e-3 and agg["val_score"] == pytest.approx(0.65)
    assert agg["test_score"] == pytest.approx(0.15) and agg["test_std"] == pytest.approx(0.0707107, abs=1e-6)


def test_encode_pair_layouts(tokenizers):
    from tinyhelen.tokenizer import load

    tok = load(tokenizers["leaner"])
    cls, sep, eos = tok.cls_token_id, tok.sep_token_id, tok.eos_token_id
    bert = glue.encode_pair(tok, models.get("bert"), "a b", "c", 64)
    assert bert["input_ids"][0] == cls and bert["input_ids"][-1] == sep and bert["input_ids"].count(sep) == 2
    assert bert["token_type_ids"][-1] == 1 and bert["token_type_ids"][0] == 0
    xl = glue.encode_pair(tok, models.get("xlnet"), "a b", "c", 64)
    assert xl["input_ids"][-1] == cls and xl["token_type_ids"][-1] == 2
    ll = glue.encode_pair(tok, models.get("llama"), "a b", "c", 64)
    assert ll["input_ids"][-1] == eos and sep in ll["input_ids"]
    long = glue.encode_pair(tok, models.get("bert"), "word " * 200, "other " * 50, 40)
    assert len(long["input_ids"]) == 40 and long["input_ids"][-1] == sep  # truncated, specials kept


def test_glue_config_rejects_unknown_task():
    with pytest.raises(ValueError, match="unknown GLUE tasks"):
        glue.GlueConfig(tasks=["cola", "squad"])


def test_glue_epochs_and_lr_forms():
    """epochs: a number, a mapping covering every task, or `study` (the study's per-task counts); lr: a list,
    a number or `study` (the study's seven rates)."""
    from tinyhelen.study import STUDY_GLUE_EPOCHS, STUDY_GLUE_LRS

    assert glue.GlueConfig(tasks=["cola", "rte"], epochs=4).epochs_for("rte") == 4
    study = glue.GlueConfig(tasks=["cola", "mrpc", "rte", "stsb"], epochs="study", lr="study")
    assert [study.epochs_for(t) for t in ("cola", "mrpc", "rte", "stsb")] == [30, 30, 50, 30]
    assert study.epochs == STUDY_GLUE_EPOCHS and study.lr == list(STUDY_GLUE_LRS)
    again = glue.GlueConfig.model_validate(study.model_dump())  # the expanded form validates as it is
    assert again == study
    mapped = glue.GlueConfig(tasks=["cola", "stsb"], epochs={"cola": 6, "stsb": 3, "rte": 9}, lr=0.002)
    assert (mapped.epochs_for("cola"), mapped.epochs_for("stsb"), mapped.lr) == (6, 3, [0.002])
    with pytest.raises(ValueError, match=r"no count for tasks \['wnli'\]"):
        glue.GlueConfig(tasks=["cola", "wnli"], epochs="study")  # the study never ran WNLI
    with pytest.raises(ValueError, match=r"no count for tasks \['stsb'\]"):
        glue.GlueConfig(tasks=["cola", "stsb"], epochs={"cola": 3})
    with pytest.raises(ValueError, match="unknown tasks"):
        glue.GlueConfig(tasks=["cola"], epochs={"cola": 3, "squad": 2})
    with pytest.raises(ValueError, match=">= 1"):
        glue.GlueConfig(tasks=["cola"], epochs={"cola": 0})
    with pytest.raises(ValueError):
        glue.GlueConfig(epochs="paper")
    with pytest.raises(ValueError, match="positive and distinct"):
        glue.GlueConfig(lr=[1e-3, 1e-3])


# ------------------------------------------------------------------------------------ protocol
@pytest.mark.slow
def test_evaluate_checkpoint_is_deterministic(prepared, tokenizers):
    cfg = glue.GlueConfig(tasks=["wnli", "stsb"], lr=[1e-3, 3e-4], seeds=[0, 1], epochs=1, batch_size=16,
                          max_train_examples=32, max_eval_examples=16)
    a = glue.evaluate_checkpoint(None, "llama", "tiny", tokenizers["leaner"], prepared / "glue", cfg, seed=3)
    b = glue.evaluate_checkpoint(None, "llama", "tiny", tokenizers["leaner"], prepared / "glue", cfg, seed=3)
    assert set(a["tasks"]) == {"wnli", "stsb"}
    for task in a["tasks"]:
        ra, rb = a["tasks"][task], b["tasks"][task]
        assert len(ra["runs"]) == 4 and ra["n_train"] == 32 and ra["n_test"] == 16
        assert ra["test_score"] == rb["test_score"] and ra["best_lr"] == rb["best_lr"]
        assert [r["validation"] for r in ra["runs"]] == [r["validation"] for r in rb["runs"]]
    assert "pearson" in a["tasks"]["stsb"]["test_metrics"]


@pytest.mark.slow
def test_a_killed_glue_run_reruns_only_the_unfinished_finetunes(prepared, tokenizers, tmp_path, monkeypatch):
    """Each finished fine-tuning run is kept in the work directory under the key of its inputs: after a kill
    the rerun fine-tunes only the runs that did not finish and gives the uninterrupted result; a changed
    param changes the key, so nothing stored is reused."""
    from tinyhelen.exp1.pretrain import save_init

    save_init("llama", "tiny", tokenizers["leaner"], tmp_path / "init", seed=3)
    init, work = tmp_path / "init" / "final", tmp_path / "work"
    cfg = glue.GlueConfig(tasks=["wnli", "stsb"], lr=[1e-3], seeds=[0, 1], epochs=1, batch_size=8,
                          max_train_examples=16, max_eval_examples=8, warmup_steps=1)
    ref = glue.evaluate_checkpoint(init, "llama", "tiny", None, prepared / "glue", cfg, seed=3)
    real, calls = glue.finetune_task, []

    def finetune(*args, kill_at=None):
        if len(calls) == kill_at:
            raise KeyboardInterrupt("killed")
        calls.append((args[4], args[8]))  # task, seed
        return real(*args)

    monkeypatch.setattr(glue, "finetune_task", lambda *a: finetune(*a, kill_at=3))
    with pytest.raises(KeyboardInterrupt):
        glue.evaluate_checkpoint(init, "llama", "tiny", None, prepared / "glue", cfg, 3, work)
    assert len(calls) == 3 and len(list(work.glob("*.json"))) == 3
    calls.clear()
    monkeypatch.setattr(glue, "finetune_task", finetune)
    assert glue.evaluate_checkpoint(init, "llama", "tiny", None, prepared / "glue", cfg, 3, work) == ref
    assert [task for task, _ in calls] == ["stsb"], "only the fourth run (stsb, seed 1) fine-tunes again"
    calls.clear()
    other = cfg.model_copy(update={"warmup_steps": 2})
    glue.evaluate_checkpoint(init, "llama", "tiny", None, prepared / "glue", other, 3, work)
    assert len(calls) == 4, "another config: every run fine-tunes again"


def test_evaluate_checkpoint_missing_inputs(prepared, tokenizers, tmp_path):
    cfg = glue.GlueConfig(tasks=["wnli"], max_train_examples=8, max_eval_examples=8)
    with pytest.raises(InputError, match="config.json"):
        glue.evaluate_checkpoint(tmp_path, "llama", "tiny", None, prepared / "glue", cfg, 0)
    with pytest.raises(InputError, match="wnli_train.jsonl"):
        glue.evaluate_checkpoint(None, "llama", "tiny", tokenizers["leaner"], tmp_path, cfg, 0)


# ---------------------------------------------------------------------------------- stage graph
def _affected(repo, key: str) -> set[str]:
    """Stages DVC reruns when params key ``key`` changes: those declaring it (or its section, or the whole
    params file), plus everything downstream of them in DVC's own stage graph."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency

    index = repo.index
    direct = set()
    for stage in index.stages:
        for dep in stage.deps:
            if not isinstance(dep, ParamsDependency):
                continue
            keys = list(dep.params or [])
            if not keys or any(key == k or key.startswith(k + ".") for k in keys):
                direct.add(stage)
    graph = index.graph  # edges: stage -> the stages it depends on
    hit = set(direct)
    for stage in direct:
        if stage.name != CODE_STAGE:  # it validates all of params.yaml; its outputs (code checksums) stay the same
            hit |= nx.ancestors(graph, stage)
    return {s.name for s in hit}


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """dvc.yaml + params.yaml of this checkout in a scratch DVC repo (no lock on the real one)."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("dvcgraph")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    subprocess.run([str(Path(REPO / ".venv/bin/dvc")) if (REPO / ".venv/bin/dvc").exists() else "dvc",
                    "init", "--no-scm", "-q"], cwd=root, check=True)
    return Repo(str(root))


def test_changing_glue_lr_reruns_only_glue_stages(dvc_repo):
    names = {s.name for s in dvc_repo.index.stages}
    glue_stages = {n for n in names if n.startswith("glue@")}
    assert len(glue_stages) == 12  # 4 archs x (leaner, ori, scratch), one matrix stage running stages/glue.py
    assert not any(n.startswith("glue_") for n in names if not n.startswith("glue@"))
    hit = _affected(dvc_repo, "glue.lr")
    assert glue_stages <= hit
    # besides the GLUE stages only reports that read their results (EXP1 table, the report card) and
    # EXP3's Leaner-GLUE scoring of the proxy, which reuses the `glue` section by design (and the code
    # stage, which validates params.yaml)
    others = hit - glue_stages
    assert others <= {"exp1_report", "exp3_glue", "exp3_report", "report", CODE_STAGE}, sorted(others)
    assert not any(n.startswith("pretrain") for n in hit)


def test_changing_pretraining_reruns_pretraining_and_glue_not_scratch(dvc_repo):
    hit = _affected(dvc_repo, "pretrain.lr")
    assert {f"pretrain_{s}@{a}" for s in ("leaner", "ori") for a in ("bert", "llama", "xlnet", "mamba")} <= hit
    assert "glue@llama-leaner" in hit and "exp1_report" in hit
    assert not any(n.endswith("-scratch") or n.startswith("pretrain_scratch@") for n in hit)  # no pretraining


def test_glue_depends_only_on_the_selected_model(dvc_repo):
    """GLUE of a pretrained init reads the run's final/ (the selected learning rate's best weights), not the
    per-rate runs; the scratch init is the saved random initialisation."""
    stages = {s.name: s for s in dvc_repo.index.stages}
    deps = {str(d.def_path) for d in stages["glue@llama-leaner"].deps}
    assert "data/models/pretrain/llama-leaner/final" in deps and not any("/lr-" in d for d in deps)
    assert "data/models/pretrain/llama-scratch/final" in {str(d.def_path) for d in stages["glue@llama-scratch"].deps}


@pytest.mark.slow
def test_glue_stage_metrics_are_byte_identical(tmp_path, prepared, tokenizers):
    from test_train import run_stage_twice

    params = {"seed": 3, "models": {"preset": "tiny"},
              "glue": dict(tasks=["wnli", "stsb"], lr=[1e-3], seeds=[0, 1], epochs=1, batch_size=8,
                           max_train_examples=16, max_eval_examples=8, warmup_steps=1, threads=1)}
    from tinyhelen.exp1.pretrain import save_init

    save_init("mamba", "tiny", tokenizers["leaner"], tmp_path / "scratch", seed=3)
    files = run_stage_twice("glue.py", ["mamba", "scratch", "--glue", str(prepared / "glue"), "--checkpoint",
                                        str(tmp_path / "scratch" / "final"), "--metrics", "glue.json",
                                        "--run-file", "runs.tsv", "--work", "work"], params, tmp_path,
                            ["glue.json", "runs.tsv"])
    assert not {"seconds", "sequences_per_s"} & set(json.loads(files["glue.json"]))


def _learnable_task(root: Path, n_train: int = 96, n_eval: int = 40, flipped_eval: bool = False) -> float:
    """A sentiment task (``sst2`` files) whose label is the polarity of one keyword at a random position among
    4-9 filler words (60% positive); returns the majority-class accuracy of its test split.
    ``flipped_eval``: the validation labels are the opposite polarity and the test split is a copy of the
    validation split (the better a model learns the task, the worse it scores there)."""
    import random

    rng = random.Random(0)
    filler = "the a cat dog house tree went saw big small red blue day night it was and".split()
    good, bad = ["good", "great", "lovely"], ["bad", "awful", "poor"]
    rows: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        rows[split] = []
        for i in range(n):
            y = int(i % 5 < 3)
            words = [rng.choice(filler) for _ in range(rng.randint(4, 9))]
            words.insert(rng.randint(0, len(words)), rng.choice(good if y else bad))
            rows[split].append({"text_a": " ".join(words), "label": y})
    if flipped_eval:
        rows["validation"] = rows["test"] = [{**r, "label": 1 - r["label"]} for r in rows["validation"]]
    for split, rs in rows.items():
        (root / f"sst2_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    positive = sum(r["label"] for r in rows["test"])
    return max(positive, len(rows["test"]) - positive) / len(rows["test"])


def _finetune_keyword(tmp_path, tokenizers, arch, n_train: int, epochs: int, lr: float, **task):
    majority = _learnable_task(tmp_path, n_train=n_train, **task)
    cfg = glue.GlueConfig(tasks=["sst2"], lr=[lr], seeds=[0], epochs=epochs, batch_size=16, max_train_examples=None,
                          max_eval_examples=None, warmup_steps=2, threads=1)
    res = glue.evaluate_checkpoint(None, arch, "tiny", tokenizers["leaner"], tmp_path, cfg, seed=0)
    return res["tasks"]["sst2"], majority


LEARNING_RATE = {"mamba": 3e-3}  # the keyword task's rate per architecture (others: 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [*models.default_arch_names(), "mamba1"])
def test_finetuning_from_random_init_beats_the_majority_class_on_a_learnable_task(tmp_path, tokenizers, arch):
    """Every architecture learns a keyword task from random initialisation and generalises to held-out
    sentences (not only memorises its training set). 400 training sentences: with ~100, Mamba2 fits the
    training set through its short convolution (the last tokens before <eos>) before its recurrence carries
    the keyword, and stays at chance on held-out sentences (docs/exp1.md); at 1e-3 it needs ~600."""
    lr = LEARNING_RATE.get(arch, 1e-3)
    task, majority = _finetune_keyword(tmp_path, tokenizers, arch, n_train=400, epochs=4, lr=lr)
    run = task["runs"][0]
    assert len(run["validation_by_epoch"]) == 4  # validation after every epoch
    assert run["validation"]["score"] == max(run["validation_by_epoch"])  # the best epoch is selected
    assert task["test_score"] >= majority + 0.2, (arch, run["validation_by_epoch"], task["test_score"], majority)


@pytest.mark.slow
def test_test_split_is_scored_with_the_best_epochs_weights(tmp_path, tokenizers):
    """The test split is scored with the weights of the best validation epoch, not the last epoch's. With
    validation labels of the opposite polarity (and the test split a copy of them), learning the task makes
    every later epoch score worse there: the best epoch is an early one and the test score must be its."""
    task, _ = _finetune_keyword(tmp_path, tokenizers, "llama", n_train=96, epochs=6, lr=3e-3, flipped_eval=True)
    run = task["runs"][0]
    by_epoch = run["validation_by_epoch"]
    assert max(by_epoch) > by_epoch[-1] + 0.2, f"precondition: the model learns the task ({by_epoch})"
    assert run["best_epoch"] == by_epoch.index(max(by_epoch)) + 1
    assert run["test"]["score"] == pytest.approx(max(by_epoch), abs=1e-6)
