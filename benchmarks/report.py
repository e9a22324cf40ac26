"""The pieces of BENCHMARKS.md: tables with a target and a verdict, sections, the page."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS = "PASS"
MISS = "MISS"
NO_TARGET = "—"
NOT_MEASURED = "not measured"


def verdict(met: bool) -> str:
    """``PASS`` when a target was met, ``MISS`` otherwise."""
    return PASS if met else MISS


@dataclass
class Table:
    """One markdown table; every row has as many cells as there are headers."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.headers)} columns")
        self.rows.append([str(cell) for cell in cells])

    def render(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        out = [line(self.headers), "|" + "|".join("---" for _ in self.headers) + "|"]
        out += [line(row) for row in self.rows]
        return "\n".join(out)


@dataclass
class Section:
    """A measurement: its tables, one line each on how it was measured, and its verdicts.

    Attributes:
        key: the ``--only`` name of the section.
        title: the heading.
        tables: the results, Baton next to its reference.
        method: how it was measured (one line per measurement).
        notes: anything a reader must know to read the numbers right.
        seconds: wall time the section took.
    """

    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    method: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Rows of the summary table: measurement, Baton, reference, target, result.
    summary: list[list[str]] = field(default_factory=list)

    def summarize(
        self, measurement: str, baton: str, reference: str, target: str, result: str
    ) -> None:
        """Add a row to the summary at the top of the page."""
        self.summary.append([measurement, baton, reference, target, result])

    def not_measured(self, rows: str, targets: str, reason: str) -> Section:
        """Make this section one ``not measured`` row saying ``reason``, and say so in the
        summary (``rows``: what was not measured; ``targets``: whose targets went unchecked).
        """
        table = Table(["Measurement", "Result"])
        table.add(f"{NOT_MEASURED}: {reason}", NOT_MEASURED)
        self.tables = [table]
        self.summarize(rows, "—", "—", targets, f"{NOT_MEASURED}: {reason}")
        return self

    def verdicts(self) -> list[str]:
        """Every PASS/MISS/not-measured cell of the section's tables."""
        found = []
        for table in self.tables:
            if "Result" not in table.headers:
                continue
            column = table.headers.index("Result")
            found += [row[column] for row in table.rows]
        return found

    def render(self) -> str:
        parts = [f"## {self.title}", ""]
        for table in self.tables:
            parts += [table.render(), ""]
        if self.method:
            parts += ["How measured:", ""]
            parts += [f"- {line}" for line in self.method]
            parts.append("")
        if self.notes:
            parts += ["Notes:", ""]
            parts += [f"- {note}" for note in self.notes]
            parts.append("")
        parts.append(f"_Section time: {self.seconds:.0f} s._")
        return "\n".join(parts).rstrip() + "\n"
