"""The history's web page: ``cifar-bench history --html DIR`` writes DIR/index.html, one self-contained file.

No network is needed to view it (a cluster's users open it from a shared folder or a web server): the
charts are matplotlib SVG inline (text drawn as paths), the style is inline, there is no JavaScript.
Every string that comes from a result file (host names, versions, paths, reasons, run ids) goes
through :func:`html.escape`, so a result whose hostname holds ``<script>`` shows it as text.

Per series (system, configuration, case): the trend of fit time and throughput with change points
marked (each valid run one marker in the SVG group ``points-N``, invalid and tainted runs grey
crosses in ``invalid-N``, never figures), each change point with what changed between the segments,
the newest runs' verdict, and each run's details (environment, step breakdown, TensorBoard log folder
where present). Each chart's figure carries ``data-points`` (valid runs) for tools and tests. Then,
per system, the scaling curve of its configurations as they stand now (:mod:`bench.history.scaling`;
its figure's ``data-points`` = configurations with a speedup).
"""

from __future__ import annotations

import datetime as dt
import html
import io
from pathlib import Path
from typing import Any

from bench.core.files import atomic_write_bytes
from bench.core.tables import fmt, fmt_seconds
from bench.history.changepoints import ALPHA
from bench.history.series import Series, started
from bench.measure.steptable import markdown_breakdown
from bench.results.records import Record

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:72em;color:#222}
table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.bad{color:#a00}.ok{color:#060}pre{white-space:pre-wrap;font-size:85%}details{margin:2px 0}figure{margin:0}"""


def e(value: Any) -> str:
    """A value from a result file, as HTML text (None as '-')."""
    return "-" if value is None else html.escape(str(value), quote=True)


def chart_svg(s: Series, index: int) -> str:
    """Fit time and throughput over the runs of ``s`` as inline SVG (no text elements: text as paths)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    ax_t, ax_p = fig.subplots(2, 1, sharex=True)
    pos = {id(r): i + 1 for i, r in enumerate(s.runs)}  # x: the run's place in the history (1 = oldest)
    valid_x = [pos[id(r)] for r in s.valid]
    for ax, get, unit in ((ax_t, lambda r: r.fit_s, "fit_s [s]"), (ax_p, lambda r: r.throughput_img_s, "images/s")):
        ax.plot(valid_x, [get(r) for r in s.valid], "o-", color="tab:blue", ms=5, lw=1,
                gid=f"points-{index}" if ax is ax_t else f"throughput-{index}")
        bad = [r for r in s.runs if not r.valid and r.fit_s]
        if bad and ax is ax_t:
            ax.plot([pos[id(r)] for r in bad], [r.fit_s for r in bad], "x", color="grey", gid=f"invalid-{index}")
        for c in s.points:
            ax.axvline(pos[id(s.valid[c.index])] - 0.5, color="tab:red", ls="--", lw=1.2,
                       gid=f"change-{index}-{c.index}" if ax is ax_t else None)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    ax_p.set_xlabel("run (oldest first); red dashes: change points; grey x: not a figure")
    from matplotlib.ticker import MaxNLocator

    ax_p.xaxis.set_major_locator(MaxNLocator(integer=True))  # runs are counted: no tick at run 1.25
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _steps(s: Series) -> str:
    if not s.steps:
        return "<p>No change point (E-divisive means with a permutation test; docs/history.md).</p>"
    rows = "".join(
        f"<tr><td>run {st['run_number']}</td><td>{e(st['started_utc'])}<br>{e(st['run_id'])}</td>"
        f"<td>{fmt_seconds(st['median_before_s'])} &rarr; {fmt_seconds(st['median_after_s'])} "
        f"({st['ratio'] * 100 - 100:+.1f} %)</td><td>{st['p_value']:.3f}</td><td><ul>"
        + "".join(f"<li>{e(line)}</li>" for line in st["what_changed"] or ["no recorded fact differs"])
        + "</ul></td></tr>" for st in s.steps)
    return ("<table class='steps'><tr><th>change at</th><th>first run after</th><th>median fit_s</th>"
            f"<th>p</th><th>what changed between the segments</th></tr>{rows}</table>")


def _newest(s: Series) -> str:
    n = s.newest
    cls = "bad" if n.get("verdict") == "regression" else "ok"
    ratio = f" ({n['ratio'] * 100 - 100:+.1f} % vs the last stable segment, Holm p = {fmt(n.get('p_value'), '.3f')})" \
        if n.get("ratio") else ""
    notes = "".join(f"<li>{e(x)}</li>" for x in n.get("notes", []) + n.get("what_changed", []))
    return f"<p>Newest runs: <b class='{cls}'>{e(n.get('verdict'))}</b>{ratio}</p>" + (f"<ul>{notes}</ul>" if notes else "")


def _details(r: Record) -> str:
    env = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in sorted((r.environment or {}).items()))
    world = ", ".join((r.world or {}).get("hostnames") or [])
    steps = markdown_breakdown([r.result]) if r.result else []
    tb = Path(str((r.config or {}).get("out_dir") or "")) / "tensorboard" / r.run_id
    link = f"<p>TensorBoard logs: <a href='{e(tb.resolve().as_uri())}'>{e(tb)}</a></p>" \
        if (r.config or {}).get("out_dir") and tb.is_dir() else ""
    return (f"<details><summary>details</summary><p>nodes: {e(world)}</p>{link}"
            + (f"<pre>{e(chr(10).join(steps))}</pre>" if steps else "") + f"<table>{env}</table></details>")


def _runs(s: Series) -> str:
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{e(started(r))}</td><td>{e(r.run_id)}</td><td>{e(', '.join((r.world or {}).get('hostnames') or []))}</td>"
        f"<td>{fmt_seconds(r.fit_s) if r.valid else '-'}</td><td>{fmt(r.throughput_img_s if r.valid else None, '.0f')}</td>"
        f"<td class='{'ok' if r.valid else 'bad'}'>{'figure' if r.valid else e(r.problem)}</td><td>{_details(r)}</td></tr>"
        for i, r in reversed(list(enumerate(s.runs))))
    return ("<table class='runs'><tr><th>#</th><th>started (UTC)</th><th>run</th><th>nodes</th><th>fit_s</th>"
            f"<th>images/s</th><th>figure?</th><th></th></tr>{rows}</table>")


def _scaling(series: list[Series]) -> list[str]:
    """One section per system whose configurations as they stand now make a scaling curve."""
    from bench.history.scaling import NEWEST, curve_svg, scaling_rows

    parts = []
    for i, (system, rows, notes) in enumerate(scaling_rows(series)):
        table = "".join(
            f"<tr><td>{e(r['configuration'])}</td><td>{r['devices']}</td><td>{len(r['samples'])}</td>"
            f"<td>{e(max(started(x) for x in r['runs']))}</td>"
            f"<td>{fmt_seconds(r['fit_s'])}</td><td>{r['speedup']:.2f}x</td><td>{r['efficiency']:.0%}</td></tr>"
            for r in rows)
        parts.append(
            f"<section class='scaling' id='scaling-{i}'><h2>Scaling now{': ' + e(system) if system else ''}</h2>"
            f"<p>Each configuration's newest stable segment (the valid runs after its last change point, at most "
            f"{NEWEST}); speedup = median fit_s of the baseline case / median fit_s, efficiency = speedup / devices.</p>"
            + (f"<figure data-points='{len(rows)}' data-scaling='{i}'>{curve_svg(rows, i)}</figure>" if rows else "")
            + (f"<table><tr><th>configuration</th><th>devices</th><th>runs</th><th>newest run (UTC: a configuration "
               f"not run lately is compared with today's baseline)</th><th>median fit_s</th><th>speedup</th>"
               f"<th>efficiency</th></tr>{table}</table>" if rows else "")
            + "".join(f"<p>{e(n)}</p>" for n in notes) + "</section>")
    return parts


def page(series: list[Series], where: Path, level: float = ALPHA) -> str:
    """The whole page as HTML text."""
    parts = [f"<h1>cifar-bench history</h1><p>History {e(where)}; written "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; change points: E-divisive means "
             f"(Matteson &amp; James 2014) with a permutation test at {level:.0%} per series; the newest runs judged "
             "against the last stable segment with the verdicts' rule (docs/history.md).</p>"]
    for i, s in enumerate(series):
        parts.append(f"<section class='series' id='series-{i}'><h2>{e(s.label)}</h2>"
                     f"<figure data-points='{len(s.valid)}' data-change-points='{len(s.points)}' "
                     f"data-series='{i}'>{chart_svg(s, i)}</figure>{_steps(s)}{_newest(s)}"
                     f"<details><summary>{len(s.runs)} runs, newest first</summary>{_runs(s)}</details></section>")
    parts += _scaling(series)
    if not series:
        parts.append("<p>No runs in the history.</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cifar-bench history</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_site(series: list[Series], out: Path, where: Path, level: float = ALPHA) -> Path:
    """Write ``out``/index.html atomically; return its path."""
    path = Path(out) / "index.html"
    atomic_write_bytes(path, page(series, where, level).encode("utf-8"))
    return path
