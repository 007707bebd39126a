"""The picture shown instead of an image that cannot be shown, with the reason in it."""

from __future__ import annotations

import textwrap
from html import escape

_WIDTH = 256
_LINE_CHARS = 34
_MAX_LINES = 8


def placeholder_svg(reason: str) -> bytes:
    """A grey square with ``reason`` written in it (escaped: a reason may quote the file)."""
    lines = textwrap.wrap(reason, _LINE_CHARS)[:_MAX_LINES] or ["no picture"]
    text = "".join(
        f'<text x="12" y="{40 + 18 * i}" font-size="13" font-family="sans-serif" '
        f'fill="#333">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_WIDTH}" '
        f'viewBox="0 0 {_WIDTH} {_WIDTH}"><title>{escape(reason)}</title>'
        f'<rect width="100%" height="100%" fill="#e4e4e4"/>'
        f'<text x="12" y="20" font-size="13" font-family="sans-serif" font-weight="bold" '
        f'fill="#900">cannot show this image</text>{text}</svg>'
    ).encode()
