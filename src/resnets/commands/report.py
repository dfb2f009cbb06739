"""`resnets report`: one self-contained HTML page (and Markdown) from result directories."""

from __future__ import annotations

from ..report import build_report, check_rendered


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="build the HTML / Markdown report of experiments and runs",
        description="Collect experiment directories (`resnets experiment`), response analyses "
                    "(`resnets analyze responses`) and training runs (`resnets train`) into one "
                    "HTML page with the figures embedded, plus a Markdown twin for READMEs.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument("--markdown", default=None, help="Markdown file (default: OUT with .md)")
    p.add_argument("--check", action="store_true",
                   help="render the page in headless Chromium and fail on a missing figure or "
                        "table")
    p.add_argument("--screenshot", default=None, help="with --check: save a PNG of the page")
    p.set_defaults(func=run)


def run(args) -> int:
    res = build_report(args.dirs, args.out, args.markdown)
    print(f"wrote {res['html']} and {res['markdown']}: {res['sections']} sections, "
          f"{res['figures']} figures, {res['tables']} tables")
    if args.check:
        counts = check_rendered(args.out, args.screenshot)
        print(f"rendered in headless Chromium: {counts['loaded-figures']} figures, "
              f"{counts['rendered-tables']} tables" +
              (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    return 0
