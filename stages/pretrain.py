"""Stage `pretrain_<side>@<arch>`: pretrain one architecture on one corpus side (equal token budget), sweeping
`pretrain.lr` and keeping the run and step with the lowest validation loss; `pretrain_scratch@<arch>`: save the
same random initialisation untrained (the from-scratch baseline of GLUE).

Every path comes from the command line (dvc.yaml). params: models.preset, pretrain.*, seed (scratch: models.preset,
seed). Writes <out>/final (save_pretrained model + tokenizer files), the run's metrics (JSON; scratch: none), the
run file (every swept rate's curve: step, tokens, unique tokens, lr, train and validation loss) and
the selected learning rate's DVCLive log (<live>/metrics.json, <live>/plots/metrics/*.tsv); every rate's run keeps
its checkpoints and log under <out>/lr-<lr>/ (not DVC outputs; an interrupted run continues from the newest
checkpoint of the same configuration); wall-clock figures go to reports/timings/. Several processes (GPUs):
`torchrun --nproc_per_node N stages/pretrain.py ...` (docs/scaling.md); the main process writes.
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.io import write_json
from tinyhelen.exp1 import models
from tinyhelen.exp1.config import ModelsConfig
from tinyhelen.exp1.pretrain import PretrainConfig, pretrain, save_init, unique_tokens
from tinyhelen.exp1.run_files import write_pretrain
from tinyhelen.train import dist
from tinyhelen.train.compute import set_threads


def main(args):
    preset = load_section("models", ModelsConfig, args.params).preset
    seed = load_seed(args.params)
    spec = models.get(args.arch)
    if args.side == "scratch":
        save_init(spec, preset, args.tokenizer, args.out, seed)
        return
    if not (args.corpus and args.metrics and args.live and args.run_file):
        raise SystemExit("a pretraining side needs --corpus, --metrics, --live and --run-file")
    cfg = load_section("pretrain", PretrainConfig, args.params)
    set_threads(cfg.threads)
    res = pretrain(spec, preset, args.corpus, args.tokenizer, args.out, cfg, seed, resume=not args.no_resume,
                   live_dir=args.live)
    if dist.is_main():
        final = res["final"]
        write_json(args.metrics, {**final, "side": args.side})
        if res["runs"]:  # every rate finished
            write_pretrain(args.run_file, res["runs"],
                           lambda step: unique_tokens(step, cfg.batch_size, final["train_blocks"], cfg.seq_len),
                           arch=spec.name, side=args.side, genres=cfg.genres, preset=preset,
                           non_embedding_params=final["non_embedding_params"], train_blocks=final["train_blocks"],
                           batch_size=cfg.batch_size, seq_len=cfg.seq_len)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", help="a registered architecture (tinyhelen.exp1.models.arch_names())")
    p.add_argument("side", choices=["leaner", "ori", "scratch"],
                   help="corpus side (recorded in the metrics), or scratch: save the untrained initialisation")
    add_paths(p, {"--tokenizer": "tokenizer directory of the side", "--out": "run directory: final/ (the model) "
                  "and lr-<lr>/ (checkpoints and log of each learning rate)"})
    p.add_argument("--corpus", help="directory with train.jsonl and validation.jsonl (not for scratch)")
    p.add_argument("--metrics", help="metrics JSON of the run (not for scratch)")
    p.add_argument("--live", help="DVCLive directory of the selected run's metrics (not for scratch)")
    p.add_argument("--run-file", help="run file of every swept rate's curve (TSV; not for scratch)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    stage_main(main, p)
