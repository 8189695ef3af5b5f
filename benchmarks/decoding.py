"""Decoding speed of a trained checkpoint, and the cost of scheduled sampling.

    python -m benchmarks.decoding --ckpt <checkpoint, run folder or last> [--root <Multi30k folder>]

Decoding: greedy and beam-5 over the test split in batches of 64 sentences; sentences per second
of search time (model loaded, tokenizer included), plus the whole-process wall time.
Scheduled sampling: training steps per second and target tokens per second at ratio 0.5 for the
exact step-by-step loop and for the parallel two-pass mode, against teacher forcing (ratio 1).
Writes benchmarks/results/decoding.json and decoding.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import REPO, StepTimer, corpus, machine, shown, table, write_result
from seq2attn.config import DecodingSchema
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seq2attn.inference import Translator, data_config_for, load
from seq2attn.loss import token_nll
from seq2attn.models.seq2seq import Seq2Seq

STARTED = time.perf_counter()
DECODINGS = {
    "greedy": DecodingSchema(),
    "beam5": DecodingSchema(strategy="beam", beam_size=5, length_penalty=0.6),
}
# source, source lengths, target input (BOS + pieces), target output (pieces + EOS)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# training modes: Seq2Seq.forward's arguments
MODES: dict[str, dict[str, Any]] = {
    "teacher_forcing": {"teacher_forcing_ratio": 1.0},
    "step_ratio_0.5": {"teacher_forcing_ratio": 0.5},
    "two_pass_ratio_0.5": {"teacher_forcing_ratio": 0.5, "two_pass": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint file, run folder or last (the newest run under logs/train)",
    )
    parser.add_argument(
        "--root", default=shown(corpus()), help="the Multi30k folder (replaces data.root)"
    )
    parser.add_argument("--batch-sentences", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=30, help="timed steps per mode")
    parser.add_argument("--warmup-steps", type=int, default=5)
    args = parser.parse_args()

    translator = load(args.ckpt, REPO / "logs")
    data = data_config_for(translator.config["data"], {"root": args.root})
    splits = instantiate(OmegaConf.create(data["corpus"])).splits()
    report: dict[str, Any] = {
        "checkpoint": shown(translator.paths[0]),
        "machine": {**machine(), "date": time.strftime("%Y-%m-%d %H:%M")},
    }
    for name, decoding in DECODINGS.items():
        stats = translator.translate(
            splits["test"].src, decoding, max_tokens=None, max_sentences=args.batch_sentences
        ).stats
        report[f"{name}_sent_s"] = stats.sentences / stats.seconds
        report[f"{name}_seconds"] = stats.seconds
    report["test_sentences"] = len(splits["test"])

    batches = _train_batches(translator, splits["train"], args.batch_sentences)
    model = translator.model.train()
    assert isinstance(model, Seq2Seq), "training speed needs one model, not an ensemble"
    for mode, kwargs in MODES.items():
        if kwargs.get("two_pass") and not model.decoder.parallel:
            continue
        report[f"train_{mode}"] = _train_speed(
            model, batches, kwargs, args.warmup_steps, args.train_steps
        )
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["wall_seconds"] = time.perf_counter() - STARTED
    markdown = _markdown(report)
    write_result("decoding", report, markdown)
    print(markdown)


def _train_batches(translator: Translator, pairs: Any, sentences: int) -> list[Batch]:
    src_ids = translator.src_tokenizer.encode(pairs.src)
    tgt_ids = translator.tgt_tokenizer.encode(pairs.tgt)
    lengths = [len(s) for s in src_ids]
    targets = [len(t) for t in tgt_ids]
    sampler = TokenBudgetBatchSampler(lengths, targets, None, sentences, shuffle=True, seed=0)
    batches: list[Batch] = []
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


def _train_speed(
    model: Seq2Seq,
    batches: list[Batch],
    kwargs: dict[str, Any],
    warmup: int,
    steps: int,
) -> dict[str, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    timer = StepTimer()
    for src, lengths, tgt_in, tgt_out in batches[: warmup + steps]:
        timer.start()
        optimizer.zero_grad()
        output = model(src, lengths, tgt_in, **kwargs)
        n = int((tgt_out != PAD_ID).sum())
        (token_nll(output.logits, tgt_out) / n).backward()
        optimizer.step()
        timer.stop(target_tokens=n)
    timed = timer.steady(warmup)
    return {
        "steps_s": timed["steps"] / timed["seconds"],
        "tok_s": timed["totals"]["target_tokens"] / timed["seconds"],
    }


def _markdown(report: dict[str, Any]) -> str:
    rows = [
        ("greedy decoding, sentences/s", f"{report['greedy_sent_s']:.1f}"),
        ("beam-5 decoding, sentences/s", f"{report['beam5_sent_s']:.1f}"),
    ]
    for key, value in report.items():
        if key.startswith("train_"):
            rows.append((f"{key[6:]} training, target tokens/s", f"{value['tok_s']:.0f}"))
    rows += [
        ("peak RSS, MB", f"{report['peak_rss_mb']:.0f}"),
        ("whole process, s", f"{report['wall_seconds']:.1f}"),
    ]
    return table(["measure", "value"], rows)


if __name__ == "__main__":
    main()
