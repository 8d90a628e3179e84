"""Stage `prepare`: read the released TinyHelen data in data.local_dir and write normalised, paired shards.

params: data.*    deps: ${data.local_dir} (the release copy)    outs: the prepared shards
metrics: the summary (+ the detail), paths from dvc.yaml
"""
from tinyhelen import data
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import load_section


def main(args):
    cfg = load_section("data", data.DataConfig, args.params)
    data.check_data_env(cfg)
    data.prepare(cfg, out_dir=args.out, metrics_path=args.metrics, detail_path=args.detail)


if __name__ == "__main__":
    stage_main(main, add_paths(parser(__doc__), {"--out": "directory of the prepared shards",
                                                 "--metrics": "metrics (JSON)", "--detail": "detail (JSON)"}))
