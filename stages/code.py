"""Stage `code` (first in the DAG): the code every stage runs, as checksums.

Writes data/code/<script>.sha256 for every stages/<script>.py: the sha256 of the script and of every
src/tinyhelen module it can import (`tinyhelen.pipeline.import_closure`), in `sha256sum -c` format. Each
stage depends on its script and its own list, so editing a module reruns exactly the stages that can
execute it (`dvc status` shows `code` as changed; `dvc repro` reruns it, then the stages whose list changed).
deps: stages/, src/tinyhelen/    outs: data/code/
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.pipeline import write_code_checksums


def main(args):
    write_code_checksums(args.out)


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--out": "directory of the <script>.sha256 files"})
    stage_main(main, p)
