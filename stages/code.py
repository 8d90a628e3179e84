"""Stage `code` (first in the DAG): validates params.yaml, then writes the code every stage runs, as checksums.

Every other stage depends on this one (through its data/code/<script>.sha256), so the params check here
runs before DVC touches any other stage's outputs: a bad value (e.g. from `dvc exp run -S`) fails the
pipeline at its first stage, with one line per bad key, and nothing else runs.

Writes data/code/<script>.sha256 for every stages/<script>.py: the sha256 of the script and of every
src/tinyhelen module it can import (`tinyhelen.pipeline.import_closure`), in `sha256sum -c` format. Each
stage depends on its script and its own list, so editing a module reruns exactly the stages that can
execute it (`dvc status` shows `code` as changed; `dvc repro` reruns it, then the stages whose list changed).
The directory is replaced as a whole (a persisted output: a removed script's list must not stay behind).
deps: stages/, src/tinyhelen/, params.yaml (all of it; the checksums do not depend on it)    outs: data/code/
"""
from tinyhelen.cli import add_paths, parser, stage_main
from tinyhelen.config import ParamsError
from tinyhelen.io import atomic_path
from tinyhelen.params import validate_all
from tinyhelen.pipeline import write_code_checksums

UNDO = ("no other stage ran and no output was touched. Fix the value (`dvc exp run -S key=value`, or edit the profile "
        "in conf/) or restore the committed params (`git checkout params.yaml`).")


def main(args):
    try:
        validate_all(args.params)
    except ParamsError as exc:
        raise ParamsError(f"{exc}\n{UNDO}") from None
    with atomic_path(args.out) as tmp:
        write_code_checksums(tmp)


if __name__ == "__main__":
    p = parser(__doc__)
    add_paths(p, {"--out": "directory of the <script>.sha256 files"})
    stage_main(main, p)
