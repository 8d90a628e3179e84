"""Stage `pretrain_<side>@<arch>`: pretrain one architecture on one corpus side (equal token budget).

params: models.preset, pretrain.*, seed
deps:   corpus <corpus-dir>/{train,validation}.jsonl, tokenizer data/tokenizers/<side>
outs:   data/models/pretrain/<arch>-<side>/final (save_pretrained + tokenizer files),
        reports/pretrain/<arch>-<side>.json (metrics), reports/pretrain/<arch>-<side>/loss.tsv (plot)
Resumable checkpoints: data/models/pretrain/<arch>-<side>/checkpoints/ (not a DVC output; an interrupted
run continues from the newest checkpoint of the same configuration). Multi-GPU: run this script with
`accelerate launch stages/pretrain.py ...` or `torchrun --nproc_per_node N stages/pretrain.py ...`.
"""
from pathlib import Path

from tinyhelen import models, train
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_seed, load_section
from tinyhelen.io import write_json

DEFAULT_CORPUS = {"leaner": "data/leaner/corpus", "ori": "data/prepared/corpus/ori"}


def main(args):
    preset = load_section("models", models.ModelsConfig, args.params).preset
    cfg = load_section("pretrain", train.PretrainConfig, args.params)
    seed = load_seed(args.params)
    train.set_threads()
    name = f"{args.arch}-{args.side}"
    corpus = Path(args.corpus_dir or DEFAULT_CORPUS[args.side])
    tokdir = Path(args.tokenizer_dir or f"data/tokenizers/{args.side}")
    out = Path(args.out_dir or f"data/models/pretrain/{name}")
    res = train.pretrain(args.arch, preset, corpus, tokdir, out, cfg, seed, resume=not args.no_resume,
                        name=name)
    from accelerate import PartialState

    if PartialState().is_main_process:
        write_json(f"reports/pretrain/{name}.json", {**res["final"], "side": args.side})
        train.write_history(f"reports/pretrain/{name}/loss.tsv", res["history"])


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("arch", choices=models.ARCHS)
    p.add_argument("side", choices=["leaner", "ori"])
    p.add_argument("--corpus-dir", help="default: data/leaner/corpus (leaner), data/prepared/corpus/ori (ori)")
    p.add_argument("--tokenizer-dir", help="default: data/tokenizers/<side>")
    p.add_argument("--out-dir", help="default: data/models/pretrain/<arch>-<side>")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    stage_main(main, p)
