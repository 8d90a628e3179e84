"""What the ``entropy`` stage reports: its run file (``runs/entropy.tsv``: every figure of every setting, scope
and side, one row each), the typed result built from it alone (``from_runs``: the pooled figures the claims are
decided on, and every genre's), its DVC metrics, the plot data and figure. The tables are rendered from the
typed result (``tinyhelen.report.tables``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from tinyhelen import runfiles
from tinyhelen.io import InputError
from tinyhelen.results import Result, Schema

ENTROPY_KEY = re.compile(r"^(word|bpe)_[Hh]\d+(_mm)?$")
POOLED = "pooled"  # the scope of the pooled genres
COLUMNS = ["setting", "scope", "side", "figure", "value"]


class EntropySide(Schema):
    """Figures of one corpus side in one setting and scope. ``entropy`` holds ``word_H<n>``, ``bpe_H<n>``
    (plug-in entropy of n-grams, bits), ``word_h<n>``/``bpe_h<n>`` (conditional, bits per token) and the
    bias-corrected ``..._mm`` variants when the entropy stage computes them."""

    tokens: int
    vocab: int
    ttr: float
    top_k_coverage: float
    mean_sentence_len: float
    bpe_tokens: int | None = None
    entropy: dict[str, float]

    @field_validator("entropy")
    @classmethod
    def _keys(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if not ENTROPY_KEY.match(k)]
        if bad:
            raise ValueError(f"unknown entropy figures {bad}; expected (word|bpe)_(H|h)<n>[_mm]")
        return v

    def H(self, unit: str, n: int, corrected: bool = False, conditional: bool = False) -> float | None:
        return self.entropy.get(f"{unit}_{'h' if conditional else 'H'}{n}{'_mm' if corrected else ''}")


class EntropySetting(Schema):
    leaner: EntropySide
    ori: EntropySide


class EntropyResult(Result):
    name: ClassVar[str] = "entropy"
    kind: Literal["entropy"] = "entropy"
    max_n: int
    top_k: int
    pooled_genres: list[str]
    dropped_genres: dict[str, str] = {}  # genre -> why it is not in the pooled figures
    settings: dict[Literal["paired", "equal_budget"], EntropySetting]
    by_genre: dict[str, dict[Literal["paired", "equal_budget"], EntropySetting]] = {}  # genre -> its own figures

    def orders(self) -> list[int]:
        return list(range(1, self.max_n + 1))

    def corrected(self, setting: str) -> bool:
        """True when the bias-corrected entropies are present for both sides of ``setting``."""
        s = self.settings[setting]
        return all(side.H("word", 1, corrected=True) is not None for side in (s.leaner, s.ori))

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for setting, sides in self.settings.items():
            out[setting] = {}
            for side in ("leaner", "ori"):
                st: EntropySide = getattr(sides, side)
                out[setting][side] = {"tokens": st.tokens, "vocab": st.vocab, "ttr": st.ttr,
                                      f"top{self.top_k}_coverage": st.top_k_coverage,
                                      "mean_sentence_len": st.mean_sentence_len, "bpe_tokens": st.bpe_tokens,
                                      **{k: v for k, v in st.entropy.items() if "_H" in k}}
        return out


# ------------------------------------------------------------------------------------ the run file
def run_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, scope, side, figure) of ``tinyhelen.entropy.measure.run``'s result."""
    return [{"setting": setting, "scope": scope, "side": side, "figure": fig, "value": value}
            for setting, scopes in res.items() for scope, sides in scopes.items()
            for side, figures in sides.items() for fig, value in figures.items() if value is not None]


def write_run(target: Path | str, res: dict[str, Any], max_n: int, top_k: int, pooled_genres: list[str],
              dropped_genres: dict[str, str] | None = None) -> Path:
    meta = {"max_n": max_n, "top_k": top_k, "pooled_genres": list(pooled_genres),
            "dropped_genres": dict(dropped_genres or {})}
    return runfiles.write(target, "entropy", meta, run_rows(res), COLUMNS)


def _side(figures: dict[str, float], top_k: int) -> dict[str, Any]:
    return {"tokens": figures["tokens"], "vocab": figures["vocab"], "ttr": figures["ttr"],
            "top_k_coverage": figures[f"top{top_k}_coverage"], "mean_sentence_len": figures["mean_sentence_len"],
            "bpe_tokens": figures.get("bpe_tokens"),
            "entropy": {k: v for k, v in figures.items() if ENTROPY_KEY.match(k)}}


@runfiles.built_from
def from_runs(runs: Path | str, params: Path | str | None = None) -> EntropyResult:
    """The typed result from ``runs/entropy.tsv`` alone (``params`` is not read: the run file's header says
    the orders, the top-k and the genres pooled)."""
    rf = runfiles.read_kind(runs, "entropy")
    rf.need("max_n", "top_k", "pooled_genres")
    tree: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for r in rf.rows:
        tree.setdefault(r["scope"], {}).setdefault(r["setting"], {}).setdefault(r["side"], {})[r["figure"]] = r["value"]
    top_k = rf.meta["top_k"]
    try:
        scopes = {scope: {setting: {side: _side(f, top_k) for side, f in sides.items()}
                          for setting, sides in settings.items() if {"leaner", "ori"} <= set(sides)}
                  for scope, settings in tree.items()}
    except KeyError as exc:
        raise InputError(rf.path, f"figure {exc.args[0]!r} missing") from None
    pooled = scopes.pop(POOLED, {})
    return EntropyResult(max_n=rf.meta["max_n"], top_k=top_k, pooled_genres=rf.meta["pooled_genres"],
                         dropped_genres=rf.meta.get("dropped_genres", {}), settings=pooled,
                         by_genre={g: s for g, s in scopes.items() if s})


# ------------------------------------------------------------------------------------ plots
def plot_rows(ent: EntropyResult) -> list[dict[str, Any]]:
    """Rows for the DVC plot: n-gram order vs pooled entropy per side and token kind (paired setting)."""
    setting = ent.settings.get("paired")
    rows = []
    for n in ent.orders():
        row: dict[str, Any] = {"n": n}
        for side in ("ori", "leaner"):
            st = getattr(setting, side) if setting is not None else None
            row[f"{side}_word_H"] = st.H("word", n) if st else None
            row[f"{side}_bpe_H"] = st.H("bpe", n) if st else None
        rows.append(row)
    return rows


def plot_png(rows: list[dict[str, Any]], path: Path | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinyhelen.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ns = [r["n"] for r in rows]
    for ax, kind in zip(axes, ("word", "bpe")):
        for side, style in (("ori", "o-"), ("leaner", "s-")):
            ys = [r.get(f"{side}_{kind}_H") for r in rows]
            if all(y is not None for y in ys):
                ax.plot(ns, ys, style, label=side)
        ax.set_title(f"{kind} n-gram entropy (pooled, paired docs)")
        ax.set_xlabel("n")
        ax.set_ylabel("bits per n-gram")
        ax.set_xticks(ns)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_plots(ent: EntropyResult, tsv: Path | str, png: Path | str) -> None:
    """The DVC plot data (``plot_rows``) and the figure."""
    from tinyhelen.io import write_tsv

    rows = plot_rows(ent)
    write_tsv(tsv, rows, list(rows[0]))
    plot_png(rows, png)
