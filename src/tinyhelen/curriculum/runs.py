"""What the EXP3 stages do (``stages/curriculum_units.py``, ``difficulty.py``, ``reference_lm.py``,
``curriculum.py``): thin wrappers that read inputs, call the library, and write outputs atomically."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyhelen.curriculum.config import STATIC_SCORERS, Exp3Config, TrainConfig
from tinyhelen.curriculum.units import build_units, load_units
from tinyhelen.io import InputError, atomic_path, write_json, write_tsv

# scorers / trainer are imported inside the functions that need them, so each stage imports (and its
# dvc.yaml entry depends on) only the modules it uses: units <- exp3_units; scorers <- exp3_difficulty;
# trainer (+ pacing, scorers, models) <- exp3_reference_lm, exp3_train.

log = logging.getLogger(__name__)


def _tokenizer(path: Path | str):
    from tinyhelen.tokenizer import load

    if not Path(path).is_dir():
        raise InputError(path, "tokenizer directory not found (run the tokenizer stage)")
    return load(path)


def make_units(train: Path | str, val: Path | str, tokenizer_dir: Path | str, cfg: Exp3Config,
               out_dir: Path | str) -> dict[str, Any]:
    return build_units(train, val, _tokenizer(tokenizer_dir), cfg.units, out_dir)


def reference_train_config(cfg: Exp3Config) -> TrainConfig:
    r = cfg.reference_lm
    return TrainConfig(model=r.model, max_steps=r.steps, batch_size=r.batch_size, seq_len=r.seq_len, lr=r.lr,
                       warmup_steps=r.warmup_steps, eval_every=r.steps)


def reference_lm(units_dir: Path | str, tokenizer_dir: Path | str, cfg: Exp3Config, out_dir: Path | str
                 ) -> dict[str, Any]:
    """Train the reference LM on the held-out ``reference`` units; save it with ``save_pretrained``."""
    from tinyhelen.curriculum.trainer import train_run

    tok = _tokenizer(tokenizer_dir)
    units, val = load_units(units_dir)
    ref = units.subset("reference")
    if len(ref) == 0:
        raise InputError(units_dir, "no reference units: set exp3.units.reference_tokens > 0")
    res = train_run(ref, val, "full-random", reference_train_config(cfg), cfg.reference_lm.seed, tok,
                    label="reference_lm")
    with atomic_path(out_dir) as tmp:
        res["model"].save_pretrained(str(tmp))
    s = res["summary"]
    return {"val_loss": s["final_val_loss"], "initial_val_loss": res["curve"][0]["val_loss"],
            "train_units": len(ref), "train_tokens": s["total_tokens"], "steps": s["steps"],
            "seconds": s["seconds"], "tokens_per_s": s["tokens_per_s"]}


def difficulty(strategy: str, units_dir: Path | str, tokenizer_dir: Path | str, cfg: Exp3Config,
               out_path: Path | str, reference_dir: Path | str | None = None) -> dict[str, Any]:
    """Score every pool unit with the strategy's static scorer (null scores for online/baselines)."""
    from tinyhelen.curriculum.scorers import ScoringInputs, score, write_scores

    t0 = time.time()
    units, _ = load_units(units_dir)
    pool = units.subset("pool")
    scores = None
    if strategy in STATIC_SCORERS:
        tok = _tokenizer(tokenizer_dir)
        tokens = [pool.ids(i) for i in range(len(pool))]
        texts = [tok.decode(t.tolist()) for t in tokens] if strategy in ("sentlen", "unigram") else []
        model = None
        if strategy == "lmloss":
            if reference_dir is None or not Path(reference_dir).is_dir():
                raise InputError(reference_dir or "reference_lm", "reference LM not found (exp3_reference_lm)")
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(reference_dir))
        inp = ScoringInputs(unit_ids=pool.unit_ids, texts=texts, tokens=tokens, seed=cfg.scorer_seed,
                            reference_model=model, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
        scores = score(strategy, inp)
        n_zero = int((scores == 0).sum()) if strategy in ("sentlen", "unigram") else 0
        if n_zero:
            log.info("%s: %d units without words scored 0", strategy, n_zero)
    write_scores(out_path, pool.unit_ids, scores)
    info = {"strategy": strategy, "units": len(pool), "seconds": round(time.time() - t0, 2)}
    if scores is not None:
        info.update(mean=float(scores.mean()), std=float(scores.std()), min=float(scores.min()),
                    max=float(scores.max()))
    log.info("difficulty %s", info)
    return info


def train(strategy: str, seed: int, units_dir: Path | str, difficulty_path: Path | str,
          tokenizer_dir: Path | str, cfg: Exp3Config, out_dir: Path | str,
          state_path: Path | str | None = None) -> dict[str, Any]:
    """One proxy run; writes ``curve.tsv``, ``summary.json``, ``expansions.json`` (+ checkpoints)."""
    from tinyhelen.curriculum.scorers import read_scores
    from tinyhelen.curriculum.trainer import CURVE_COLUMNS, train_run

    tok = _tokenizer(tokenizer_dir)
    units, val = load_units(units_dir)
    pool = units.subset("pool")
    scores = read_scores(difficulty_path, pool.unit_ids)
    if strategy in STATIC_SCORERS and scores is None:
        raise InputError(difficulty_path, f"null scores, but {strategy!r} needs static scores")
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        # checkpoints go beside the resume state (they survive an interruption), then into the output
        ckpt = Path(f"{state_path}.checkpoints") if state_path is not None else tmp
        res = train_run(pool, val, strategy, cfg.train, seed, tok, scores, state_path=state_path,
                        checkpoint_dir=ckpt if cfg.train.checkpoint_steps else None)
        if ckpt != tmp and ckpt.is_dir():
            for d in sorted(ckpt.iterdir()):
                shutil.move(str(d), str(tmp / d.name))
            ckpt.rmdir()
        write_tsv(tmp / "curve.tsv", res["curve"], CURVE_COLUMNS)
        write_json(tmp / "summary.json", res["summary"])
        write_json(tmp / "expansions.json", res["expansions"])
    if state_path is not None and Path(state_path).exists():
        Path(state_path).unlink()  # finished: a rerun starts afresh
    return res["summary"]


def pool_scores_matrix(difficulty_dir: Path | str, unit_ids: list[str]) -> dict[str, np.ndarray]:
    """Static scores found in ``difficulty_dir`` (for scorer correlations in the report)."""
    from tinyhelen.curriculum.scorers import read_scores

    out = {}
    for name in STATIC_SCORERS:
        p = Path(difficulty_dir) / f"{name}.jsonl"
        if p.exists():
            s = read_scores(p, unit_ids)
            if s is not None:
                out[name] = s
    return out
