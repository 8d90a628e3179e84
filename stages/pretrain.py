"""Stage `pretrain_<side>@<arch>`: pretrain one architecture on one corpus side (equal token budget).

Every path comes from the command line (dvc.yaml). params: models.preset, pretrain.*, seed.
Writes <out>/final (save_pretrained model + tokenizer files), the run's metrics (JSON) and its DVCLive log
(<live>/metrics.json, <live>/plots/metrics/*.tsv); wall-clock figures go to reports/timings/.
Resumable checkpoints: <out>/checkpoints/ (not a DVC output; an interrupted run continues from the newest
checkpoint of the same configuration). Multi-GPU: `accelerate launch stages/pretrain.py ...` or
`torchrun --nproc_per_node N stages/pretrain.py ...`.
"""
from tinyhelen import models
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.io import write_json
from tinyhelen.pretrain import PretrainConfig, pretrain
from tinyhelen.train.compute import set_threads


def main(args):
    preset = load_section("models", models.ModelsConfig, args.params).preset
    cfg = load_section("pretrain", PretrainConfig, args.params)
    seed = load_seed(args.params)
    set_threads(cfg.threads)
    res = pretrain(args.arch, preset, args.corpus, args.tokenizer, args.out, cfg, seed, resume=not args.no_resume,
                   live_dir=args.live)
    from accelerate import PartialState

    if PartialState().is_main_process:
        write_json(args.metrics, {**res["final"], "side": args.side})


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", help="a registered architecture (tinyhelen.models.arch_names())")
    p.add_argument("side", choices=["leaner", "ori"], help="corpus side (recorded in the metrics)")
    add_paths(p, {"--corpus": "directory with train.jsonl and validation.jsonl", "--tokenizer": "tokenizer "
                  "directory of the side", "--out": "run directory: final/ (the model) and checkpoints/",
                  "--metrics": "metrics JSON of the run", "--live": "DVCLive directory of the run's metrics"})
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    stage_main(main, p)
