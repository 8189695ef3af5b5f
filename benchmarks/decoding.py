"""Decoding speed of a trained checkpoint, and the cost of scheduled sampling.

    python benchmarks/decoding.py --ckpt <checkpoint or run folder> [--root ../shared/data/multi30k]

Decoding: greedy and beam-5 over the test split in batches of 64 sentences; sentences per second
of search time (model loaded, tokenizer included), plus the whole-process wall time.
Scheduled sampling: training steps per second and target tokens per second at ratio 0.5 for the
exact step-by-step loop and for the parallel two-pass mode, against teacher forcing (ratio 1).
Writes benchmarks/results/decoding.json and decoding.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2attn.checkpoint import load_checkpoint
from seq2attn.config import DecodingSchema
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.module import token_nll
from seq2attn.tasks import data_config_for
from seq2attn.translation import translate_sentences

STARTED = time.perf_counter()
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder")
    parser.add_argument("--root", default=None, help="corpus folder (overrides data.root)")
    parser.add_argument("--batch-sentences", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--warmup-steps", type=int, default=5)
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.ckpt)
    overrides = OmegaConf.create({"root": args.root} if args.root else {})
    data = data_config_for(checkpoint.config["data"], overrides)
    splits = instantiate(OmegaConf.create(data["corpus"])).splits()
    report: dict = {"checkpoint": str(checkpoint.path), "machine": _machine()}

    for name, decoding in {
        "greedy": DecodingSchema(),
        "beam5": DecodingSchema(strategy="beam", beam_size=5, length_penalty=0.6),
    }.items():
        _, stats = translate_sentences(
            checkpoint.model,
            checkpoint.src_tokenizer,
            checkpoint.tgt_tokenizer,
            splits["test"].src,
            decoding,
            max_tokens=None,
            max_sentences=args.batch_sentences,
        )
        report[f"{name}_sent_s"] = stats.sentences / stats.seconds
        report[f"{name}_seconds"] = stats.seconds
    report["test_sentences"] = len(splits["test"])

    batches = _train_batches(checkpoint, splits["train"], args.batch_sentences)
    model = checkpoint.model.train()
    for mode, kwargs in {
        "teacher_forcing": {"teacher_forcing_ratio": 1.0},
        "step_ratio_0.5": {"teacher_forcing_ratio": 0.5},
        "two_pass_ratio_0.5": {"teacher_forcing_ratio": 0.5, "two_pass": True},
    }.items():
        if kwargs.get("two_pass") and not model.decoder.parallel:
            continue
        report[f"train_{mode}"] = _train_speed(
            model, batches, kwargs, args.warmup_steps, args.train_steps
        )
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["wall_seconds"] = time.perf_counter() - STARTED
    _write(report)


def _train_batches(checkpoint, pairs, sentences: int) -> list[tuple[torch.Tensor, ...]]:
    src_ids = checkpoint.src_tokenizer.encode(pairs.src)
    tgt_ids = checkpoint.tgt_tokenizer.encode(pairs.tgt)
    lengths = [len(s) for s in src_ids]
    targets = [len(t) for t in tgt_ids]
    sampler = TokenBudgetBatchSampler(lengths, targets, None, sentences, shuffle=True, seed=0)
    batches = []
    for indices in sampler:
        src = _pad([src_ids[i] for i in indices])
        tgt_in = _pad([[BOS_ID, *tgt_ids[i]] for i in indices])
        tgt_out = _pad([[*tgt_ids[i], EOS_ID] for i in indices])
        batches.append((src, torch.tensor([lengths[i] for i in indices]), tgt_in, tgt_out))
    return batches


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
    for r, ids in enumerate(rows):
        out[r, : len(ids)] = torch.tensor(ids)
    return out


def _train_speed(model: Seq2Seq, batches, kwargs: dict, warmup: int, steps: int) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens, began = 0, 0.0
    for i, (src, lengths, tgt_in, tgt_out) in enumerate(batches[: warmup + steps]):
        if i == warmup:
            tokens, began = 0, time.perf_counter()
        optimizer.zero_grad()
        output = model(src, lengths, tgt_in, **kwargs)
        n = int((tgt_out != PAD_ID).sum())
        (token_nll(output.logits, tgt_out) / n).backward()
        optimizer.step()
        tokens += n
    seconds = time.perf_counter() - began
    return {"steps_s": steps / seconds, "tok_s": tokens / seconds}


def _machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _write(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decoding.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        ("greedy decoding, sentences/s", f"{report['greedy_sent_s']:.1f}"),
        ("beam-5 decoding, sentences/s", f"{report['beam5_sent_s']:.1f}"),
    ]
    for key, value in report.items():
        if key.startswith("train_"):
            rows.append((f"{key[6:]} training, target tokens/s", f"{value['tok_s']:.0f}"))
    rows += [("peak RSS, MB", f"{report['peak_rss_mb']:.0f}"),
             ("whole process, s", f"{report['wall_seconds']:.1f}")]  # fmt: skip
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)
    (RESULTS / "decoding.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
