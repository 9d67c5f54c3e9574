"""The dataset report: one self-contained HTML page (no external files, scripts or fonts).

Contact sheet of the curated clips, counts per bucket, what each choice threw away, a duration
histogram and every quarantined file or segment with its reason.
"""

from __future__ import annotations

import base64
import io
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from stagekit.files import write_text

REPORT_NAME = "report.html"
MAX_THUMBS = 300  # a contact sheet past this is too big to load; the page says so
THUMB_SIDE = 160
# Segmenting leaves each clip's thumbnail here (made from frames it already holds); the report
# reads them, falls back to decoding the clip (a reused one), and the folder is removed.
THUMBS_DIR = ".thumbs"
DISCARD_KEYS = ("letterbox", "aspect_crop", "resolution", "time", "fps")

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2;text-align:left}.num{text-align:right}
.sheet{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:170px;font-size:11px}figure img{max-width:160px;display:block}
.bar{fill:#4a78c2}.warning{color:#a00}.axis{font-size:10px}
"""


def write_report(out_dir: Path, rows: list[dict], dropped: list[dict], summary: dict) -> Path:
    """Write `out_dir/report.html` from the manifest rows and quarantine rows."""
    body = [
        f"<h1>Dataset report</h1>{_summary_table(summary)}",
        f"<h2>Train / validation split</h2>{_split_section(summary.get('split'))}",
        f"<h2>Contact sheet</h2>{_contact_sheet(out_dir, rows)}",
        f"<h2>Clips per bucket</h2>{_bucket_table(rows)}",
        f"<h2>Source durations</h2>{_histogram([_duration(r) for r in _by_source(rows)])}",
        f"<h2>Quarantined</h2>{_quarantine_table(dropped)}",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Dataset report</title><style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
    path = Path(out_dir) / REPORT_NAME
    write_text(path, page)
    return path


def _summary_table(summary: dict[str, Any]) -> str:
    cells = [
        ("inputs", summary["inputs"]),
        ("curated sources", summary.get("sources_curated", "")),
        ("clips", summary["curated"]),
        *((f"clips in {k}", v) for k, v in summary["splits"].items()),
        ("quarantined files", sum(summary["quarantined"].values())),
        ("dropped segments", sum(summary.get("segments_dropped", {}).values())),
    ]
    trs = "".join(
        f'<tr><th>{escape(k)}</th><td class="num" data-key="{escape(k)}">{v}</td></tr>'
        for k, v in cells
    )
    return f'<table id="summary">{trs}</table>'


def _split_section(report: dict[str, Any] | None) -> str:
    """The achieved shares against the target, and the warning when they miss its margin."""
    if not report:
        return "<p>No split was made.</p>"
    inside = ", ".join(report["split_sources"]) or "none (every source is whole)"
    cells = [
        ("target", f"{report['target']:.1%}"),
        ("validation share of clips", f"{report['clips_share']:.1%}"),
        ("validation share of duration", f"{report['duration_share']:.1%}"),
        ("margin", f"{report['margin_clips']:.1%} of clips, {report['margin_duration']:.1%} of "
         "duration"),
        ("sources split at a boundary", inside),
        ("clips dropped by the guard", str(report["guard_dropped"])),
    ]  # fmt: skip
    trs = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in cells)
    warning = report.get("warning")
    note = f'<p class="warning"><strong>Warning:</strong> {escape(warning)}</p>' if warning else ""
    return f'<table id="split">{trs}</table>{note}'


def _contact_sheet(out_dir: Path, rows: list[dict]) -> str:
    figures = []
    for row in rows[:MAX_THUMBS]:
        label = (
            f"{row['source']} {row['start_s']:.2f}-{row['end_s']:.2f} s · "
            f"{row['width']}x{row['height']}x{row['frames']} · {row['split']}"
        )
        thumb = _thumb(out_dir, row)
        figures.append(
            f'<figure><img alt="{escape(row["id"])}" src="{thumb}">'
            f"<figcaption>{escape(label)}</figcaption></figure>"
        )
    more = len(rows) - MAX_THUMBS
    note = f"<p>{more} more clips not shown.</p>" if more > 0 else ""
    empty = "<p>No clip was curated.</p>" if not rows else ""
    return f'<div class="sheet" id="contact-sheet">{"".join(figures)}</div>{note}{empty}'


def save_thumb(rgb: np.ndarray, out_dir: Path, clip_id: str) -> None:
    """Keep a clip's thumbnail (from its `[H, W, 3]` middle frame) for the report."""
    dest = Path(out_dir) / THUMBS_DIR / f"{clip_id}.jpg"
    dest.parent.mkdir(exist_ok=True)
    dest.write_bytes(_jpeg(Image.fromarray(rgb)))


def _thumb(out_dir: Path, row: dict[str, Any]) -> str:
    """The clip's middle frame as an inline JPEG data URI."""
    kept = out_dir / THUMBS_DIR / f"{row['id']}.jpg"
    if kept.is_file():
        data = kept.read_bytes()
    else:
        with av.open(str(out_dir / row["path"])) as container:
            decoded = container.decode(video=0)
            middle = next(f for i, f in enumerate(decoded) if i == row["frames"] // 2)
        data = _jpeg(middle.to_image())
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def _jpeg(img: Image.Image) -> bytes:
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _bucket_table(rows: list[dict]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups["x".join(str(v) for v in row["bucket"])].append(row)
    head = "".join(f"<th>{k.replace('_', ' ')} dropped</th>" for k in DISCARD_KEYS)
    trs = []
    for bucket, members in sorted(groups.items()):
        means = "".join(
            f'<td class="num">{_mean(m["discarded"][k] for m in members):.1%}</td>'
            for k in DISCARD_KEYS
        )
        trs.append(f'<tr><td>{bucket}</td><td class="num">{len(members)}</td>{means}</tr>')
    return (
        f'<table id="buckets"><tr><th>bucket (w x h x frames)</th><th>clips</th>{head}</tr>'
        + "".join(trs)
        + "</table><p>Mean fraction of each source removed by letterbox bars, the crop to the "
        "bucket's aspect ratio, downscaling, time not in any clip, and the frame-rate change.</p>"
    )


def _histogram(values: list[float], bins: int = 10) -> str:
    """An inline SVG bar chart of `values` (seconds)."""
    if not values:
        return "<p>No curated source.</p>"
    top = max(values) or 1.0
    width = top / bins
    counts = Counter(min(bins - 1, int(v / width)) for v in values)
    peak = max(counts.values())
    bars, labels = [], []
    for i in range(bins):
        h = 100 * counts[i] / peak
        x = 40 + i * 44
        bars.append(
            f'<rect class="bar" x="{x}" y="{110 - h:.1f}" width="40" height="{h:.1f}">'
            f"<title>{i * width:.1f}-{(i + 1) * width:.1f} s: {counts[i]}</title></rect>"
        )
        labels.append(f'<text class="axis" x="{x}" y="124">{i * width:.1f}</text>')
    return (
        f'<svg id="durations" width="{50 + bins * 44}" height="130" role="img" '
        f'aria-label="source durations in seconds">{"".join(bars)}{"".join(labels)}</svg>'
    )


def _quarantine_table(dropped: list[dict]) -> str:
    if not dropped:
        return "<p>Nothing was quarantined.</p>"
    counts = Counter((q["level"], q["reason"]) for q in dropped)
    tally = ", ".join(f"{n} {reason} ({level})" for (level, reason), n in sorted(counts.items()))
    trs = "".join(
        f'<tr><td class="source">{escape(q["source"])}</td><td class="reason">{q["reason"]}</td>'
        f"<td>{q['level']}{_span(q)}</td><td>{escape(q['detail'])}</td></tr>"
        for q in dropped
    )
    return (
        f"<p>{escape(tally)}</p>"
        '<table id="quarantine"><tr><th>file</th><th>reason</th><th>what</th><th>detail</th></tr>'
        f"{trs}</table>"
    )


def _span(q: dict[str, Any]) -> str:
    return "" if q["start_s"] is None else f" {q['start_s']:.2f}-{q['end_s']:.2f} s"


def _by_source(rows: list[dict]) -> list[dict]:
    return list({r["source"]: r for r in rows}.values())


def _duration(row: dict[str, Any]) -> float:
    return float(row["source_duration_s"])


def _mean(values: Any) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0
