"""Numbers and plain-text tables for the reports and the command-line summaries."""
from __future__ import annotations

import math
from typing import Sequence


def fmt(x: float | None) -> str:
    """Three significant digits (four in scientific notation from 1e4 up); ``n/a`` when missing or not finite."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]], right_from: int | None = None) -> None:
    """Columns as wide as their widest cell under a dashed rule; columns from ``right_from`` on align right."""
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        cells = (c.rjust(w) if right_from is not None and j >= right_from else c.ljust(w)
                 for j, (c, w) in enumerate(zip(r, widths)))
        print("  ".join(cells).rstrip())
