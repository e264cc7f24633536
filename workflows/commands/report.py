"""`mbrl report`: rebuild a compare's report from its finished runs."""

from __future__ import annotations

import argparse

from workflows.compare import write_compare_report
from workflows.report import terminal_summary

HELP = "rebuild the report (Markdown, HTML, plots) of a compare folder from its finished runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        help="a compare folder (runs/compare-<name>/) or any folder of run folders; may be a URL (s3://...)",
    )


def run(args: argparse.Namespace) -> int:
    data, html, markdown = write_compare_report(args.folder)
    print(f"{terminal_summary(data)}\n\nreport: {html}\n        {markdown}")
    return 0
