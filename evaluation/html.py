"""Self-contained HTML pages: inline CSS, images beside the page by relative links, no scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["figure", "page", "section", "table", "value_table"]

CSS = """
body { font-family: "Helvetica Neue", Arial, sans-serif; margin: 1.5em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.name { text-align: left; font-family: monospace; }
td.better { background: #c9f2c9; } td.worse { background: #f6c4c4; } td.ref { color: #666; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figures figure { margin: 0; } .figures img { max-width: 100%; height: auto; }
figcaption { font-size: 0.8em; color: #555; } .meta td { text-align: left; }
"""


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document with the report's stylesheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def section(title: str, parts: Sequence[str], anchor: str = "") -> str:
    """A titled section; ``anchor`` becomes its id for links from the summary table."""
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}>\n<h2>{escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def figure(image: str, caption: str, link: str | None = None) -> str:
    """An image by relative path, optionally linking to another version (the PDF)."""
    img = f'<img src="{escape(image)}" alt="{escape(caption)}" loading="eager">'
    if link:
        img = f'<a href="{escape(link)}">{img}</a>'
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """A table; each cell is (text, css class)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f'<td class="{cls}">{text}</td>' for text, cls in row) + "</tr>"
        for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def value_table(values: Mapping[str, object]) -> str:
    """A two-column key / value table (file metadata), values escaped."""
    rows = [[(escape(str(k)), "name"), (escape(str(v)), "")] for k, v in values.items()]
    return table(["key", "value"], rows).replace("<table>", '<table class="meta">', 1)
