"""Tabulate finished runs: ``python src/report.py logs/train/multiruns/<date> [--chart c.png]``.

Several folders or result files may be given; ``--into docs/results.md:cells`` refreshes the
generated block between ``<!-- report:cells -->`` and ``<!-- /report:cells -->`` of a page."""

import argparse
import logging
import sys
from pathlib import Path

from seq2attn.report import ReportError, report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "paths",
        type=Path,
        nargs="+",
        help="multirun, outputs or result-file folders, or result files",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--chart", type=Path, help="PNG bar chart of test BLEU per variant")
    parser.add_argument("--export-dir", type=Path, help="write one result JSON per run here")
    parser.add_argument(
        "--into", metavar="PAGE:SECTION", help="write the Markdown into this block of a page"
    )
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="keep fast-dev-runs and runs on limited batches (left out by default)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        into = None
        if args.into:
            page, _, section = args.into.rpartition(":")
            if not page or not section:
                raise ReportError(f"--into {args.into}: expected PAGE:SECTION")
            into = (Path(page), section)
        print(
            report(args.paths, args.out, args.chart, args.export_dir, into, args.include_debug),
            end="",
        )
    except ReportError as error:
        sys.exit(f"report: {error}")
