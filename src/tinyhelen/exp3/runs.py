"""What the EXP3 training and scoring stages do (``stages/exp3_reference_lm.py``, ``exp3_difficulty.py``,
``exp3_train.py``): read inputs, call the library, write outputs atomically."""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from tinyhelen.exp3.config import Exp3Config, TrainConfig
from tinyhelen.exp3.units import load_tokenizer, load_units
from tinyhelen.io import InputError, atomic_path, write_json, write_tsv
from tinyhelen.train import dist
from tinyhelen.train.config import OptimConfig

# scorers / trainer are imported inside the functions that need them, so that importing this module for
# the scores of the report does not load torch.

log = logging.getLogger(__name__)


def reference_train_config(cfg: Exp3Config) -> TrainConfig:
    """The reference LM's run as a proxy run without curriculum (evaluated at the start and the end)."""
    r = cfg.reference_lm
    return TrainConfig(model=r.model, max_steps=r.steps, batch_size=r.batch_size, seq_len=r.seq_len, lr=r.lr,
                       eval_every=r.steps, **{k: getattr(r, k) for k in OptimConfig.model_fields})


def reference_lm(units_dir: Path | str, tokenizer_dir: Path | str, cfg: Exp3Config, out_dir: Path | str,
                 live_dir: Path | str | None = None) -> dict[str, Any]:
    """Train the reference LM on the held-out ``reference`` units; save it with ``save_pretrained``. Returns its
    figures and its curve (``curve``: the rows of its run file)."""
    from tinyhelen.exp3.curriculum import train_run

    tok = load_tokenizer(tokenizer_dir)
    units, val = load_units(units_dir)
    ref = units.subset("reference")
    if len(ref) == 0:
        raise InputError(units_dir, "no reference units: set exp3.units.reference_tokens > 0")
    res = train_run(ref, val, "full-random", reference_train_config(cfg), cfg.reference_lm.seed, tok,
                    compute=cfg, live_dir=live_dir, label="reference_lm")
    if dist.is_main():
        with atomic_path(out_dir) as tmp:
            res["model"].save_pretrained(str(tmp))
    s = res["summary"]
    return {"val_loss": s["final_val_loss"], "initial_val_loss": res["curve"][0]["val_loss"],
            "train_units": len(ref), "train_tokens": s["total_tokens"], "steps": s["steps"], "curve": res["curve"]}


def difficulty(strategy: str, units_dir: Path | str, tokenizer_dir: Path | str, cfg: Exp3Config,
               out_path: Path | str, reference_dir: Path | str | None = None) -> dict[str, Any]:
    """Score every pool unit with the strategy's static scorer, given exactly the inputs it declares
    (null scores for online scorers and baselines)."""
    from tinyhelen.exp3.scorers import BASELINES, get, inputs_for, score, write_scores

    t0 = time.time()
    units, _ = load_units(units_dir)
    pool = units.subset("pool")
    scorer = None if strategy in BASELINES else get(strategy)
    scores = None
    if scorer is not None and not scorer.online:
        tok = load_tokenizer(tokenizer_dir)
        reference, bf16 = None, False
        if "reference_model" in scorer.needs:
            if reference_dir is None or not Path(reference_dir).is_dir():
                raise InputError(reference_dir or "reference_lm", "reference LM not found (exp3_reference_lm)")
            from transformers import AutoModelForCausalLM

            from tinyhelen.train.compute import device_of, uses_bf16

            device = device_of(cfg)  # the training device and precision (bf16 autocast on a bf16 GPU)
            reference = AutoModelForCausalLM.from_pretrained(str(reference_dir)).to(device)
            bf16 = uses_bf16(cfg, device)
        inp = inputs_for(scorer, pool.unit_ids, [pool.ids(i) for i in range(len(pool))], tok,
                         seed=cfg.scorer_seed, reference_model=reference,
                         bf16=bf16)
        scores = score(strategy, inp)
        n_zero = int((scores == 0).sum())
        if n_zero:
            log.info("%s: %d units scored 0 (e.g. units without words)", strategy, n_zero)
    write_scores(out_path, pool.unit_ids, scores)
    info = {"strategy": strategy, "units": len(pool), "seconds": round(time.time() - t0, 2)}
    if scores is not None:
        info.update(mean=float(scores.mean()), std=float(scores.std()), min=float(scores.min()),
                    max=float(scores.max()))
    log.info("difficulty %s", info)
    return info


def train(strategy: str, seed: int, units_dir: Path | str, difficulty_path: Path | str,
          tokenizer_dir: Path | str, cfg: Exp3Config, out_dir: Path | str,
          resume_dir: Path | str | None = None, live_dir: Path | str | None = None) -> dict[str, Any]:
    """One proxy run; writes ``curve.tsv``, ``summary.json``, ``expansions.json`` (+ checkpoints) to
    ``out_dir``. With ``resume_dir`` an interrupted run continues where it stopped (the directory is
    removed when the run is complete). Under several processes every one trains, the main one writes."""
    from tinyhelen.exp3.scorers import BASELINES, get, read_scores
    from tinyhelen.exp3.curriculum import curve_columns, train_run

    tok = load_tokenizer(tokenizer_dir)
    units, val = load_units(units_dir)
    pool = units.subset("pool")
    scores = read_scores(difficulty_path, pool.unit_ids)
    if strategy not in BASELINES and not get(strategy).online and scores is None:
        raise InputError(difficulty_path, f"null scores, but {strategy!r} needs static scores")
    out_dir = Path(out_dir)
    main = dist.is_main()  # every process trains; the main one writes
    with atomic_path(out_dir) if main else nullcontext(None) as tmp:
        # model checkpoints go beside the resume state (they survive an interruption), then into the output
        ckpt = Path(resume_dir) / "models" if resume_dir is not None else tmp
        if tmp is not None:
            tmp.mkdir(parents=True)
        res = train_run(pool, val, strategy, cfg.train, seed, tok, scores, compute=cfg, resume_dir=resume_dir,
                        checkpoint_dir=ckpt if cfg.train.saved_steps else None, live_dir=live_dir)
        if tmp is not None:
            if ckpt != tmp and ckpt.is_dir():
                for d in sorted(ckpt.iterdir()):
                    shutil.move(str(d), str(tmp / d.name))
            write_tsv(tmp / "curve.tsv", res["curve"], curve_columns(val))
            write_json(tmp / "summary.json", res["summary"])
            write_json(tmp / "expansions.json", res["expansions"])
    dist.barrier()  # every process is done with the resume state
    if resume_dir is not None and main:
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: a rerun starts afresh
    return res["summary"]


def pool_scores_matrix(difficulty_dir: Path | str, unit_ids: list[str]) -> dict[str, np.ndarray]:
    """Static scores found in ``difficulty_dir`` (for scorer correlations in the report)."""
    from tinyhelen.exp3.scorers import read_scores, static_names

    out = {}
    for name in static_names():
        p = Path(difficulty_dir) / f"{name}.jsonl"
        if p.exists():
            s = read_scores(p, unit_ids)
            if s is not None:
                out[name] = s
    return out


UNTRAINED = "untrained"  # the random-init proxy (step 0) in the GLUE comparison


def glue(strategy: str, seed: int, run_dir: Path | str, tokenizer_dir: Path | str, glue_dir: Path | str,
         cfg: Exp3Config, glue_cfg: Any, work_dir: Path | str) -> dict[str, Any]:
    """Leaner-GLUE of one run's proxy checkpoints (``exp3.train.saved_steps`` in ``run_dir``) or, for
    ``strategy == UNTRAINED``, of the random-init proxy of ``seed`` (the model each run of that seed starts
    from; saved under ``work_dir`` by the main process), fine-tuned with EXP1's
    ``tinyhelen.exp1.glue.evaluate_checkpoint`` (finished runs kept in ``work_dir/finished``) under
    ``glue_cfg`` (the ``glue:`` section) narrowed by ``exp3.glue.tasks`` / ``seeds``.
    Returns ``{"strategy", "seed", "tasks", "scores": [{step, mean_test_score, tasks: {task: test}}], "details"}``."""
    from tinyhelen.exp1.glue import GlueConfig, evaluate_checkpoint

    g = cfg.glue
    narrowed = {k: v for k, v in (("tasks", g.tasks), ("seeds", g.seeds)) if v is not None}
    try:
        glue_cfg = GlueConfig.model_validate({**glue_cfg.model_dump(), **narrowed})
    except ValueError as exc:
        raise ValueError(f"exp3.glue: {exc}") from exc
    m = cfg.train.model
    if strategy == UNTRAINED:
        from tinyhelen.exp3.curriculum import build_model

        d = Path(work_dir) / f"untrained-s{seed}"
        model = build_model(m, load_tokenizer(tokenizer_dir), seed)
        if dist.is_main():
            model.save_pretrained(str(d))
        dist.barrier()  # saved before any process reads it
        points = [(0, d)]
    else:
        points = [(step, Path(run_dir) / f"checkpoint-{step}") for step in cfg.train.saved_steps]
        for _, d in points:
            if not d.is_dir():
                raise InputError(d, "checkpoint not found (exp3_train saves exp3.train.saved_steps)")
    scores, details = [], {}
    for step, d in points:
        rep = evaluate_checkpoint(d, m.arch, m.preset, tokenizer_dir, glue_dir, glue_cfg, g.seed,
                                  Path(work_dir) / "finished")
        scores.append({"step": step, "mean_test_score": round(rep["mean_test_score"], 5),
                       "tasks": {t: round(r["test_score"], 5) for t, r in rep["tasks"].items()}})
        details[f"step{step}"] = rep["tasks"]
    return {"strategy": strategy, "seed": seed, "tasks": glue_cfg.tasks, "scores": scores, "details": details}
