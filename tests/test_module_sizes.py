"""The package's modules stay small enough to read in one sitting (issue 16: no module over 450 lines)."""

from __future__ import annotations

from pathlib import Path

import prefect_hpo

#: The most lines a module of the package may have; past it, split it along a seam (one job per module).
MAX_LINES = 450


def test_no_module_of_the_package_is_over_450_lines() -> None:
    package = Path(prefect_hpo.__file__).parent
    sizes = {path.relative_to(package.parent): len(path.read_text().splitlines()) for path in package.rglob("*.py")}
    assert len(sizes) > 20  # the package itself was found, not an empty folder
    too_long = {str(path): lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split each along a seam of its jobs): {too_long}"
