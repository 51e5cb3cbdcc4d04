"""One table layout rendered three ways: Markdown, LaTeX (booktabs) and a standalone HTML page.

A :class:`Table` has grouped column headers (e.g. "Dice (%)" over "ours | paper | Δ"), row blocks
with a heading each (e.g. "4 labelled scans"), cells that may be bold (the best value of a column in
its block) and notes printed under the table.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from ssnet.io import atomic_path


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Block:
    title: str
    rows: list[list[Cell]]


@dataclass
class Table:
    title: str
    columns: list[tuple[str, str]]  # (group, name); group "" = a column of its own
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)

    def groups(self) -> list[tuple[str, int]]:
        """Consecutive runs of the same group: (group, span)."""
        out: list[tuple[str, int]] = []
        for group, _ in self.columns:
            if out and group and out[-1][0] == group:
                out[-1] = (group, out[-1][1] + 1)
            else:
                out.append((group, 1))
        return out

    @property
    def n_rows(self) -> int:
        return sum(len(b.rows) for b in self.blocks)


def _flat_header(group: str, name: str) -> str:
    return f"{group} {name}".strip() if group and name else (group or name)


def to_markdown(table: Table) -> str:
    header = [_flat_header(g, n) for g, n in table.columns]
    lines = [f"### {table.title}", ""]
    if table.n_rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for block in table.blocks:
            if block.title:
                lines.append("| " + " | ".join([f"*{block.title}*"] + [""] * (len(header) - 1)) + " |")
            for row in block.rows:
                lines.append("| " + " | ".join(f"**{c.text}**" if c.bold and c.text else c.text for c in row) + " |")
    else:
        lines.append("(no rows)")
    lines.append("")
    lines += [f"{note}  " for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "✓": r"\checkmark", "✗": "--", "†": r"$^\dagger$",
                 "≤": r"$\le$", "–": "--", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    for symbol, replacement in LATEX_SYMBOLS.items():
        out = out.replace(symbol, replacement)
    return out


def to_latex(table: Table) -> str:
    n = len(table.columns)
    lines = [r"\begin{table}", r"\centering", r"\small", f"\\caption{{{latex_escape(table.title)}}}",
             r"\begin{tabular}{l" + "c" * (n - 1) + "}", r"\toprule"]
    if any(group for group, _ in table.columns):
        cells, rules, col = [], [], 1
        for group, span in table.groups():
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(group)}}}" if span > 1 else latex_escape(group))
            if group and span > 1:
                rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
        lines.append(" & ".join(latex_escape(name if group else "") for group, name in table.columns) + r" \\")
    else:
        lines.append(" & ".join(latex_escape(name) for _, name in table.columns) + r" \\")
    lines.append(r"\midrule")
    for i, block in enumerate(table.blocks):
        if i:
            lines.append(r"\midrule")
        if block.title:
            lines.append(f"\\multicolumn{{{n}}}{{l}}{{\\textit{{{latex_escape(block.title)}}}}} \\\\")
        for row in block.rows:
            cells = [f"\\textbf{{{latex_escape(c.text)}}}" if c.bold and c.text else latex_escape(c.text) for c in row]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [r"\par\footnotesize " + latex_escape(note) for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 13px; margin: 16px; color: #222; }
table { border-collapse: collapse; margin-bottom: 10px; }
th, td { padding: 3px 8px; text-align: center; white-space: nowrap; }
td:first-child, th:first-child { text-align: left; }
thead tr:first-child th { border-top: 2px solid #222; }
thead tr:last-child th { border-bottom: 1px solid #222; }
tbody:last-of-type tr:last-child td { border-bottom: 2px solid #222; }
tr.block th { text-align: left; font-style: italic; font-weight: normal; background: #f3f3f3; }
th.group { border-bottom: 1px solid #888; }
p.note { margin: 2px 0; max-width: 70em; }
p.warning { color: #a00; font-weight: bold; }
"""


def to_html(table: Table, extra_html: str = "") -> str:
    """A standalone page (shown by the Snakemake report in an iframe)."""
    esc = html.escape
    head = []
    if any(group for group, _ in table.columns):
        first = "".join(f'<th colspan="{span}" class="group">{esc(group)}</th>' if span > 1 and group
                        else f"<th>{esc(group)}</th>" for group, span in table.groups())
        second = "".join(f"<th>{esc(name if group else '')}</th>" for group, name in table.columns)
        head = [f"<tr>{first}</tr>", f"<tr>{second}</tr>"]
    else:
        head = ["<tr>" + "".join(f"<th>{esc(name)}</th>" for _, name in table.columns) + "</tr>"]
    body = []
    for block in table.blocks:
        rows = []
        if block.title:
            rows.append(f'<tr class="block"><th colspan="{len(table.columns)}">{esc(block.title)}</th></tr>')
        for row in block.rows:
            rows.append("<tr>" + "".join(f"<td><b>{esc(c.text)}</b></td>" if c.bold and c.text else f"<td>{esc(c.text)}</td>"
                                         for c in row) + "</tr>")
        body.append("<tbody>" + "".join(rows) + "</tbody>")
    if not table.n_rows:
        body.append(f'<tbody><tr><td colspan="{len(table.columns)}">(no rows)</td></tr></tbody>')
    notes = "".join(f'<p class="{"note warning" if note.startswith("WARNING") else "note"}">{esc(note)}</p>'
                    for note in table.notes)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(table.title)}</title>'
            f"<style>{HTML_STYLE}</style></head><body>\n<h3>{esc(table.title)}</h3>\n"
            f'<table class="results"><thead>{"".join(head)}</thead>{"".join(body)}</table>\n{notes}\n{extra_html}'
            "</body></html>\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_rendered(table: Table, markdown: str | Path | None = None, latex: str | Path | None = None,
                   html_path: str | Path | None = None) -> None:
    """Write whichever of the three renderings are asked for, atomically."""
    if markdown:
        write_text(markdown, to_markdown(table))
    if latex:
        write_text(latex, to_latex(table))
    if html_path:
        write_text(html_path, to_html(table))
