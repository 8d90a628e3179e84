"""``python -m tinyhelen.report verify [DIR ...]``: recompute every verdict of saved profiles and of the
workspace's reports from their run files (``tinyhelen.report.verify``)."""
import sys

from tinyhelen.report.verify import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0] != "verify":
        print("usage: python -m tinyhelen.report verify [results/<profile> | reports ...]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(argv[1:]))
