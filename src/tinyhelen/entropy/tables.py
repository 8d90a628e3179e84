"""The entropy tables, rendered from the typed result only (``card``: the report card's section, ``document``:
``reports/entropy.md``)."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from tinyhelen.entropy.result import EntropyResult, EntropySetting
from tinyhelen.tables import f, table



def entropy_table(ent: EntropyResult, settings: dict[str, EntropySetting]) -> pd.DataFrame:
    """Figure rows x (setting, side) columns."""
    rows: list[tuple[str, Callable]] = [
        ("word tokens", lambda s: s.tokens), ("vocabulary (word types)", lambda s: s.vocab),
        ("type/token ratio", lambda s: s.ttr), (f"top-{ent.top_k} coverage", lambda s: f"{s.top_k_coverage:.1%}"),
        ("mean sentence length", lambda s: s.mean_sentence_len), ("BPE tokens", lambda s: s.bpe_tokens)]
    corrected = any(all(x.H("word", 1, corrected=True) is not None for x in (st.leaner, st.ori))
                    for st in settings.values())
    for unit in ("word", "bpe"):
        for n in ent.orders():
            rows.append((f"{unit} H{n} (bits)", lambda s, u=unit, k=n: s.H(u, k)))
            rows.append((f"{unit} h{n} (bits/token)", lambda s, u=unit, k=n: s.H(u, k, conditional=True)))
            if corrected:
                rows.append((f"{unit} H{n} Miller-Madow", lambda s, u=unit, k=n: s.H(u, k, corrected=True)))
    return pd.DataFrame([{"figure": name, **{f"{side} ({st})": f(get(getattr(settings[st], side)))
                                             for st in settings for side in ("ori", "leaner")}}
                         for name, get in rows])


def card(ent: EntropyResult) -> list[str]:
    dropped = "".join(f" Not pooled: {g} ({why})." for g, why in ent.dropped_genres.items())
    return ([f"Pooled over {', '.join(ent.pooled_genres)}.{dropped} `equal_budget` cuts each twin pair to equal "
             "length (the claim is decided there); h_n = H_n - H_(n-1) is the conditional entropy.", ""]
            + table(entropy_table(ent, dict(ent.settings))))


def document(ent: EntropyResult) -> str:
    lines = ["# Entropy and vocabulary: leaner vs original", "",
             "H_n: plug-in n-gram entropy (bits per n-gram); Miller-Madow: H_n + (K-1)/(2N ln 2); h_n = H_n - "
             "H_(n-1): conditional entropy (bits per token). From the run file `runs/entropy.tsv`.", "",
             "## Pooled", ""] + card(ent)
    for genre, settings in ent.by_genre.items():
        lines += [f"## {genre}", ""] + table(entropy_table(ent, dict(settings)))
    return "\n".join(lines).rstrip("\n") + "\n"
