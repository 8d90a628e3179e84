"""Shared bits of the thin stage entry points in ``stages/``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from tinyhelen.config import ParamsError
from tinyhelen.io import InputError


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("TINYHELEN_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def stage_main(fn: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Run a stage: parse args, log, turn config/input errors into one clear line and exit code 2."""
    setup_logging()
    args = parser.parse_args()
    try:
        fn(args)
    except (ParamsError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p
