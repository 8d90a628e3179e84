"""Shared bits of the thin stage entry points in ``stages/``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from tinyhelen.config import ParamsError
from tinyhelen.io import InputError


class StageFailure(RuntimeError):
    """The stage cannot produce a result (e.g. its LLM endpoint is down); the message is a one-screen
    summary. ``stage_main`` prints it and exits with code 3, having written no outputs."""


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("TINYHELEN_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def stage_name(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> str:
    """The running stage's DVC address: ``$DVC_STAGE`` (set by DVC >= 3.49 for every stage command, e.g.
    ``glue@llama-leaner``), else the script name plus its positional arguments joined by ``-`` (what
    ``foreach``/``matrix`` addresses look like: ``glue.py llama leaner --glue ...`` -> ``glue@llama-leaner``).
    Option values are not part of the name: with the stage's ``parser``, an option takes a value when the
    parser says so; without it, every option but a known flag does."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    argv = sys.argv if argv is None else argv
    name = os.path.splitext(os.path.basename(argv[0]))[0] if argv else "stage"
    takes_value = {opt: act.nargs != 0 for opt, act in parser._option_string_actions.items()} if parser else {}
    rest, skip = [], False
    for tok in argv[1:]:
        if skip:
            skip = False
        elif tok.startswith("-"):
            skip = "=" not in tok and takes_value.get(tok, parser is None)
        else:
            rest.append(tok)
    return f"{name}@{'-'.join(rest)}" if rest else name


def write_timing(stage: str, seconds: float, started: float) -> None:
    """Write ``reports/timings/<stage>.json`` (wall seconds, host, device, and the throughput figures the
    stage recorded with ``tinyhelen.timing.record``): read by the ``report`` stage for
    its wall-time table. Git-ignored and deliberately not a DVC output or dependency (timings differ on
    every run). ``TINYHELEN_TIMINGS=0`` disables it, ``TINYHELEN_TIMINGS_DIR`` moves it. Written by the main
    process of a run under torchrun only. Never fails a stage."""
    from tinyhelen.train import dist

    if os.environ.get("TINYHELEN_TIMINGS", "1") == "0" or not dist.is_main():
        return
    try:
        import platform
        import time

        from tinyhelen import timing
        from tinyhelen.io import write_json

        device = "cpu"
        torch = sys.modules.get("torch")  # only if the stage imported it (no import cost otherwise)
        if torch is not None and torch.cuda.is_available():
            device = f"cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})"
        out = os.path.join(os.environ.get("TINYHELEN_TIMINGS_DIR", os.path.join("reports", "timings")),
                           stage.replace("/", "_") + ".json")
        write_json(out, {"stage": stage, "wall_s": round(seconds, 3),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                         "host": platform.node(), "cpus": os.cpu_count(), "device": device,
                         "experiment": os.environ.get("DVC_EXP_NAME"), "perf": timing.recorded()})
    except Exception as exc:  # noqa: BLE001 - timing is informational
        logging.getLogger(__name__).warning("could not write the timing of %s: %s", stage, exc)


def stage_main(fn: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Run a stage: parse args, log, turn config/input errors into one clear line and exit code 2, and
    ``StageFailure`` (e.g. an LLM outage) into its one-screen summary and exit code 3. On success the wall
    time goes to ``reports/timings/<stage>.json`` (see ``write_timing``)."""
    import time

    setup_logging()
    args = parser.parse_args()
    t0, wall0 = time.perf_counter(), time.time()
    try:
        fn(args)
    except (ParamsError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except StageFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    # only for real stage runs (under DVC, or a script in stages/), not for tests calling stage_main in-process
    if os.environ.get("DVC_STAGE") or os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) == "stages":
        write_timing(stage_name(parser=parser), time.perf_counter() - t0, wall0)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def add_paths(p: argparse.ArgumentParser, paths: dict[str, str]) -> argparse.ArgumentParser:
    """Required path arguments ``{"--flag": "what it is"}``: a stage's paths come from its ``dvc.yaml`` cmd."""
    for flag, what in paths.items():
        p.add_argument(flag, required=True, help=what)
    return p
