"""What the ``entropy`` stage reports: the compact metrics, the leaner-vs-ori check, the Markdown tables
and the plot of the pooled n-gram entropies."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from tinyhelen.results import Result, Schema


ENTROPY_KEY = re.compile(r"^(word|bpe)_[Hh]\d+(_mm)?$")


class EntropySide(Schema):
    """Pooled figures of one corpus side in one setting. ``entropy`` holds ``word_H<n>``, ``bpe_H<n>``
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

    @classmethod
    def from_stage(cls, res: dict[str, Any], max_n: int, top_k: int, pooled_genres: list[str],
                   dropped_genres: dict[str, str] | None = None) -> EntropyResult:
        """From ``tinyhelen.entropy.run``'s result: ``{setting: {"pooled": {side: figures}}}``."""
        settings = {}
        for setting, scopes in res.items():
            pooled = scopes.get("pooled")
            if pooled is None:
                continue
            settings[setting] = {side: {
                "tokens": st["tokens"], "vocab": st["vocab"], "ttr": st["ttr"],
                "top_k_coverage": st[f"top{top_k}_coverage"], "mean_sentence_len": st["mean_sentence_len"],
                "bpe_tokens": st.get("bpe_tokens"),
                "entropy": {k: v for k, v in st.items() if ENTROPY_KEY.match(k)}} for side, st in pooled.items()}
        return cls(max_n=max_n, top_k=top_k, pooled_genres=list(pooled_genres),
                   dropped_genres=dict(dropped_genres or {}), settings=settings)




def summary(res: dict[str, Any], max_n: int, top_k: int) -> dict[str, Any]:
    """The compact DVC metrics: pooled figures per setting and side."""
    keys = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len", "bpe_tokens"]
    keys += [f"word_H{n}" for n in range(1, max_n + 1)] + [f"bpe_H{n}" for n in range(1, max_n + 1)]
    keys += [f"{kind}_{fig}{n}{mm}" for kind in ("word", "bpe") for fig, mm in (("H", "_mm"), ("h", ""), ("h", "_mm"))
             for n in range(1, max_n + 1)]
    out: dict[str, Any] = {}
    for setting, scopes in res.items():
        if "pooled" not in scopes:
            continue
        out[setting] = {side: {k: st[k] for k in keys if k in st} for side, st in scopes["pooled"].items()}
    return out


def leaner_vs_ori(res: dict[str, Any], max_n: int) -> dict[str, Any]:
    """Pooled n-gram entropies H_1..H_max_n (word and BPE): is leaner below ori on each?

    Returns per setting the figures where leaner is NOT below ori (empty list = below on every figure)."""
    out: dict[str, Any] = {}
    figs = [f"{k}_H{n}" for k in ("word", "bpe") for n in range(1, max_n + 1)]
    for setting, scopes in res.items():
        sides = scopes.get("pooled", {})
        if {"leaner", "ori"} <= set(sides):
            lo, ori = sides["leaner"], sides["ori"]
            present = [f for f in figs if f in lo and f in ori]
            out[setting] = {"figures": len(present),
                            "leaner_not_below": [f for f in present if not lo[f] < ori[f]]}
    return out


def markdown(res: dict[str, Any], max_n: int, top_k: int, coverage: dict[str, Any] | None = None) -> str:
    lines = ["# Entropy and vocabulary: leaner vs original", ""]
    if coverage is not None:
        lines.append(f"Pooled genres: {', '.join(coverage['pooled_genres']) or 'none'}.")
        for g, why in coverage["dropped"].items():
            lines.append(f"**Genre `{g}` is not in these figures: {why}.**")
        lines.append("")
    lines += ["H_n: plug-in n-gram entropy (bits per n-gram); MM: Miller-Madow estimate H_n + (K-1)/(2N ln 2); "
              "h_n = H_n - H_(n-1): conditional entropy (bits per token).", ""]
    cols = ["tokens", "vocab", "ttr", f"top{top_k}_coverage", "mean_sentence_len", "bpe_tokens"]
    ns = range(1, max_n + 1)
    ent = [f"H{n}" for n in ns] + [f"H{n} MM" for n in ns] + [f"h{n}" for n in ns]
    for setting, scopes in res.items():
        lines += [f"## {setting}", "", "| scope | side | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for scope, sides in scopes.items():
            for side, st in sides.items():
                lines.append(f"| {scope} | {side} | " + " | ".join(str(st.get(c, "")) for c in cols) + " |")
        lines += ["", "| scope | side | token kind | " + " | ".join(ent) + " |", "|---|---|---|" + "---|" * len(ent)]
        for scope, sides in scopes.items():
            for side, st in sides.items():
                for kind in ("word", "bpe"):
                    if f"{kind}_H1" not in st:
                        continue
                    vals = [st.get(f"{kind}_H{n}") for n in ns] + [st.get(f"{kind}_H{n}_mm") for n in ns] \
                        + [st.get(f"{kind}_h{n}") for n in ns]
                    lines.append(f"| {scope} | {side} | {kind} | " + " | ".join(str(v) for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_rows(res: dict[str, Any], max_n: int) -> list[dict[str, Any]]:
    """Rows for the DVC plot: n-gram order vs pooled entropy per side and token kind (paired setting)."""
    pooled = res.get("paired", {}).get("pooled", {})
    rows = []
    for n in range(1, max_n + 1):
        row: dict[str, Any] = {"n": n}
        for side, st in pooled.items():
            row[f"{side}_word_H"] = st.get(f"word_H{n}")
            row[f"{side}_bpe_H"] = st.get(f"bpe_H{n}")
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
