"""Average checkpoints of one run: ``python src/average.py <run> --out <run>/averaged.ckpt``.

A run folder (or its ``checkpoints/``) stands for its ``best-*.ckpt`` files, the top k by
validation BLEU that training keeps; ``--best N`` takes only the N best of them. Checkpoint files
may be given too. The averaged checkpoint loads in eval.py and translate.py like any other."""

import argparse
import logging
import sys
from pathlib import Path

from seq2attn.checkpoints import CheckpointError, save_checkpoint
from seq2attn.checkpoints.averaging import average_checkpoints, checkpoints_to_average

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", type=Path, nargs="+", help="run folders or checkpoint files")
    parser.add_argument("--out", type=Path, required=True, help="where to write the average")
    parser.add_argument("--best", type=int, help="from each folder, only its N best checkpoints")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        files = checkpoints_to_average(args.paths, args.best)
        save_checkpoint(average_checkpoints(files), args.out)
    except CheckpointError as error:
        sys.exit(f"average: {error}")
    logging.info("wrote %s, the average of %s", args.out, ", ".join(map(str, files)))
