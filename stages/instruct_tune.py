"""Stage `instruct_tune` (matrix pretrain x tune side): instruction-tune one pretrained LLaMA.

params: instruct.tune, seed
deps: data/models/pretrain/llama-<pretrain>/final, data/instruct/<tune>
outs: data/models/instruct/<pretrain>-<tune>/{step-NNNNNN,final}; metrics reports/instruct/<pretrain>-<tune>.json;
      plot reports/plots/instruct/<pretrain>-<tune>.tsv (train/validation loss per checkpoint)
"""
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.instruct import SIDES, InstructConfig, tune
from tinyhelen.io import write_json, write_tsv


def main(args):
    cfg = load_section("instruct", InstructConfig, args.params)
    recipe = f"{args.pretrain}-{args.tune}"
    metrics = tune(f"data/models/pretrain/llama-{args.pretrain}/final",
                   f"data/instruct/{args.tune}/train.jsonl", f"data/instruct/{args.tune}/validation.jsonl",
                   f"data/models/instruct/{recipe}", cfg.tune, load_seed(args.params), recipe)
    write_json(f"reports/instruct/{recipe}.json", {k: v for k, v in metrics.items() if k != "curve"})
    write_tsv(f"reports/plots/instruct/{recipe}.tsv", metrics["curve"], ["step", "train_loss", "val_loss", "lr"])


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--pretrain", required=True, choices=SIDES, help="corpus side the base model was pretrained on")
    p.add_argument("--tune", required=True, choices=SIDES, help="side of the instruction data")
    stage_main(main, p)
