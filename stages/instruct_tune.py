"""Stage `instruct_tune` (matrix pretrain side x tune side): instruction-tune one pretrained LLaMA.

Every path comes from the command line (dvc.yaml). params: instruct.tune, seed.
Writes <out>/{step-NNNNNN,final} (checkpoints), the run's metrics (JSON), its run file (the curve per
evaluation: step, tokens, lr, train and validation loss) and its DVCLive log
(<live>/metrics.json, <live>/plots/metrics/*.tsv); wall-clock figures go to reports/timings/. Several processes:
`torchrun --nproc_per_node N stages/instruct_tune.py ...` (docs/scaling.md); the main process writes.
"""
from pathlib import Path

from tinyhelen import runfiles
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section, load_seed
from tinyhelen.exp2.config import InstructConfig
from tinyhelen.exp2.tune import tune
from tinyhelen.io import write_json
from tinyhelen.train import dist
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("instruct", InstructConfig, args.params)
    set_threads(cfg.tune.threads)
    data = Path(args.data)
    metrics = tune(args.base, data / "train.jsonl", data / "validation.jsonl", args.out, cfg.tune,
                   load_seed(args.params), Path(args.out).name, live_dir=args.live)
    if dist.is_main():
        write_json(args.metrics, {k: v for k, v in metrics.items() if k != "curve"})
        rows = runfiles.curve_rows(metrics["curve"])
        runfiles.write(args.run_file, "instruct", {"recipe": Path(args.out).name,
                                                  "train_examples": metrics["train_examples"],
                                                  "packing": metrics["packing"],
                                                  "loss_on_prompt": metrics["loss_on_prompt"]},
                       rows, runfiles.curve_columns(rows))


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {
        "--base": "pretrained model directory (pretrain run's final/)", "--data": "instruction data directory "
        "(train.jsonl, validation.jsonl)", "--out": "output directory of the checkpoints; its name is the recipe",
        "--metrics": "metrics JSON of the run", "--run-file": "run file of the curve (TSV)",
        "--live": "DVCLive directory of the run's step-wise metrics"})
    stage_main(main, p)
