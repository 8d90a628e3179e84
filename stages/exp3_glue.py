"""Stage `exp3_glue`: Leaner-GLUE scores of the selected strategy's proxy (`curriculum`) at the fixed
checkpoints `exp3.train.checkpoint_steps`, for every seed, fine-tuned and scored with EXP1's
`tinyhelen.glue.evaluate_checkpoint`. With `exp3.glue.enabled: false` it only records that it was skipped.

Every path comes from the command line (dvc.yaml).
params: curriculum, exp3.glue, exp3.seeds, exp3.train.checkpoint_steps, exp3.train.model, glue
Writes the metrics JSON. The fine-tuning protocol is EXP1's `glue:` params section
(`tinyhelen.glue.GlueConfig`, incl. its threads), so proxy and EXP1 scores are comparable;
`exp3.glue.seed` is the base seed passed to `evaluate_checkpoint`.
"""
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import ParamsError, load_section
from tinyhelen.curriculum.config import CurriculumParam, Exp3Config
from tinyhelen.io import InputError, write_json


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    selected = load_section("curriculum", CurriculumParam, args.params).value
    out = {"enabled": cfg.glue.enabled, "strategy": selected, "checkpoint_steps": cfg.train.checkpoint_steps}
    if not cfg.glue.enabled:
        write_json(args.out, {**out, "skipped": "exp3.glue.enabled is false"})
        return
    if not cfg.train.checkpoint_steps:
        raise ParamsError(f"{args.params}: exp3.train.checkpoint_steps: empty, but exp3.glue.enabled is true")
    from tinyhelen.glue import GlueConfig, evaluate_checkpoint  # EXP1
    from tinyhelen.train.compute import set_threads

    glue_cfg = load_section("glue", GlueConfig, args.params)
    set_threads(glue_cfg.threads)
    scores: dict = {}
    for seed in cfg.seeds:
        run = Path(args.runs) / f"{selected}-s{seed}"
        for step in cfg.train.checkpoint_steps:
            ckpt = run / f"checkpoint-{step}"
            if not ckpt.is_dir():
                raise InputError(ckpt, "checkpoint not found (exp3_train with exp3.train.checkpoint_steps)")
            scores.setdefault(f"step{step}", {})[f"seed{seed}"] = evaluate_checkpoint(
                ckpt, cfg.train.model.arch, cfg.train.model.preset, args.tokenizer, args.glue, glue_cfg,
                cfg.glue.seed)
    out["mean_test_score"] = {step: {sd: r.get("mean_test_score") for sd, r in per.items()}
                              for step, per in scores.items()}
    write_json(args.out, {**out, "scores": scores})


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--runs": "directory of the exp3_train runs (<strategy>-s<seed>/)",
                                    "--glue": "Leaner-GLUE directory", "--tokenizer": "tokenizer directory",
                                    "--out": "metrics JSON"})
    stage_main(main, p)
