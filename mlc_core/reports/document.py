"""A report as plain data (headings, paragraphs, tables) and its two renderings: text for the
terminal, markdown for Prefect artifacts.

Each report is built once as a :class:`Document`; the CLI prints :func:`to_text`, a flow
publishes :func:`to_markdown`. Paragraphs may mark words ``**strong**``: markdown keeps the
marks, text drops them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Table:
    """Rows of cells under a header; cells are rendered with ``str``."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    title: str | None = None


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


Block = Heading | Table | Bullets | str


@dataclass
class Document:
    """A title and the blocks below it, in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self


def number(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``-`` when it is undefined."""
    return "-" if value is None else f"{value:.{digits}f}"


def to_markdown(document: Document) -> str:
    """The document as markdown (a Prefect markdown artifact)."""
    parts = [f"# {document.title}"]
    for block in document.blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        else:
            parts.append(block)
    return "\n\n".join(parts) + "\n"


def _markdown_table(table: Table) -> str:
    lines = [
        "| " + " | ".join(table.header) + " |",
        "|" + "---|" * len(table.header),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in table.rows),
    ]
    if table.title:
        lines.insert(0, f"{table.title}\n")
    return "\n".join(lines)


def to_text(document: Document) -> str:
    """The document as plain text for a terminal, tables aligned in columns."""
    parts = [_plain(document.title)]
    for block in document.blocks:
        if isinstance(block, Heading):
            parts.append(_plain(block.text))
        elif isinstance(block, Table):
            parts.append(table_text(block))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"  - {_plain(item)}" for item in block.items))
        else:
            parts.append(_plain(block))
    return "\n".join(part for part in parts if part)


def table_text(table: Table) -> str:
    """One table as aligned text: numbers to the right, everything else to the left."""
    header = [_plain(cell) for cell in table.header]
    rows = [[_plain(str(cell)) for cell in row] for row in table.rows]
    widths = (
        [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        if rows
        else [len(cell) for cell in header]
    )
    numeric = [
        bool(rows) and all(_looks_numeric(row[i]) for row in rows) for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(header), line(["-" * width for width in widths]), *map(line, rows)]
    if table.title:
        lines.insert(0, _plain(table.title))
    return "\n".join(lines)


def _looks_numeric(cell: str) -> bool:
    stripped = cell.strip().lstrip("+-").replace(".", "", 1).replace(",", "")
    return stripped.isdigit() or cell.strip() == "-"


def _plain(text: str) -> str:
    return text.replace("**", "")
