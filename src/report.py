"""Tabulate finished runs: ``python src/report.py logs/train/multiruns/<date> [--chart c.png]``."""

import argparse
import logging
import sys
from pathlib import Path

from seq2attn.report import ReportError, report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="multirun, outputs or result-file folder")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--chart", type=Path, help="PNG bar chart of test BLEU per variant")
    parser.add_argument("--export-dir", type=Path, help="write one result JSON per run here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        print(report(args.folder, args.out, args.chart, args.export_dir), end="")
    except ReportError as error:
        sys.exit(f"report: {error}")
