"""Data pipeline at scale: 1M sentence pairs made by repeating Multi30k de-en.

    python -m benchmarks.data_scale [--pairs 1000000] [--root ../shared/data/multi30k]

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
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONF,
    REPO,
    corpus,
    machine,
    require,
    run_measured,
    shown,
    table,
    write_result,
)

GOALS = {"peak_rss_mb": 1500, "cached_start_s": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--root", default=shown(corpus()), help="the Multi30k folder")
    parser.add_argument("--workdir", default=".cache/bench-data")
    parser.add_argument("--phase", choices=["cold", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.phase:
        print(json.dumps(run_phase(args.phase, workdir)))
        return
    require("python -m benchmarks.data_scale", Path(args.root) / "train.de.gz")

    start = time.perf_counter()
    make_corpus(Path(args.root), workdir, args.pairs)
    report: dict[str, Any] = {"pairs": args.pairs, "make_corpus_s": time.perf_counter() - start}
    shutil.rmtree(workdir / "cache", ignore_errors=True)
    for phase in ("cold", "cached"):
        command = [sys.executable, "-m", "benchmarks.data_scale", "--phase", phase]
        log = workdir / f"{phase}.log"
        done = run_measured([*command, "--workdir", shown(workdir)], log, cwd=REPO)
        report[phase] = json.loads(log.read_text().splitlines()[-1])
        report[phase]["process_s"] = done.wall_s
    report["machine"] = machine()
    markdown = _markdown(report)
    write_result("data_scale", report, markdown)
    print(markdown)


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

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
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


def _markdown(report: dict[str, Any]) -> str:
    cold, cached = report["cold"], report["cached"]
    rss, start = f"< {GOALS['peak_rss_mb']} MB", f"< {GOALS['cached_start_s']} s"
    rows = [
        ("tokenise (SentencePiece training)", f"{cold['tokenise_s']:.1f} s", ""),
        ("encode (train/val/test, both sides)", f"{cold['encode_s']:.1f} s", ""),
        ("read + preprocess + cache writes", f"{cold['read_and_rest_s']:.1f} s", ""),
        ("cold build: setup to first batch", f"{cold['first_batch_s']:.1f} s", ""),
        ("cold build: peak RSS", f"{cold['peak_rss_mb']:.0f} MB", rss),
        ("cached start: setup to first batch", f"{cached['first_batch_s']:.1f} s", start),
        ("cached start: whole process", f"{cached['process_s']:.1f} s", ""),
        ("cached start: peak RSS", f"{cached['peak_rss_mb']:.0f} MB", rss),
        ("cache size on disk", f"{cold['cache_mb']:.0f} MB", ""),
    ]
    title = (
        f"# Data pipeline, {report['pairs']:,} pairs (Multi30k de-en repeated), "
        f"{report['machine']['cores']} CPUs\n"
    )
    footer = (
        f"Training pairs after filtering: {cold['train_pairs']:,}; source pieces: "
        f"{cold['train_tokens']:,}.\n"
    )
    return f"{title}\n{table(['measure', 'value', 'goal'], rows)}\n{footer}"


if __name__ == "__main__":
    main()
