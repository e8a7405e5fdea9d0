"""Terminal tables: numbers whole, text cut to fit, columns left out from the right, all at --wide."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pandas as pd
from rich.console import Console

from prefect_hpo.reporting.tables import TEXT_FLOOR, Column, cell, columns_of, fit, render, table_width

FRAME = pd.DataFrame(
    {
        "number": [0, 1, 12],
        "state": ["COMPLETE", "FAIL_RECOVERABLE", "PRUNED"],
        "val_loss": [1.23456789, 1001.73456789, None],
        "params_learning_rate": [0.000123456789, 0.5, 1e-7],
        "params_activation": ["relu", "a_rather_long_activation_name_that_goes_on", "tanh"],
        "error": [None, "ValueError: shapes (64, 12) and (8,) not aligned\nTraceback ...", None],
    }
)


def printed(frame: pd.DataFrame, width: int | None, console_width: int = 80) -> list[str]:
    table, layout = render(columns_of(frame, whole=("state",)), width)
    out = io.StringIO()
    Console(file=out, width=max(console_width, layout.total), color_system=None).print(table)
    return out.getvalue().splitlines()


def test_cells_show_numbers_to_six_digits_and_text_on_one_line() -> None:
    assert cell(1001.73456789) == "1001.73" and cell(7) == "7" and cell(None) == "" and cell(pd.NA) == ""
    assert cell(float("nan")) == "" and cell("a\nb") == "a b" and cell([1, 2]) == "[1, 2]"
    assert cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)).startswith("2026-01-0")


def test_at_80_columns_every_number_is_whole_and_long_text_is_cut() -> None:
    lines = printed(FRAME, 80)
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    for number in ("1.23457", "1001.73", "0.000123457", "1e-07", "12"):
        assert number in text
    assert "FAIL_RECOVERABLE" in text  # named whole: states are not cut
    assert "a_rather_long_activation_name_that_goes_on" not in text and "a_rather_lo" in text and "…" in text


def test_wide_shows_everything() -> None:
    text = "\n".join(printed(FRAME, None))
    assert "a_rather_long_activation_name_that_goes_on" in text
    assert "ValueError: shapes (64, 12) and (8,) not aligned Traceback ..." in text


def test_columns_that_do_not_fit_at_their_least_are_left_out_from_the_right() -> None:
    columns = [Column("number", ("0",), numeric=True)] + [Column(f"text{i}", ("x" * 40,)) for i in range(5)]
    layout = fit(columns, 60)
    assert layout.widths == (6, 16, 16, 16) and layout.left_out == ("text3", "text4")
    assert table_width(layout.widths) == 60
    assert fit(columns, 10).widths == (6,)  # the first column always stays
    assert min(fit(columns, 80).widths[1:]) >= TEXT_FLOOR


def test_a_long_header_of_a_number_column_folds_before_numbers_are_touched() -> None:
    columns = [Column("a_very_long_header_name", ("1", "22"), numeric=True), Column("b", ("x" * 30,))]
    layout = fit(columns, 30)
    assert layout.widths[0] < len("a_very_long_header_name") and not layout.left_out
    assert fit(columns, 200).widths == (23, 30)
