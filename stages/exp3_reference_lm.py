"""Stage `exp3_reference_lm`: train the reference LM behind the `lmloss` scorer on held-out training
documents (the `reference` units, never in the proxy's pool).

Every path comes from the command line (dvc.yaml). params: exp3.reference_lm, exp3 compute keys.
Writes <out> (save_pretrained), its metrics (JSON), its run file (the curve per evaluation) and its DVCLive log
(<live>/metrics.json, <live>/plots/metrics/*.tsv); wall-clock figures go to reports/timings/.
"""
from tinyhelen import runfiles
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section
from tinyhelen.exp3 import run_files, runs
from tinyhelen.exp3.config import Exp3Config
from tinyhelen.io import write_json
from tinyhelen.train import dist
from tinyhelen.train.compute import set_threads


def main(args):
    cfg = load_section("exp3", Exp3Config, args.params)
    set_threads(args.threads or cfg.threads)
    res = runs.reference_lm(args.units, args.tokenizer, cfg, args.out, live_dir=args.live)
    if dist.is_main():
        rows = runfiles.curve_rows(res.pop("curve"), run_files.RENAME)
        runfiles.write(args.run_file, "exp3_reference_lm", {"train_units": res["train_units"],
                                                            "train_tokens": res["train_tokens"]},
                       rows, runfiles.curve_columns(rows))
        write_json(args.metrics, res)


if __name__ == "__main__":
    p = add_paths(parser(__doc__), {"--units": "curriculum units directory (exp3_units)", "--tokenizer":
                                    "tokenizer directory", "--out": "model directory", "--metrics": "metrics JSON",
                                    "--run-file": "run file of the curve (TSV)",
                                    "--live": "DVCLive directory of the run's step-wise metrics"})
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = exp3.threads)")
    stage_main(main, p)
