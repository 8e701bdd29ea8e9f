"""index.html of a report: plain HTML, one stylesheet, one script, no network, relative paths.

Layout: a bar of synchronised controls (play/pause and a frame slider that drive every video on
the page, assets/report.js), a comparison table and a grid of videos when several samples folders
are shown, then one section per folder: the stats, the scheme picture and the videos of a samples
folder; the curves, stats and periodic samples of a training run.
"""

from __future__ import annotations

import datetime
import math
import shutil
from html import escape
from pathlib import Path
from urllib.parse import quote

ASSETS = Path(__file__).parent / "assets"
DISPLAY_PX = 192  # small videos are scaled up (pixelated) to about this size


def write_assets(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("report.css", "report.js"):
        shutil.copyfile(ASSETS / name, folder / name)


def render_page(sections, generator: str) -> str:
    from fdm_engine.report.build import SampleSection

    samples = [s for s in sections if isinstance(s, SampleSection)]
    body = [_controls()]
    if len(samples) > 1:
        body += [_comparison(samples), _grid(samples)]
    body += [_sample_section(s) if isinstance(s, SampleSection) else _training_section(s) for s in sections]
    title = "fdm report: " + ", ".join(s.run.path.name for s in sections)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{generator}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/report.css">
</head>
<body>
<header><h1>{escape(title)}</h1><p class="muted">written {stamp} by <code>fdm report</code></p></header>
{"".join(body)}
<script src="assets/report.js"></script>
</body>
</html>
"""


def _controls() -> str:
    return """<nav id="controls" aria-label="synchronised playback">
<button id="sync-play" type="button">play</button>
<button id="sync-prev" type="button" title="previous frame">&#9664;</button>
<input id="sync-frame" type="range" min="0" max="0" value="0" step="1" aria-label="frame">
<button id="sync-next" type="button" title="next frame">&#9654;</button>
<span id="sync-label">frame 0</span>
<span class="muted">every video plays and seeks together (space: play/pause, arrows: one frame)</span>
</nav>
"""


# --------------------------------------------------------------------------------- samples


def _comparison(samples) -> str:
    head = ("folder", "scheme", "sampler", "model", "videos", "T", "given", "K", "jobs", "rounds", "NFE",
            "wall s", "frames/s", "PSNR dB", "SSIM", "FVD")
    rows = []
    for s in samples:
        c, st, m = s.run.config, s.run.stats(), s.run.metrics
        cells = (f'<a href="#{s.name}">{escape(s.run.path.name)}</a>', escape(str(c.get("scheme", "–"))),
                 escape(_sampler(c)), escape(str(c.get("model", "–"))), len(s.cells), c.get("length"),
                 c.get("n_obs"), s.run.plan.get("max_frames"), st.get("jobs"), st.get("rounds"), st.get("nfe"),
                 _num(st.get("wall_s"), 2), _num(st.get("frames_per_s"), 1), _num(m.get("psnr"), 2),
                 _num(m.get("ssim"), 4), _num(m.get("fvd"), 1))
        rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in cells) + "</tr>")
    ths = "".join(f"<th>{h}</th>" for h in head)
    return (f'<section id="comparison"><h2>Comparison</h2><table class="stats wide"><thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'
            '<p class="muted">PSNR/SSIM: <code>fdm eval video DIR</code> (eval.json); FVD: '
            '<code>fdm eval fvd REAL DIR --json &gt; DIR/fvd.json</code>. Blank: not measured.</p></section>\n')


def _grid(samples) -> str:
    ids = sorted({c.label for s in samples for c in s.cells}, key=lambda label: int(label.split()[-1]))
    head = "".join(f"<th>{escape(label)}</th>" for label in ids)
    rows = []
    for s in samples:
        by_label = {c.label: c for c in s.cells}
        tds = "".join(f"<td>{_cell_media(by_label[i], real=False) if i in by_label else ''}</td>" for i in ids)
        rows.append(f"<tr><th>{escape(s.run.path.name)}<br><span class='muted'>"
                    f"{escape(str(s.run.config.get('scheme', '')))}</span></th>{tds}</tr>")
    return (f'<section id="grid"><h2>Videos side by side</h2><table class="grid"><thead><tr><th></th>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></section>\n')


def _sample_section(s) -> str:
    run, c, st = s.run, s.run.config, s.run.stats()
    facts = [("folder", f"<code>{escape(str(run.path))}</code>")]
    if run.plan:
        facts += [("model", escape(str(c.get("model")))), ("sampler", escape(_sampler(c))),
                  ("scheme", escape(str(c.get("scheme")))),
                  ("frames", f"{c.get('length')} per video, {c.get('n_obs', 0)} given "
                             f"({escape(str(run.plan.get('conditioning', c.get('obs') or '–')))})"),
                  ("K / batch", f"{run.plan.get('max_frames')} frames per job, {run.plan.get('batch_size')} "
                                "jobs per network call"),
                  ("jobs", st["jobs"]), ("rounds", st["rounds"]),
                  ("NFE", f"{st['nfe']} ({st['network_calls']} network calls)"),
                  ("wall time", f"{_num(st['wall_s'], 2)} s ({_num(run.plan.get('network_s'), 2)} s in the network)"),
                  ("frames / s", _num(st["frames_per_s"], 2)), ("seed", c.get("seed"))]
        if "device" in run.plan:
            facts.append(("device", escape(f"{run.plan['device']}, {run.plan.get('precision', 'fp32')} precision")))
    else:
        facts.append(("stats", "no plan.json in this folder: only its videos are shown"))
    for key, label in (("psnr", "PSNR dB"), ("ssim", "SSIM"), ("fvd", "FVD")):
        if key in run.metrics:
            facts.append((label, _num(run.metrics[key], 4)))
    scheme = (f'<figure class="scheme"><img src="{_href(s.scheme_png)}" alt="scheme picture">'
              "<figcaption>the plan: a row per job, a column per frame</figcaption></figure>") if s.scheme_png else ""
    parts = [f'<section class="run" id="{s.name}"><h2>{escape(run.path.name)} <span class="muted">samples</span></h2>',
             f'<div class="summary">{_facts(facts)}{scheme}</div>', _notes(s.notes)]
    parts.append('<div class="videos">' + "".join(_cell_figure(cell) for cell in s.cells) + "</div></section>\n")
    return "".join(parts)


def _cell_figure(cell) -> str:
    given = (f'<img class="strip" src="{_href(cell.given_png)}" alt="given frames">'
             '<div class="muted">given (real) frames</div>') if cell.given_png else ""
    return (f'<figure class="cell"><figcaption>{escape(cell.label)}</figcaption>'
            f'<div class="pair">{_cell_media(cell, real=True)}</div>{given}</figure>')


def _cell_media(cell, real: bool) -> str:
    if cell.error:
        return f'<p class="bad">not shown: {escape(cell.error)}</p>'
    out = ""
    if real and cell.real is not None:
        out += _video(cell.real, "real")
    if cell.generated is not None:
        out += _video(cell.generated, "generated")
    return out


def _video(clip, label: str) -> str:
    scale = max(1, DISPLAY_PX // max(clip.width, clip.height))
    return (f'<div class="clip"><video class="sync" src="{_href(clip.src)}" data-fps="{clip.fps:g}" '
            f'data-frames="{clip.frames}" data-nobs="{clip.n_obs}" width="{clip.width * scale}" '
            f'height="{clip.height * scale}" muted playsinline preload="auto"></video>'
            f'<div class="note"><span>{label}</span> <span class="frame-note"></span></div></div>')


# --------------------------------------------------------------------------------- training


def _training_section(s) -> str:
    run, c, recs = s.run, s.run.config, s.run.records
    last = recs[-1] if recs else {}
    elapsed = last.get("time")
    facts = [("folder", f"<code>{escape(str(run.path))}</code>"),
             ("model", escape(f"{c.get('model')} ({c.get('preset')})")), ("dataset", escape(str(c.get("dataset")))),
             ("steps", f"{last.get('step', 0)} of {c.get('steps')}"),
             ("batch", f"{c.get('batch_size')} clips, grad accumulation {c.get('grad_accum', 1)}"),
             ("learning rate", f"{c.get('lr')} peak, {last.get('lr', '–')} now"),
             ("last loss", _num(last.get("loss"), 5)),
             ("steps / s", _num(last.get("step") / elapsed if elapsed and last.get("step") else None, 3) +
              f" mean, {_num(last.get('steps_per_s'), 3)} last"),
             ("samples / s", _num(last.get("samples_per_s"), 2) + " last"),
             ("training time", f"{_num(elapsed, 1)} s"),
             ("checkpoints", ", ".join(f"step {n}" for n in run.checkpoints) or "none")]
    parts = [f'<section class="run" id="{s.name}"><h2>{escape(run.path.name)} <span class="muted">training run</span>'
             "</h2>", _facts(facts), _notes(s.notes)]
    if s.plot_png:
        parts.append(f'<figure class="plot"><img src="{_href(s.plot_png)}" alt="loss, learning rate and steps/s">'
                     "<figcaption>loss, learning rate and steps/s by step (metrics.jsonl)</figcaption></figure>")
    if s.samples:
        parts.append("<h3>Periodic samples</h3>")
        for step, cells in s.samples.items():
            parts.append(f'<div class="step"><h4>step {step}</h4><div class="videos">'
                         + "".join(_cell_figure(cell) for cell in cells) + "</div></div>")
    else:
        parts.append('<p class="muted">no periodic samples (train with --sample-every N)</p>')
    return "".join(parts) + "</section>\n"


# --------------------------------------------------------------------------------- helpers


def _facts(rows) -> str:
    return '<table class="stats">' + "".join(f"<tr><th>{k}</th><td>{_cell(v)}</td></tr>" for k, v in rows) + "</table>"


def _notes(notes) -> str:
    return "".join(f'<p class="note-line">{escape(n)}</p>' for n in notes)


def _sampler(c: dict) -> str:
    if "sampler" not in c:
        return "–"
    eta = f", eta {c['eta']}" if c.get("eta") else ""
    return f"{c['sampler']}, {c.get('steps')} steps ({c.get('spacing')}{eta})"


def _num(v, digits: int) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:.{digits}f}"


def _cell(v) -> str:
    return "–" if v is None else str(v)


def _href(rel: str) -> str:
    return escape(quote(rel))
