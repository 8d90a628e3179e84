"""Each claim against scale: the effect with its interval against the tokens per run, one point per run.

The points of a claim are this workspace's run (its claims as the card decides them) and every saved profile
(``results/<profile>/summary.json``, from ``python -m tinyhelen.profiles run``), placed at their tokens per
training run (a claim's ``scale_tokens`` fraction times the study's tokens per run of its experiment,
``tinyhelen.study.STUDY_SCALE``), plus the study's own point where it states a size (EXP3's ~20% at its
tokens per run: ``tinyhelen.study.STUDY_EXP3_CLAIM``). A reader sees at a glance whether an effect
grows, shrinks or stays within noise as the scale approaches the study's. Claims without a model scale (the
entropy figures are corpus properties) have no figure.

``write`` draws one PNG per claim (log-scale tokens axis, the interval as an error bar, the verdict in the
label) into ``<reports>/figures/scale/`` and the points into ``<reports>/plots/scale.tsv`` (DVC plot data).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinyhelen.study import STUDY_EXP3_CLAIM, STUDY_SCALE

EXPERIMENT = {"exp1": "EXP1", "exp2": "EXP2", "exp3": "EXP3"}  # claim id prefix -> the study's experiment
WORKSPACE = "workspace"
STUDY = "study (stated)"
COLUMNS = ["claim", "source", "tokens_per_run", "effect", "lo", "hi", "n", "verdict"]


@dataclass(frozen=True)
class Point:
    """One run's measurement of one claim (``lo``/``hi`` None: no interval)."""

    claim: str
    source: str
    tokens_per_run: float
    effect: float
    lo: float | None
    hi: float | None
    n: int | None
    verdict: str


def experiment_of(claim_id: str) -> str | None:
    return EXPERIMENT.get(claim_id.split("_", 1)[0])


def _point(claim_id: str, source: str, numbers: dict[str, Any], verdict: str) -> Point | None:
    exp = experiment_of(claim_id)
    frac, effect = numbers.get("scale_tokens"), numbers.get("effect")
    if exp is None or frac is None or effect is None:
        return None
    return Point(claim_id, source, float(frac) * STUDY_SCALE[exp].tokens_per_run, float(effect),
                 numbers.get("lo"), numbers.get("hi"), numbers.get("n"), verdict)


def stated(claim_id: str) -> Point | None:
    """The study's own point of a claim, where the study states a size (EXP3's reductions)."""
    strategy, size = STUDY_EXP3_CLAIM
    if experiment_of(claim_id) == "EXP3" and claim_id.startswith(f"exp3_{strategy}_"):
        return Point(claim_id, STUDY, float(STUDY_SCALE["EXP3"].tokens_per_run), size, None, None, None, "stated")
    return None


def points(claims: list[Any], profile_summaries: dict[str, dict[str, Any]]) -> dict[str, list[Point]]:
    """``{claim id: [points]}``: this run's ``claims`` (``report.claims.Claim``), each saved profile's summary
    (``{profile: summary.json}``) and the study's stated point, sorted by tokens per run; only claims with a
    model scale, and only sources that measured them."""
    out: dict[str, list[Point]] = {}
    for c in claims:
        p = _point(c.id, WORKSPACE, c.numbers, c.verdict)
        if p is not None:
            out.setdefault(c.id, []).append(p)
    for profile, summ in sorted(profile_summaries.items()):
        for cid, entry in (summ.get("claims") or {}).items():
            p = _point(cid, profile, entry, entry.get("verdict", ""))
            if p is not None:
                out.setdefault(cid, []).append(p)
    for cid in out:
        s = stated(cid)
        out[cid] = sorted(out[cid] + ([s] if s else []), key=lambda p: (p.tokens_per_run, p.source))
    return out


def read_summaries(profiles: Path) -> dict[str, dict[str, Any]]:
    """``{profile: summary.json}`` of every saved profile under ``profiles`` that has one."""
    out = {}
    for path in sorted(Path(profiles).glob("*/summary.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # listed with its problem by read_profile_runs
    return out


def rows(pts: dict[str, list[Point]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(p).items()} for ps in pts.values() for p in ps]


def _plot(claim_id: str, ps: list[Point], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for p in ps:
        style = dict(marker="*", ms=12, color="k") if p.source == STUDY else dict(marker="o", ms=6)
        err = None
        if p.lo is not None and p.hi is not None:
            err = [[p.effect - p.lo], [p.hi - p.effect]]
        ax.errorbar([p.tokens_per_run], [p.effect], yerr=err, capsize=3, ls="none", **style,
                    label=f"{p.source}: {p.verdict}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens per training run (log)")
    ax.set_ylabel("effect (> 0 supports the claim)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write(pts: dict[str, list[Point]], titles: dict[str, str], figures_dir: Path | str, plot_tsv: Path | str) -> None:
    """One PNG per claim in ``figures_dir`` (replaced as a whole) and the points as DVC plot data."""
    from tinyhelen.io import atomic_path, write_tsv

    with atomic_path(figures_dir) as tmp:
        tmp.mkdir(parents=True)
        for cid, ps in pts.items():
            _plot(cid, ps, titles.get(cid, cid), tmp / f"{cid}.png")
    write_tsv(plot_tsv, rows(pts), COLUMNS)
