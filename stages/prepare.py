"""Stage `prepare`: read the released TinyHelen data in data.local_dir and write normalised, paired shards.

params: data.*    deps: ${data.local_dir} (the release copy)    outs: data/prepared
metrics: reports/prepare.json (+ reports/prepare_detail.json)
"""
from tinyhelen import data
from tinyhelen.cli import parser, stage_main
from tinyhelen.config import load_section


def main(args):
    cfg = load_section("data", data.DataConfig, args.params)
    data.check_data_env(cfg)
    data.prepare(cfg, out_dir=args.out, metrics_path=args.metrics, detail_path=args.detail)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--out", default="data/prepared")
    p.add_argument("--metrics", default="reports/prepare.json")
    p.add_argument("--detail", default="reports/prepare_detail.json")
    stage_main(main, p)
