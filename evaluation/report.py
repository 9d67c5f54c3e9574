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
video,img.condition{width:192px;height:auto;image-rendering:pixelated;background:#000}
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
  // conditioning images: counted once decoded (naturalWidth > 0), like the videos
  var imgs=document.querySelectorAll('img.condition'), seen=0;
  function shown(){document.getElementById('images-loaded').textContent=seen;}
  imgs.forEach(function(i){
    if(i.complete&&i.naturalWidth>0){seen++;}
    else{i.addEventListener('load',function(){seen++;shown();},{once:true});}
  });
  shown();
})();
"""


def render_report(metrics: dict[str, Any]) -> str:
    """The page for one `metrics.json` (with its `files` section: relative video paths)."""
    e = html.escape
    verdict = metrics["verdict"]
    reasons = "".join(f"<li>{e(r)}</li>" for r in metrics["reasons"]) or "<li>every rule held</li>"
    n_videos = _count_videos(metrics)
    n_images = sum(not f.endswith(".mp4") for c in _conditions(metrics) for f in c)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>ltx-lora evaluation: {e(metrics["adapter_name"])}</title><style>{_STYLE}</style>
</head><body>
<h1>Evaluation of {e(metrics["adapter_name"])}</h1>
<p id="verdict">Verdict: <strong class="{verdict}">{verdict}</strong></p>
<ul id="reasons">{reasons}</ul>
<p class="muted">Rule: {e(metrics["rule"])}</p>
<h2>Rules and their evidence</h2>{_rules(metrics)}
<p id="mode">Mode: <strong>{e(_mode(metrics)["name"])}</strong>
<span class="muted">({e(_mode(metrics)["source"])})</span></p>
<p class="muted">Base model {e(metrics["base_model"])}; {metrics["n_references"]} reference
clips; {metrics["n_samples"]} prompt × seed pairs; prompts from {e(metrics["suite_source"])}.
Backends: {e(", ".join(f"{k} = {v}" for k, v in metrics["backends"].items()))}.</p>
<p class="muted" id="video-status">videos loaded: <span id="videos-loaded">0</span> /
<span id="videos-total">{n_videos}</span>, failed: <span id="videos-failed">0</span>;
images loaded: <span id="images-loaded">0</span> / <span id="images-total">{n_images}</span></p>
<h2>Fidelity lift per prompt (adapter − base)</h2>{_plot(metrics)}
<h2>Scores</h2>{_score_table(metrics)}
{_unavailable(metrics)}
<h2>Samples ({e(_columns(metrics))})</h2>{_samples(metrics)}
<script>{_SCRIPT}</script>
</body></html>
"""


def _mode(metrics: dict[str, Any]) -> dict[str, Any]:
    return metrics.get("mode") or {"name": "text_to_video", "source": "default"}


def _columns(metrics: dict[str, Any]) -> str:
    conditioned = any(_conditions(metrics))
    return ("conditioning | " if conditioned else "") + "base | adapter | [champion |] reference"


def _conditions(metrics: dict[str, Any]) -> list[list[str]]:
    """Per sample row, its conditioning files (none in a text-only mode or an older record)."""
    return metrics["files"].get("conditions") or [[] for _ in metrics["per_sample"]]


def _count_videos(metrics: dict[str, Any]) -> int:
    per_row = len(metrics["files"]["samples"][0]) if metrics["files"]["samples"] else 0
    rows = len(metrics["per_sample"]) * (per_row + bool(metrics["files"]["references"]))
    return rows + sum(f.endswith(".mp4") for c in _conditions(metrics) for f in c)


def _interval(metrics: dict[str, Any], name: str) -> str:
    s = metrics["stats"].get(name)
    if s is None:
        return ""
    if s.get("ci_low") is None:
        return f"no interval: {s['n_prompts']} prompt(s)"
    extra = f", p {s['p_value']:.4f}" if s.get("p_value") is not None else ""
    if s.get("sufficient") is False:
        extra += f", too few prompts (< {s['min_prompts']})"
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


def _rules(metrics: dict[str, Any]) -> str:
    """One row per applied rule: held or not, and what it looked at."""
    rows = []
    for name, held in metrics.get("checks", {}).items():
        ev = metrics.get("evidence", {}).get(name, {})
        cls, word = ("pass", "held") if held else ("fail", "broken")
        rows.append(
            f"<tr><th>{html.escape(name)}</th><td class='{cls}'>{word}</td>"
            f"<td>{html.escape(_evidence_text(ev))}</td></tr>"
        )
    head = "<tr><th>rule</th><th></th><th>evidence</th></tr>"
    return f'<table id="rules">{head}{"".join(rows)}</table>'


def _evidence_text(ev: dict[str, Any]) -> str:
    """'mean 0.0890, 95 % CI [0.0712, 0.1068] (t on per-prompt means, 8 prompts), d_z 2.10,
    one-sided t test p 0.0001' — or the plain values of a non-statistical rule."""
    if "ci" not in ev:
        return ", ".join(f"{k} {_num(v)}" for k, v in ev.items())
    low, high = (_num(v) for v in ev["ci"])
    n = ev.get("n_prompts", ev.get("n_clips"))
    unit = "prompts" if "n_prompts" in ev else "clips"
    parts = [
        f"mean {_num(ev['mean'])}",
        f"{ev['confidence']:.0%} CI [{low}, {high}] ({ev['interval']}, {n} {unit})",
    ]
    if ev.get("effect_dz") is not None:
        parts.append(f"d_z {ev['effect_dz']:.2f}")
    if "test" in ev:
        parts.append(f"{ev['test']}: p {_num(ev.get('p'))}")
    return ", ".join(parts)


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _plot(metrics: dict[str, Any]) -> str:
    """Inline SVG: per prompt, each seed's paired fidelity difference (small dots) and their mean
    (large dot), a zero line, and the lift's interval as a band: the spread the interval rests
    on, not only its mean."""
    prompts: dict[str, list[float]] = {}
    for row in metrics["per_sample"]:
        if row["group"] != "prior_preservation":
            diff = row["adapter"]["fidelity"] - row["base"]["fidelity"]
            prompts.setdefault(row["prompt"], []).append(diff)
    stats = metrics["stats"].get("fidelity_lift", {})
    band = [v for v in (stats.get("ci_low"), stats.get("ci_high")) if v is not None]
    values = [v for d in prompts.values() for v in d] + band + [0.0]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    width, left, row_h = 640, 260, 22
    h = 40 + len(prompts) * row_h

    def x(v: float) -> float:
        return left + 20 + (v - lo) / span * (width - left - 40)

    parts = [f'<line x1="{x(0):.1f}" y1="8" x2="{x(0):.1f}" y2="{h - 18}" stroke="#444"/>']
    if len(band) == 2:
        parts.insert(
            0,
            f'<rect x="{x(band[0]):.1f}" y="8" width="{x(band[1]) - x(band[0]):.1f}" '
            f'height="{h - 26}" fill="#2563eb" opacity="0.12"><title>lift interval '
            f"[{band[0]:.4f}, {band[1]:.4f}]</title></rect>",
        )
    for i, (prompt, diffs) in enumerate(prompts.items()):
        y = 20 + i * row_h
        mean = sum(diffs) / len(diffs)
        parts.append(f'<text x="4" y="{y + 4}" font-size="11">{html.escape(prompt[:40])}</text>')
        parts += [f'<circle cx="{x(d):.1f}" cy="{y}" r="2.5" fill="#999"/>' for d in diffs]
        parts.append(
            f'<circle cx="{x(mean):.1f}" cy="{y}" r="5" fill="#2563eb"><title>mean lift '
            f"{mean:.4f}</title></circle>"
        )
    axis = (
        f'<text x="{left + 20}" y="{h - 4}" font-size="10">{lo:.3f}</text>'
        f'<text x="{x(0) - 4:.1f}" y="{h - 4}" font-size="10">0</text>'
        f'<text x="{width - 60}" y="{h - 4}" font-size="10">{hi:.3f}</text>'
    )
    return (
        f'<svg id="fidelity-plot" width="{width}" height="{h}" xmlns="http://www.w3.org/2000/svg">'
        f"{''.join(parts)}{axis}</svg>"
        '<p class="muted">per prompt: grey, each seed\'s adapter − base fidelity; blue, their '
        "mean; shaded, the lift's interval; the line is no change</p>"
    )


def _video(rel: str, caption: str) -> str:
    src = html.escape(rel, quote=True)
    return (
        f'<figure><video src="{src}" controls muted loop preload="auto" playsinline></video>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _source(refs: list[str], clip: str | None) -> str | None:
    """The copied reference (`samples/reference-NN-<clip>`) the conditioning came from."""
    return next((r for r in refs if clip and r.endswith(f"-{clip}")), None)


def _condition(rel: str, caption: str) -> str:
    """A conditioning image (PNG) or reference video (mp4), captioned with its source clip."""
    if rel.endswith(".mp4"):
        return _video(rel, caption)
    src = html.escape(rel, quote=True)
    return (
        f'<figure><img class="condition" src="{src}" alt="conditioning">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _samples(metrics: dict[str, Any]) -> str:
    refs = metrics["files"]["references"]
    out, current = [], None
    rows = zip(
        metrics["per_sample"], metrics["files"]["samples"], _conditions(metrics), strict=True
    )
    kinds = _mode(metrics).get("conditioning", {})
    for i, (row, files, conditions) in enumerate(rows):
        if row["prompt"] != current:
            current = row["prompt"]
            out.append(
                f"<h3>{html.escape(current)} <span class='muted'>({row['group']})</span></h3>"
            )
        what = kinds.get(row["prompt"], {})
        caption = f"conditioning: {what.get('kind', '')} of {what.get('clip', '?')}"
        cells = [_condition(rel, caption) for rel in conditions]
        cells += [
            _video(files[side], f"{side}, seed {row['seed']}, fidelity {row[side]['fidelity']:.4f}")
            for side in files  # base, adapter (, champion)
        ]
        if refs:
            ref = _source(refs, what.get("clip")) or refs[i % len(refs)]
            cells.append(_video(ref, f"reference {ref.split('/')[-1]}"))
        out.append(f'<div class="sample">{"".join(cells)}</div>')
    return "".join(out)
