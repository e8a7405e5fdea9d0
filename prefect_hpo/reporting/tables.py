"""Terminal tables that fit their width: numbers are shown whole, text is cut with an ellipsis.

A table of trials squeezed to 80 columns (what a pipe gets) used to wrap numbers inside their
cells. Here every column says whether it is shown whole (numbers, times, names, states) or is text
that may be cut to fit (configuration text, errors: at least `TEXT_FLOOR` characters); when even
that does not fit, the rightmost columns are left out and named (as `kubectl get` does), and a
width of None shows everything at its full width. Columns are set apart by two spaces, with a rule
under the headers: borders would cost a third of 80 columns on a table of trials.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype
from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

#: Text columns are cut to fit, but never below this many characters (or their full text, if shorter).
TEXT_FLOOR = 12
#: A number column's header folds onto more lines down to this width (or the numbers' width).
HEADER_FLOOR = 8


@dataclass(frozen=True)
class Column:
    """One column: its header, its cells as text, whether they are shown whole, and whether they are
    numbers (right-aligned; always whole)."""

    header: str
    cells: tuple[str, ...]
    numeric: bool = False
    whole: bool = False

    @property
    def natural(self) -> int:
        """The width that shows the header and every cell whole."""
        return max([cell_len(self.header), *(cell_len(c) for c in self.cells), 1])

    @property
    def least(self) -> int:
        """The narrowest this column may get: whole cells (a long header folds); text cut down to TEXT_FLOOR."""
        if self.numeric or self.whole:
            return max([min(cell_len(self.header), HEADER_FLOOR), *(cell_len(c) for c in self.cells), 1])
        return min(self.natural, TEXT_FLOOR)


@dataclass(frozen=True)
class Layout:
    """The widths chosen for the columns kept, and the headers of those left out."""

    widths: tuple[int, ...]
    left_out: tuple[str, ...]

    @property
    def total(self) -> int:
        """The printed width: cells, one space of padding either side, and the borders."""
        return table_width(self.widths)


def table_width(widths: Sequence[int]) -> int:
    """The printed width of columns this wide: two spaces between neighbours, none at the edges."""
    return sum(widths) + 2 * max(len(widths) - 1, 0)


def cell(value: Any) -> str:
    """A value as a table shows it: floats to 6 significant digits, times to the second in local
    time, missing values empty."""
    if value is None or (not isinstance(value, str | bytes) and _is_missing(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return " ".join(str(value).splitlines())  # a traceback's lines, say, on one line


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts: pd.isna answers per element
        return False


def columns_of(frame: pd.DataFrame, whole: Collection[str] = ()) -> list[Column]:
    """A frame's columns as table columns, `params_` dropped from headers. Numbers, times and the
    columns named in `whole` are never cut."""
    out = []
    for name in frame.columns:
        series = frame[name]
        numeric = is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype)
        kept = numeric or is_datetime64_any_dtype(series.dtype) or name in whole
        cells = tuple(cell(v) for v in series.tolist())
        out.append(Column(str(name).removeprefix("params_"), cells, numeric=numeric, whole=kept))
    return out


def fit(columns: Sequence[Column], width: int) -> Layout:
    """Widths that fit `width`: every column at its least first; what is left unfolds the folded
    headers of whole columns (those that need least first), then widens cut text columns.

    Columns that do not fit even at their least are left out from the right (the first always stays)."""
    kept = list(columns)
    while len(kept) > 1 and table_width([c.least for c in kept]) > width:
        kept.pop()
    widths = [c.least for c in kept]
    spare = width - table_width(widths)
    # whole columns whose header folds: unfold the ones that need least first, each all at once
    for i in sorted((i for i, c in enumerate(kept) if c.numeric or c.whole), key=lambda i: kept[i].natural - widths[i]):
        grow = min(kept[i].natural - widths[i], spare)
        if grow == kept[i].natural - widths[i]:
            widths[i] += grow
            spare -= grow
    while spare > 0:  # then cut text: the narrowest first, so that the room left is shared fairly
        short = [i for i, c in enumerate(kept) if widths[i] < c.natural and not (c.numeric or c.whole)]
        if not short:
            break
        widths[min(short, key=lambda i: widths[i])] += 1
        spare -= 1
    return Layout(tuple(widths), tuple(c.header for c in columns[len(kept) :]))


def render(columns: Sequence[Column], width: int | None) -> tuple[Table, Layout]:
    """The table for `width` columns of terminal (None: every column at its full width)."""
    layout = Layout(tuple(c.natural for c in columns), ()) if width is None else fit(columns, width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    kept = columns[: len(layout.widths)]
    for column, size in zip(kept, layout.widths, strict=True):
        header = Text(column.header, no_wrap=False, overflow="fold")  # a header may fold; its cells never do
        table.add_column(
            header,
            width=size,
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if column.numeric else "left",
        )
    for row in zip(*(c.cells for c in kept), strict=True):
        table.add_row(*(Text(text) for text in row))  # as they are: "[...]" in a config is not rich markup
    return table, layout
