"""A self-contained HTML page from the Markdown the comparison report writes.

A small converter of our own that understands what :func:`inflow.report.document.render_markdown` writes
(headings, paragraphs, bullet lists, pipe tables, bold, inline code, images), so the report needs no Markdown
package; every image is inlined as a base64 ``data:`` URI and the styles are inline, so the page references no
other file.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 3px}
figure{margin:1em 0}img{max-width:100%}h1,h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def _data_uri(image_dir: Path, src: str) -> str:
    """A PNG of the report as a base64 ``data:`` URI."""
    path = image_dir / src
    if path.suffix.lower() != ".png" or not path.is_file():
        raise ValueError(f"image {src!r} of the report is not a PNG file under {image_dir}: draw the figures there "
                         "first (write_report does) or pass the folder that holds them")
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _inline(text: str, image_uri: Callable[[str], str]) -> str:
    """One line of Markdown text as HTML: escaped, then code spans, images and bold."""
    kept: list[str] = []

    def keep(fragment: str) -> str:
        kept.append(fragment)
        return f"\x00{len(kept) - 1}\x00"

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", lambda m: keep(f"<code>{m.group(1)}</code>"), text)
    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)",
                  lambda m: keep(f'<img src="{image_uri(html.unescape(m.group(2)))}" alt="{m.group(1)}">'), text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.sub(r"^\||\|$", "", line.strip()).split("|")]


def _table_html(lines: Sequence[str], inline: Callable[[str], str]) -> str:
    rows = [_cells(line) for line in lines]
    header, aligns = [], [""] * max(len(r) for r in rows)
    if len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1]):
        header, aligns, rows = rows[0], [' style="text-align:right"' * c.endswith(":") for c in rows[1]], rows[2:]
    head = "<tr>" + "".join(f"<th{a}>{inline(c)}</th>" for c, a in zip(header, aligns)) + "</tr>\n" if header else ""
    body = "".join("<tr>" + "".join(f"<td{a}>{inline(c)}</td>" for c, a in zip(row, aligns)) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n{body}</tbody>\n</table>"


ITEM = re.compile(r"\s*[-*]\s+")  # a bullet list item


def _markdown_to_html(text: str, image_uri: Callable[[str], str]) -> str:
    """The block structure of the Markdown: ``#`` headings, pipe tables, ``-``/``*`` lists and paragraphs."""
    lines, out, i = text.splitlines(), [], 0
    inline = functools.partial(_inline, image_uri=image_uri)
    while i < len(lines):
        line = lines[i].strip()
        start = i
        if not line:
            i += 1
        elif heading := re.match(r"(#{1,6})\s+(.*)", line):
            level = len(heading.group(1))
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
        elif line.startswith("|"):
            while i < len(lines) and lines[i].strip().startswith("|"):
                i += 1
            out.append(_table_html(lines[start:i], inline))
        elif ITEM.match(line):
            while i < len(lines) and ITEM.match(lines[i]):
                i += 1
            items = (ITEM.sub("", item, count=1) for item in lines[start:i])
            out.append("<ul>\n" + "".join(f"<li>{inline(item)}</li>\n" for item in items) + "</ul>")
        else:
            while i < len(lines) and lines[i].strip() and not re.match(r"\s*(#|\|)", lines[i]) \
                    and not ITEM.match(lines[i]):
                i += 1
            content = inline(" ".join(s.strip() for s in lines[start:i]))
            alone = re.fullmatch(r"<img [^>]*>", content)
            out.append(f"<figure>{content}</figure>" if alone else f"<p>{content}</p>")
    return "\n".join(out)


def render_html(markdown_text: str, image_dir: Path) -> str:
    """A self-contained HTML page of :func:`render_markdown`'s output: images (paths relative to ``image_dir``)
    inlined as base64 ``data:`` URIs, styles inline; the page references no other file."""
    heading = re.search(r"^#\s+(.*)$", markdown_text, flags=re.MULTILINE)
    title = html.escape(heading.group(1) if heading else "report")
    body = _markdown_to_html(markdown_text, lambda src: _data_uri(Path(image_dir), src))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
