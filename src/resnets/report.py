"""One self-contained report page (HTML, figures embedded) and its Markdown twin, built from
experiment directories (summary.json), response analyses (responses.json) and single runs
(config.json + metrics.jsonl).

Every figure is an ``<img data-figure=...>`` and every table a ``<table data-table=...>``; an
inline script records on ``<body>`` how many figures actually decoded, so a headless browser
can check the rendered page (:func:`check_rendered`).
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .analysis.curves import describe_setup, describe_setups, read_metrics, read_run_record
from .errors import UserError
from .version import versions

NOTE = ("CIFAR-10 numbers from the shared data are validation errors on a held-out split of "
        "the training set (the test split is not available here); the paper's are test "
        "errors. Each section says what its runs trained on and for how long; runs on a subset "
        "or a short schedule have errors far above the paper's: they show trends, not the "
        "paper's accuracy.")


class Section:
    def __init__(self, title: str, kind: str):
        self.title, self.kind = title, kind
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures = 0
        self.tables = 0

    def text(self, s: str) -> None:
        self.html.append(f"<p>{html.escape(s)}</p>")
        self.md.append(s + "\n")

    def bullets(self, items: list[str]) -> None:
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")

    def table(self, name: str, header: list[str], rows: list[list]) -> None:
        self.tables += 1
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                       for r in rows)
        self.html.append(f'<table data-table="{html.escape(name)}"><thead><tr>{head}</tr>'
                         f"</thead><tbody>{body}</tbody></table>")
        md = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
        self.md.append("\n".join(md) + "\n")

    def markdown_table(self, name: str, text: str) -> None:
        """A pipe table as written by the experiments (first line header, second rule)."""
        lines = [ln for ln in text.splitlines() if ln.startswith("|")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        if len(cells) >= 2:
            self.table(name, cells[0], cells[2:])
        rest = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("|")]
        if rest:
            self.bullets([ln.lstrip("- ").replace("**", "") for ln in rest])

    def figure(self, path: Path, caption: str, md_base: Path) -> None:
        if not path.is_file():
            raise UserError(f"figure {path} is missing; re-run the command that writes it.")
        self.figures += 1
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<figure><img data-figure="{html.escape(path.name)}" '
                         f'src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        # relative to the Markdown file, so the report and its figures can move together
        rel = Path(os.path.relpath(path.resolve(), md_base.resolve())).as_posix()
        self.md.append(f"![{caption}]({rel})\n")


def _experiment(d: Path, md_base: Path) -> Section:
    s = json.loads((d / "summary.json").read_text())
    its = s["settings"].get("iterations") or max((r.get("target_iterations") or
                                                   r["iterations"] for r in s["rows"]), default=0)
    state = "" if s.get("complete", True) else "; in progress"
    sec = Section(f"{s['title']} ({s['preset']} preset, {its:,} iterations{state})", "experiment")
    sec.text(f"Directory {d.name}. Settings beyond the recipe's defaults:")
    sec.table(f"{s['experiment']}-settings", ["setting", "value"],
              [[k, json.dumps(v) if isinstance(v, list | dict) else v]
               for k, v in sorted(s["settings"].items())])
    sec.text(_setups(d, s["rows"]))
    sec.markdown_table(s["experiment"], (d / "table.md").read_text())
    for name in s.get("figures", []):
        sec.figure(d / name, f"{s['title']}: {name}", md_base)
    sec.table(f"{s['experiment']}-runs", ["run", "model", "seed", "iterations", "train s",
                                          "device"],
              [[r["label"], r["model"] + (f" {r['model_kwargs']}" if r["model_kwargs"] else ""),
                r["seed"], r["iterations"], f"{r['wall_s']:.0f}", r["device"]]
               for r in s["rows"]])
    v = s["versions"]
    sec.text(f"Versions: resnets {v['resnets']}, torch {v['torch']}, torchvision "
             f"{v['torchvision']}, Python {v['python']}; whole experiment {s['wall_s']:.0f} s.")
    return sec


def _setups(d: Path, rows: list[dict]) -> str:
    """Each started run's data and schedule, read from its own config.json: one sentence when
    they agree."""
    setups = {}
    for r in rows:
        record = read_run_record(d / r["run_dir"])
        if record is not None:
            setups[r["label"]] = describe_setup(record["config"], record["run"])
    return describe_setups(setups) if setups else "No run has started."


def _responses(d: Path, md_base: Path) -> Section:
    s = json.loads((d / "responses.json").read_text())
    sec = Section("Fig. 7: standard deviation of layer responses", "responses")
    results = s["results"]
    sec.text(f"{results[0]['n']} {results[0]['split']} images of {results[0]['data_source']}; "
             f"each layer's number is the mean over channels of the per-channel std of its "
             f"output after BN, before ReLU / addition.")
    sec.figure(d / "responses.png", "layer responses, original order and sorted", md_base)
    rows = []
    for r in results:
        stds = [layer["std"] for layer in r["layers"]]
        rows.append([r["model"], len(stds), f"{sum(stds) / len(stds):.4f}", f"{max(stds):.4f}",
                     f"{min(stds):.4f}", f"{r['split']} ({r['n']} images)", r["checkpoint"]])
    sec.table("responses", ["model", "3x3 layers", "mean std", "max std", "min std",
                            "split", "checkpoint"], rows)
    return sec


def _run(d: Path, md_base: Path) -> Section:
    cfg = json.loads((d / "config.json").read_text())
    rows = read_metrics(d)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    c, run = cfg["config"], cfg["run"]
    sec = Section(f"Run {d.name}: {c['model']}", "run")
    sec.text(f"What ran: {describe_setup(c, run)}.")
    sec.table(f"run-{d.name}", ["model", "iterations", "seed", "final train error (%)",
                                "final val error (%)", "train s", "device", "precision"],
              [[c["model"], train[-1]["iteration"] if train else 0, c["seed"],
                f"{100 * train[-1]['train_error']:.2f}" if train else "-",
                f"{100 * val[-1]['val_error']:.2f}" if val else "-",
                f"{train[-1]['elapsed_s']:.0f}" if train else "-", run["device"],
                run["precision"]]])
    if (d / "curves.png").exists():
        sec.figure(d / "curves.png", f"{c['model']} error curves", md_base)
    return sec


def build_report(dirs: list[str | Path], out: str | Path, markdown: str | Path | None = None
                 ) -> dict:
    """Write the HTML report (and Markdown when asked); returns counts of figures / tables."""
    out = Path(out)
    md_path = Path(markdown) if markdown else out.with_suffix(".md")
    sections = []
    for d in map(Path, dirs):
        if (d / "summary.json").is_file():
            sections.append(_experiment(d, md_path.parent))
        elif (d / "responses.json").is_file():
            sections.append(_responses(d, md_path.parent))
        elif (d / "config.json").is_file() and (d / "metrics.jsonl").is_file():
            sections.append(_run(d, md_path.parent))
        else:
            raise UserError(f"{d} is not an experiment (summary.json), a response analysis "
                            f"(responses.json) or a training run (config.json + metrics.jsonl)"
                            f". Pass directories written by `resnets experiment`, `resnets "
                            f"analyze responses` or `resnets train`.")
    v = versions()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = (f"Generated {stamp} with resnets {v['resnets']}, torch {v['torch']}, torchvision "
           f"{v['torchvision']}, Python {v['python']} on {platform.machine()}.")
    figures = sum(s.figures for s in sections)
    tables = sum(s.tables for s in sections)
    body = "".join(f'<section data-kind="{s.kind}"><h2>{html.escape(s.title)}</h2>'
                   + "".join(s.html) + "</section>" for s in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnets report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} figcaption {{ color: #666; }}
.note {{ background: #fff8e1; padding: 0.6em 1em; border-left: 4px solid #f0b400; }}
</style></head>
<body data-expected-figures="{figures}" data-expected-tables="{tables}">
<h1>resnets: reproduction report</h1>
<p>{html.escape(env)}</p><p class="note">{html.escape(NOTE)}</p>
{body}
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img[data-figure]")];
  document.body.dataset.loadedFigures = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.renderedTables = document.querySelectorAll("table[data-table] tbody tr")
    .length ? document.querySelectorAll("table[data-table]").length : 0;
}});
</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    md = [f"# resnets: reproduction report\n\n{env}\n\n> {NOTE}\n"]
    for s in sections:
        md.append(f"## {s.title}\n\n" + "\n".join(s.md))
    md_path.write_text("\n".join(md))
    return {"html": str(out), "markdown": str(md_path), "sections": len(sections),
            "figures": figures, "tables": tables}


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


def check_rendered(page: str | Path, screenshot: str | Path | None = None) -> dict:
    """Render ``page`` in headless Chromium; compare decoded figures and tables with the counts
    the page expects. Raises ``UserError`` when something is missing; returns the counts."""
    browser = find_chromium()
    if browser is None:
        raise UserError("no Chromium found: install Debian's `chromium` package to check the "
                        "rendered report.")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        flags = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 "--virtual-time-budget=10000"]
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        if screenshot is not None:
            subprocess.run([*flags, f"--screenshot={Path(screenshot).resolve()}",
                            "--window-size=1200,6400", url], capture_output=True, timeout=120,
                           check=True)
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1) if body else ""))
    counts = {k: int(attrs.get(k, -1)) for k in ("expected-figures", "loaded-figures",
                                                  "expected-tables", "rendered-tables")}
    if counts["loaded-figures"] != counts["expected-figures"] or \
            counts["rendered-tables"] != counts["expected-tables"]:
        raise UserError(f"rendered report {page} is incomplete: {counts}")
    return counts
