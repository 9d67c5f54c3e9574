"""A self-contained HTML report: verdict, metric tables with intervals, an inline SVG plot, and
per prompt the base / adapter / reference videos side by side (relative paths in the folder)."""

from __future__ import annotations

import html
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:78rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.pass{color:#17803d}.fail{color:#b42318}.muted{color:#666}
video{width:192px;height:auto;image-rendering:pixelated;background:#000}
figure{display:inline-block;margin:0 .6rem .6rem 0}figcaption{font-size:.8rem;color:#555}
"""

_SCRIPT = """
(function(){
  var vids=document.querySelectorAll('video'), ok=0, bad=0;
  function show(){document.getElementById('videos-loaded').textContent=ok;
    document.getElementById('videos-failed').textContent=bad;}
  vids.forEach(function(v){
    if(v.readyState>=2){ok++;}
    else{v.addEventListener('loadeddata',function(){ok++;show();},{once:true});
         v.addEventListener('error',function(){bad++;show();},{once:true});}
  });
  show();
})();
"""


def render_report(metrics: dict[str, Any]) -> str:
    """The page for one `metrics.json` (with its `files` section: relative video paths)."""
    e = html.escape
    verdict = metrics["verdict"]
    reasons = "".join(f"<li>{e(r)}</li>" for r in metrics["reasons"]) or "<li>every rule held</li>"
    n_videos = _count_videos(metrics)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>ltx-lora evaluation: {e(metrics["adapter_name"])}</title><style>{_STYLE}</style>
</head><body>
<h1>Evaluation of {e(metrics["adapter_name"])}</h1>
<p id="verdict">Verdict: <strong class="{verdict}">{verdict}</strong></p>
<ul id="reasons">{reasons}</ul>
<p class="muted">Rule: {e(metrics["rule"])}</p>
<p class="muted">Base model {e(metrics["base_model"])}; {metrics["n_references"]} reference
clips; {metrics["n_samples"]} prompt × seed pairs; prompts from {e(metrics["suite_source"])}.
Backends: {e(", ".join(f"{k} = {v}" for k, v in metrics["backends"].items()))}.</p>
<p class="muted" id="video-status">videos loaded: <span id="videos-loaded">0</span> /
<span id="videos-total">{n_videos}</span>, failed: <span id="videos-failed">0</span></p>
<h2>Fidelity per prompt</h2>{_plot(metrics)}
<h2>Scores</h2>{_score_table(metrics)}
{_unavailable(metrics)}
<h2>Samples (base | adapter | [champion |] reference)</h2>{_samples(metrics)}
<script>{_SCRIPT}</script>
</body></html>
"""


def _count_videos(metrics: dict[str, Any]) -> int:
    per_row = len(metrics["files"]["samples"][0]) if metrics["files"]["samples"] else 0
    return len(metrics["per_sample"]) * (per_row + bool(metrics["files"]["references"]))


def _interval(metrics: dict[str, Any], name: str) -> str:
    s = metrics["stats"].get(name)
    if s is None:
        return ""
    extra = f", Wilcoxon p {s['wilcoxon_p']:.3f}" if s.get("wilcoxon_p") is not None else ""
    return f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}] ({s['confidence']:.0%}){extra}"


def _score_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.4f}</td><td>{_interval(metrics, k)}</td>"
        f"<td class='muted'>{html.escape(metrics['score_backends'].get(k, ''))}</td></tr>"
        for k, v in metrics["scores"].items()
        if not k.endswith(("_ci_low", "_ci_high"))
    )
    head = "<tr><th>score</th><th>value</th><th>interval</th><th>backend@weights</th></tr>"
    return f'<table id="scores">{head}{rows}</table>'


def _unavailable(metrics: dict[str, Any]) -> str:
    if not metrics["unavailable"]:
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>unavailable: {html.escape(v)}</td></tr>"
        for k, v in metrics["unavailable"].items()
    )
    return f'<h2>Not measured</h2><table id="unavailable">{rows}</table>'


def _plot(metrics: dict[str, Any]) -> str:
    """Inline SVG: per prompt, mean fidelity of base (grey) and adapter (blue) over seeds."""
    prompts: dict[str, dict[str, list[float]]] = {}
    for row in metrics["per_sample"]:
        if row["group"] == "prior_preservation":
            continue
        p = prompts.setdefault(row["prompt"], {"base": [], "adapter": []})
        for side in ("base", "adapter"):
            p[side].append(row[side]["fidelity"])
    values = [v for p in prompts.values() for side in p.values() for v in side] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    width, left, row_h = 640, 260, 26

    def x(v: float) -> float:
        return left + 20 + (v - lo) / span * (width - left - 40)

    parts = []
    for i, (prompt, sides) in enumerate(prompts.items()):
        y = 20 + i * row_h
        b, a = (sum(sides[s]) / len(sides[s]) for s in ("base", "adapter"))
        parts.append(
            f'<text x="4" y="{y + 4}" font-size="11">{html.escape(prompt[:40])}</text>'
            f'<line x1="{x(b):.1f}" y1="{y}" x2="{x(a):.1f}" y2="{y}" stroke="#999"/>'
            f'<circle cx="{x(b):.1f}" cy="{y}" r="5" fill="#888"><title>base {b:.4f}</title>'
            "</circle>"
            f'<circle cx="{x(a):.1f}" cy="{y}" r="5" fill="#2563eb"><title>adapter {a:.4f}</title>'
            "</circle>"
        )
    h = 40 + len(prompts) * row_h
    axis = (
        f'<text x="{left + 20}" y="{h - 4}" font-size="10">{lo:.3f}</text>'
        f'<text x="{width - 60}" y="{h - 4}" font-size="10">{hi:.3f}</text>'
    )
    return (
        f'<svg id="fidelity-plot" width="{width}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f"{''.join(parts)}{axis}</svg>"
        '<p class="muted">grey: base model, blue: adapter (mean fidelity over seeds)</p>'
    )


def _video(rel: str, caption: str) -> str:
    src = html.escape(rel, quote=True)
    return (
        f'<figure><video src="{src}" controls muted loop preload="auto" playsinline></video>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _samples(metrics: dict[str, Any]) -> str:
    refs = metrics["files"]["references"]
    out, current = [], None
    for i, (row, files) in enumerate(
        zip(metrics["per_sample"], metrics["files"]["samples"], strict=True)
    ):
        if row["prompt"] != current:
            current = row["prompt"]
            out.append(
                f"<h3>{html.escape(current)} <span class='muted'>({row['group']})</span></h3>"
            )
        cells = [
            _video(files[side], f"{side}, seed {row['seed']}, fidelity {row[side]['fidelity']:.4f}")
            for side in files  # base, adapter (, champion)
        ]
        if refs:
            cells.append(
                _video(refs[i % len(refs)], f"reference {refs[i % len(refs)].split('/')[-1]}")
            )
        out.append(f'<div class="sample">{"".join(cells)}</div>')
    return "".join(out)
