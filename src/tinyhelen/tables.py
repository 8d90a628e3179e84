"""The one table style of the reports: a pandas DataFrame written with ``to_markdown`` (``table``), figures written
by ``f``. Each experiment renders its tables from its typed result in its own ``tables`` module
(``tinyhelen.<experiment>.tables``: ``card`` for the report card, ``document`` for ``reports/<experiment>.md``,
both from the same DataFrames)."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd


def f(v: Any, fmt: str = ".4g") -> str:
    """A figure as the tables write it: thousands separators for counts, ``n/a`` for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or abs(v) >= 1000 or (float(v).is_integer() and abs(v) >= 100):
        return f"{v:,.0f}"
    return format(v, fmt)


def table(df: pd.DataFrame, index: bool = False) -> list[str]:
    """A DataFrame as Markdown lines; cells are written as given (no number re-parsing)."""
    df = df.map(lambda c: str(c).replace("|", "\\|").replace("\n", " "))
    return [df.to_markdown(index=index, disable_numparse=True), ""]


def mean_sd(xs: pd.Series, fmt: str = ".4g") -> str:
    xs = xs.dropna()
    if xs.empty:
        return "not reached"
    return f(float(xs.mean()), fmt) + (f" ± {f(float(xs.std()), '.3g')}" if len(xs) > 1 else "")
