"""A self-contained HTML report: scores, verdict and base-vs-adapter stills per sample."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
table{border-collapse:collapse}
td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left}
.pass{color:#17803d}.fail{color:#b42318}.unscored{color:#666}
img{image-rendering:pixelated;width:128px;height:auto;margin-right:4px}
"""


def still_png(frames: np.ndarray) -> str:
    """First, middle and last frame side by side, as a data: URI (the report has no side files)."""
    picks = [frames[0], frames[len(frames) // 2], frames[-1]]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(picks, axis=1)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render_report(metrics: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    """The page: `samples` rows carry prompt, seed, per-side scores and stills (data URIs)."""
    verdict = metrics["verdict"]
    score_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.4f}</td></tr>" for k, v in metrics["scores"].items()
    )
    sample_rows = "".join(_sample_row(s) for s in samples)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>ltx-lora evaluation: {html.escape(metrics["adapter_name"])}</title><style>{_STYLE}</style>
</head><body>
<h1>Evaluation of {html.escape(metrics["adapter_name"])}</h1>
<p>Verdict: <strong class="{verdict}">{verdict}</strong> — {html.escape(metrics["rule"])}</p>
<table>{score_rows}</table>
<p>Base model {html.escape(metrics["base_model"])}; {metrics["n_references"]} reference clips;
scores from backend <code>{html.escape(metrics["backend"])}</code>.</p>
<h2>Samples (base | adapter)</h2>
<table><tr><th>prompt</th><th>seed</th><th>base</th><th>adapter</th></tr>{sample_rows}</table>
</body></html>
"""


def _sample_row(s: dict[str, Any]) -> str:
    cells = "".join(
        f'<td><a href="{side["path"]}"><img src="{side["still"]}" alt="{name}"></a>'
        f"<br>{side['score']:.4f}</td>"
        for name, side in (("base", s["base"]), ("adapter", s["adapter"]))
    )
    return f"<tr><td>{html.escape(s['prompt'])}</td><td>{s['seed']}</td>{cells}</tr>"
