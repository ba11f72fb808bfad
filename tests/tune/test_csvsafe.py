"""CSV cells a spreadsheet would run as formulas are neutralised (issue #20 item 9)."""

from __future__ import annotations

import io

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from ecg_tune.tune.csvsafe import FORMULA_START, safe_cell, safe_frame


@given(st.text(max_size=30))
def test_no_written_cell_starts_a_formula(text: str) -> None:
    cell = safe_cell(text)
    assert not cell.startswith(FORMULA_START)
    assert cell == text or cell == "'" + text


@given(st.floats(allow_nan=False) | st.integers())
def test_numbers_stay_numbers(value: float) -> None:
    assert safe_cell(value) == value


def test_the_leaderboard_csv_has_no_formula_cells() -> None:
    board = pd.DataFrame({"trial_id": ["a", "b"], "probe_auc": [-0.5, 0.7], "failure": ["=cmd|' /C calc'!A0", ""],
                          "@label": ["+1", "\tx"], "augment.pipeline": ["-x", "crop"]})
    text = safe_frame(board).to_csv(index=False)
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    for column in back.columns:
        assert not str(column).startswith(FORMULA_START)
        for cell in back[column].astype(str):
            assert not cell.startswith(("=", "+", "@", "\t", "\r")) and not cell.startswith("-x")
    assert list(back["probe_auc"]) == [-0.5, 0.7]
    assert board.loc[0, "failure"] == "=cmd|' /C calc'!A0"  # the frame itself is not changed
