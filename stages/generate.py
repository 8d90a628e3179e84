"""Stage `generate`: for every recipe of `exp2.recipes`, the checkpoint selected by `judge_inner` answers
the Leaner-Eval questions (a seeded bin-stratified subsample of `generate.max_questions`) and
`generate.heldout_prompts` held-out prompts of its tuning data (`<instruct>/<side>/validation.jsonl`).

Every path comes from the command line (dvc.yaml). params: generate, instruct.template, exp2.recipes, seed
Reads <models>/<recipe>/step-NNNNNN; writes <out>/<recipe>.jsonl (one record per question: sets `all` and
`heldout`) and <metrics> (per recipe); wall-clock figures go to reports/timings/. A recipe whose checkpoint
selection had no signal (no step selected: every checkpoint's answers unscored) answers nothing: its file is empty
and its metrics say why.
"""
import json
from pathlib import Path

from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.exp2.generate import GenerateConfig, answer_selected
from tinyhelen.exp2.config import InstructConfig
from tinyhelen.io import InputError, write_json, write_jsonl
from tinyhelen.exp2.config import Exp2Config
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("generate", GenerateConfig, args.params)
    template = load_section("instruct", InstructConfig, args.params).template
    recipes = load_section("exp2", Exp2Config, args.params).recipes
    selection = json.loads(Path(args.selection).read_text())
    selected = selection["selected"]
    missing = [r for r in recipes if r not in selected]
    if missing:
        raise InputError(args.selection, f"no checkpoint selected for {missing}; run judge_inner")
    set_threads(cfg.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = load_seed(args.params)
    no_signal = selection.get("no_signal", {})
    metrics = {}
    for r in recipes:
        if selected[r] is None:
            write_jsonl(out / f"{r}.jsonl", [])
            metrics[r] = {"selected_step": None, "answers": 0, "no_signal": no_signal.get(r, "no step selected")}
            continue
        metrics[r] = answer_selected(Path(args.models) / r, r, selected[r], cfg, out / f"{r}.jsonl", seed, template,
                                     args.instruct)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--models": "directory of the tuned models (<recipe>/step-NNNNNN)",
                                    "--selection": "the checkpoint selection (judge_inner)",
                                    "--instruct": "instruction data (<side>/validation.jsonl: held-out prompts)",
                                    "--out": "directory of the <recipe>.jsonl generations",
                                    "--metrics": "metrics JSON of the stage"})
    stage_main(main, p)
