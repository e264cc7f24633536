"""`mbrl report`: rebuild a compare's report from its finished runs."""

from __future__ import annotations

import argparse

from mbrl_core.storage import is_url
from workflows.compare import report_compare
from workflows.remote_runs import readable_copy, upload_files, without_heavy_parts
from workflows.report import terminal_summary

HELP = "rebuild the report (Markdown, HTML, plots) of a compare folder from its finished runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder",
        help="a compare folder (runs/compare-<name>/) or any folder of run folders; may be a URL (s3://...)",
    )


def run(args: argparse.Namespace) -> int:
    with readable_copy(args.folder, keep=without_heavy_parts) as folder:
        data, paths = report_compare(folder)
        html, markdown = str(paths.html), str(paths.markdown)
        if is_url(args.folder):  # the report goes next to the runs, on the store
            html, markdown, *_ = upload_files(folder, [paths.html, paths.markdown, *paths.plots], args.folder)
    print(f"{terminal_summary(data)}\n\nreport: {html}\n        {markdown}")
    return 0
