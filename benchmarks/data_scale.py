"""Data pipeline at scale: 1M sentence pairs made by repeating Multi30k de-en.

    python benchmarks/data_scale.py [--pairs 1000000] [--root ../shared/data/multi30k]

Writes ``train.de/.en`` (the Multi30k training pairs repeated up to ``--pairs`` lines) plus the
real val/test files into ``--workdir``, then runs two fresh processes on the ``data=text_pairs``
config with the multi30k settings (joint unigram, vocab 8000): a *cold* build on an empty cache
(reading + preprocessing, SentencePiece training ("tokenise"), encoding into flat arrays, cache
writes) and a *cached start* (setup to the first training batch, nothing re-tokenised). Each
reports its wall time and peak RSS (``ru_maxrss``). Goals: peak RSS < 1.5 GB, cached start < 10 s.
Writes benchmarks/results/data_scale.json and data_scale.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
RESULTS = Path(__file__).resolve().parent / "results"
CONF = Path(__file__).resolve().parents[1] / "conf"
GOALS = {"peak_rss_mb": 1500, "cached_start_s": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument(
        "--root", default=os.environ.get("SEQ2ATTN_DATA", "../shared/data/multi30k")
    )
    parser.add_argument("--workdir", default=".cache/bench-data")
    parser.add_argument("--phase", choices=["cold", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.phase:
        print(json.dumps(run_phase(args.phase, workdir)))
        return

    start = time.perf_counter()
    make_corpus(Path(args.root), workdir, args.pairs)
    report = {"pairs": args.pairs, "make_corpus_s": time.perf_counter() - start}
    shutil.rmtree(workdir / "cache", ignore_errors=True)
    for phase in ("cold", "cached"):
        start = time.perf_counter()
        command = [sys.executable, __file__, "--phase", phase, "--workdir", str(workdir)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        report[phase] = json.loads(output.splitlines()[-1])
        report[phase]["process_s"] = time.perf_counter() - start
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    write(report)


def make_corpus(root: Path, workdir: Path, pairs: int) -> None:
    """``--pairs`` training lines per side by repeating Multi30k; val/test copied."""
    workdir.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        with gzip.open(root / f"train.{lang}.gz", "rt", encoding="utf-8") as file:
            lines = file.read().splitlines(keepends=True)
        with open(workdir / f"train.{lang}", "w", encoding="utf-8") as out:
            for written in range(0, pairs, len(lines)):
                out.writelines(lines[: pairs - written])
        for split in ("val", "test_2016_flickr"):
            shutil.copyfile(root / f"{split}.{lang}.gz", workdir / f"{split}.{lang}.gz")


def run_phase(phase: str, workdir: Path) -> dict:
    """One fresh process: build (cold) or load (cached) the data module and fetch a batch."""
    imported = time.perf_counter()
    from hydra import compose, initialize_config_dir

    from seq2attn.data import datamodule

    timings = {"tokenise_s": 0.0, "encode_s": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[name] += time.perf_counter() - start

        return wrapper

    datamodule.train_sentencepiece = timed("tokenise_s", datamodule.train_sentencepiece)
    datamodule.encode_split = timed("encode_s", datamodule.encode_split)
    files = {
        f"data.{split}_{side}": workdir / f"{name}.{lang}"
        for split, name in (("train", "train"), ("val", "val"), ("test", "test_2016_flickr"))
        for side, lang in (("src", "de"), ("tgt", "en"))
    }
    overrides = [f"{key}={value}" for key, value in files.items()]
    overrides += [f"paths.cache_dir={workdir / 'cache'}", "paths.output_dir=unused"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["data=text_pairs", *overrides])
    start = time.perf_counter()
    module = datamodule.build_datamodule(cfg.data)
    module.setup("fit")
    setup = time.perf_counter() - start
    loader = module.train_dataloader()
    batch = next(iter(loader))
    first_batch = time.perf_counter() - start
    return {
        "imports_s": start - imported,
        "setup_s": setup,
        "first_batch_s": first_batch,
        **timings,
        "read_and_rest_s": setup - timings["tokenise_s"] - timings["encode_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_pairs": len(loader.dataset),
        "train_tokens": int(loader.dataset.src.ids.size),
        "batch_shape": list(batch.src.shape),
        "cache_mb": sum(f.stat().st_size for f in (workdir / "cache").iterdir()) / 2**20,
    }


def write(report: dict) -> None:
    cold, cached = report["cold"], report["cached"]
    rows = [
        ("tokenise (SentencePiece training)", f"{cold['tokenise_s']:.1f} s", ""),
        ("encode (train/val/test, both sides)", f"{cold['encode_s']:.1f} s", ""),
        ("read + preprocess + cache writes", f"{cold['read_and_rest_s']:.1f} s", ""),
        ("cold build: setup to first batch", f"{cold['first_batch_s']:.1f} s", ""),
        ("cold build: peak RSS", f"{cold['peak_rss_mb']:.0f} MB", "< 1500 MB"),
        ("cached start: setup to first batch", f"{cached['first_batch_s']:.1f} s", "< 10 s"),
        ("cached start: whole process", f"{cached['process_s']:.1f} s", ""),
        ("cached start: peak RSS", f"{cached['peak_rss_mb']:.0f} MB", "< 1500 MB"),
        ("cache size on disk", f"{cold['cache_mb']:.0f} MB", ""),
    ]
    lines = [
        f"# Data pipeline, {report['pairs']:,} pairs (Multi30k de-en repeated), "
        f"{report['machine']['cpus']} CPUs",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        *(f"| {name} | {value} | {goal} |" for name, value, goal in rows),
        "",
        f"Training pairs after filtering: {cold['train_pairs']:,}; source pieces: "
        f"{cold['train_tokens']:,}.",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "data_scale.md").write_text(markdown)


if __name__ == "__main__":
    main()
