"""A LLaMA pretraining run (``tinyhelen.exp1.pretrain.pretrain``) that may stop after some steps, for the resume
tests of ``test_distributed.py``; run as a script, also under torchrun, in a workspace with ``params.yaml`` and
``data/``: ``python tests/dist_pretrain.py <out dir> <stop after steps, 0: run to the end>``. The main process
writes the result (final figures and history rows) to ``<out dir>.json``."""
import sys

from tinyhelen.cli import setup_logging
from tinyhelen.config import load_section
from tinyhelen.exp1.pretrain import PretrainConfig, pretrain
from tinyhelen.io import write_json
from tinyhelen.train import dist

if __name__ == "__main__":
    setup_logging()
    out, stop = sys.argv[1], int(sys.argv[2])
    cfg = load_section("pretrain", PretrainConfig, "params.yaml")
    res = pretrain("llama", "tiny", "data/leaner/corpus", "data/tokenizers/leaner", out, cfg, seed=3,
                   stop_after=stop or None)
    if dist.is_main():
        write_json(f"{out}.json", res)
