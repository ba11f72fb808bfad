"""CSV cells a spreadsheet would run as formulas (CSV injection), neutralised before writing.

Label names come from user files (a label CSV cell `=cmd|' /C calc'!A0` is stored verbatim), and so
may trial names, config values and failure reasons: every CSV ecg-tune writes goes through
`safe_frame` (or `safe_cell`), which prefixes a cell starting with =, +, -, @, a tab or a carriage
return with a single quote (the OWASP recommendation). Numbers stay numbers: only strings change,
so `-0.5` as a float is written as is, while the string "-1+1" becomes "'-1+1".
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_frame(df: Any) -> Any:
    """A copy of a pandas DataFrame with every string cell, and the column names, neutralised."""
    from pandas.api.types import is_numeric_dtype

    out = df.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):
            out[column] = out[column].map(safe_cell)
    out.columns = [safe_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out
