"""Peer toolkits for the speed benchmark and the equal-budget runs: OpenNMT-py 3.5.1, JoeyNMT 2.3.0.

``install`` makes each tool's virtual environment, ``prepare_data`` writes the Multi30k de->en
text and its SentencePiece pieces, ``train`` trains one speed reference (R1 or R2) with one tool
and reads its steady-state throughput from the tool's own log, ``decode`` translates the test
set greedily or with beam 5 and ``bleu`` scores the detokenised output. Every child process runs
alone (never two at once) through ``benchmarks.common.run_measured``: stdout and stderr to a file
in the workspace, its wall time and peak resident memory measured.

Both tools see the same data and model: the same piece files (OpenNMT-py without transforms,
JoeyNMT at ``level: word`` without a tokenizer; both outputs are detokenised here with the same
SentencePiece model), the same vocabulary (every piece of train.de + train.en plus 4 specials:
``onmt_build_vocab`` with a shared vocabulary and no padding to a multiple of 8, and the same
piece list for both JoeyNMT sides), embeddings 256 (not tied), a 1-layer bidirectional GRU
encoder of 256 per direction, each tool's learned bridge (OpenNMT-py's maps each direction,
JoeyNMT's both at once) to a 1-layer GRU decoder of 512, dropout 0.2, Adam 1e-3 at a constant
rate, gradient norm clipping 1.0, batches of 64 sentences, seed 1234, CPU with torch's default
threads, every training pair kept. R1: Bahdanau (MLP) attention with input feeding; R2: Luong
general attention without input feeding.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sacrebleu
import sentencepiece as spm
import yaml

from benchmarks.common import run_measured

PEERS = ("opennmt", "joeynmt")
MODELS = ("r1", "r2")

# pip arguments after ``python3 -m venv``, one install command each
INSTALL_STEPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "opennmt": (
        ("torch==2.13.0",),
        ("--no-deps", "OpenNMT-py==3.5.1"),
        (
            "configargparse",
            "tensorboard",
            "pyyaml",
            "sacrebleu",
            "six",
            "rapidfuzz",
            "pyahocorasick",
            "sentencepiece",
            "pyonmttok",
            "spacy",
            "fasttext-wheel",
        ),
    ),
    "joeynmt": (
        ("torch==2.13.0",),
        ("joeynmt==2.3.0", "sentencepiece==0.2.0", "importlib_metadata"),
    ),
}
# succeeds only in a complete install: the entry points and what they import
IMPORT_PROBES = {
    "opennmt": "import onmt.bin.build_vocab, onmt.bin.train, onmt.bin.translate",
    "joeynmt": "import joeynmt.__main__",
}
STAMP = ".installed"

SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}  # name: Multi30k file stem
SRC, TGT = "de", "en"
BATCH_SENTENCES = 64
REPORT_EVERY = 50
CHECKPOINT_EVERY = 500  # ``minutes`` mode: OpenNMT-py's checkpoint interval
UNBOUNDED = 10**9  # steps, epochs or intervals never reached (a multiple of any report interval)
STOP_GRACE_S = 300.0  # after the stop signal, before SIGKILL

# how R1 and R2 differ, in each tool's words
ATTENTION: dict[str, dict[str, dict[str, Any]]] = {
    "r1": {
        "opennmt": {"global_attention": "mlp", "input_feed": 1},
        "joeynmt": {"attention": "bahdanau", "input_feeding": True},
    },
    "r2": {
        "opennmt": {"global_attention": "general", "input_feed": 0},
        "joeynmt": {"attention": "luong", "input_feeding": False},
    },
}
# a stopped OpenNMT-py run keeps its newest periodic checkpoint; JoeyNMT saves on SIGINT
STOP_SIGNALS = {"opennmt": signal.SIGTERM, "joeynmt": signal.SIGINT}

_TIMESTAMP = r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_OPENNMT_REPORT = re.compile(
    rf"^\[{_TIMESTAMP} INFO\] Step\s+(?P<step>\d+)(?:/\s*\d+)?;"
    r".*? bsz:\s*\d+/\s*(?P<tgt>\d+)/\s*\d+;",
    re.MULTILINE,
)
_JOEYNMT_REPORT = re.compile(
    rf"^{_TIMESTAMP} - INFO - joeynmt\.training - Epoch\s+\d+, Step:\s+(?P<step>\d+),"
    r".*?Tokens per Sec:\s+(?P<rate>\d+),",
    re.MULTILINE,
)


@dataclass
class Workspace:
    """Everything one benchmark run writes, under one folder."""

    root: Path

    @property
    def text(self) -> Path:
        """train|val|test.de|en as plain text, one sentence a line."""
        return self.root / "text"

    @property
    def pieces(self) -> Path:
        """The same files as space-separated SentencePiece pieces."""
        return self.root / "pieces"

    @property
    def spm_model(self) -> Path:
        return self.root / "spm.model"

    @property
    def joint_vocab(self) -> Path:
        """Every piece of train.de + train.en, most frequent first, one a line."""
        return self.pieces / "vocab.joint"

    @property
    def opennmt_vocab(self) -> Path:
        """The same pieces counted by onmt_build_vocab (``token\\tcount``), built on first use."""
        return self.root / "opennmt" / "vocab.shared"


@dataclass
class TrainResult:
    tool: str
    model: str
    tok_s: float  # steady-state target tokens (pieces + EOS) per second
    timed_steps: int
    peak_rss_mb: float  # of the training process
    wall_s: float  # the whole process
    checkpoint: Path  # after the last step (``minutes``: the newest complete one)
    log: Path
    steps: int  # the updates behind ``checkpoint`` (from its name; else the last reported step)


@dataclass
class DecodeResult:
    tool: str
    beam: int
    sent_s: float  # sentences / decode_s
    decode_s: float  # the tool's own decoding time: model loaded, start-up and loading excluded
    wall_s: float  # the whole process
    peak_rss_mb: float
    hypotheses: Path  # detokenised text, one line per test sentence, in input order


@dataclass
class _Report:
    """One training report: its step, log time (s) and the target tokens since the last one."""

    step: int
    time: float
    tokens: float


def install(tool: str, venv_root: Path) -> Path:
    """Create the venv <venv_root>/<tool> when missing (or when its stamp file is missing) and
    return its bin dir.

    A venv without the stamp whose tool already imports (made by the same commands before stamps
    existed) is stamped as it is; otherwise it is recreated from scratch. pip's output goes to
    <venv_root>/<tool>-install.log.
    """
    _check_tool(tool)
    venv = Path(venv_root).resolve() / tool
    if not (venv / STAMP).is_file():
        if not _imports(tool, venv / "bin"):
            _create_venv(tool, venv, venv.parent / f"{tool}-install.log")
        (venv / STAMP).write_text(f"{tool} ready\n")
    return venv / "bin"


def _imports(tool: str, bin_dir: Path) -> bool:
    python = bin_dir / "python"
    probe = [str(python), "-c", IMPORT_PROBES[tool]]
    return python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0


def _create_venv(tool: str, venv: Path, log: Path) -> None:
    venv.parent.mkdir(parents=True, exist_ok=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    steps = [("a virtual environment", ["python3", "-m", "venv", "--clear", str(venv)])]
    steps += [(_shown(packages), pip + list(packages)) for packages in INSTALL_STEPS[tool]]
    with log.open("w") as out:
        for number, (what, command) in enumerate(steps, start=1):
            # a step takes seconds to minutes: say which one runs and where its output goes
            print(
                f"installing {tool}, step {number} of {len(steps)}: {what} (output in {log})",
                file=sys.stderr,
                flush=True,
            )
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise RuntimeError(
                    f"installing {tool} failed at `{shlex.join(command)}`; see {log}"
                )
    if not _imports(tool, venv / "bin"):
        raise RuntimeError(f"{tool} was installed but does not import; see {log}")


def _shown(packages: tuple[str, ...]) -> str:
    names = [p for p in packages if not p.startswith("-")]
    return (
        "pip install "
        + " ".join(names[:3])
        + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    )


def prepare_data(multi30k: Path, spm_model: Path, root: Path) -> Workspace:
    """Plain-text and SentencePiece piece copies of Multi30k de-en under root.

    train, val and test (= test_2016_flickr) from multi30k/<split>.<lang>.gz, stripped; the
    pieces from spm_model (copied into the workspace, which detokenises with it later), and the
    joint piece vocabulary of the training pieces.
    """
    ws = Workspace(Path(root).resolve())
    for folder in (ws.text, ws.pieces):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm_model, ws.spm_model)
    processor = spm.SentencePieceProcessor(model_file=str(ws.spm_model))
    counts: Counter[str] = Counter()
    for split, name in SPLITS.items():
        for lang in (SRC, TGT):
            with gzip.open(Path(multi30k) / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [line.strip() for line in f]
            pieces = [" ".join(p) for p in processor.encode(lines, out_type=str)]
            _write_lines(ws.text / f"{split}.{lang}", lines)
            _write_lines(ws.pieces / f"{split}.{lang}", pieces)
            if split == "train":
                counts.update(piece for line in pieces for piece in line.split(" "))
    _write_lines(ws.joint_vocab, [piece for piece, _ in counts.most_common()])
    ws.opennmt_vocab.unlink(missing_ok=True)  # of earlier pieces
    return ws


def train(
    tool: str,
    model: str,
    ws: Workspace,
    bin_dir: Path,
    warmup: int = 50,
    steps: int = 200,
    minutes: float | None = None,
    seed: int = 1234,
) -> TrainResult:
    """Train ``model`` with ``tool`` for warmup + steps updates, or until stopped after
    ``minutes`` of wall time (then the newest checkpoint is kept), and measure it.

    Throughput, as seq2attn's: the target tokens that carry a loss (pieces + EOS, no padding, no
    BOS) of the steps after ``warmup``, divided by the wall time from the end of step ``warmup``
    to the end of the last timed step. Both tools log a report every ``report_every`` =
    gcd(warmup, steps, 50) steps, right after that step's update, stamped to the millisecond;
    the time is the difference of the stamps of the reports at step ``warmup`` and at the last
    timed step, and the tokens are the sum of the reports' per-window figures after ``warmup``:

    - OpenNMT-py: ``bsz: src/tgt/sents`` holds n_words / n_batchs of the window, and a window
      has one batch per step (no accumulation), so tokens = bsz tgt x steps of the window
      (rounded to a token per batch: < 0.1 %). n_words (utils/loss.py ``_stats``) counts the
      non-padding positions of target = tgt[:, 1:] (``tgt_shift_index`` 1), and a target is
      [BOS] + pieces + [EOS] (inputters/text_utils.py ``numericalize``): pieces + EOS.
    - JoeyNMT: ``Tokens per Sec`` is the window's tokens over its time since the previous report
      (training.py ``_log_scores``: elapsed_tok / elapsed_time, the clock restarted right after
      each report), so tokens = that rate x the time between the two report stamps. The tokens
      are ``batch.ntokens``, the non-padding positions of trg[:, 1:] (batch.py), where trg is
      [BOS] + pieces + [EOS] (datasets.py ``collate_fn``: bos=True, eos=True): pieces + EOS.
      A window that spans an epoch end is counted at its post-epoch rate (never in a 250-step
      run; an epoch is about 453 steps).
    """
    _check_tool(tool)
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup and steps must be >= 1, got {warmup} and {steps}")
    total = None if minutes is not None else warmup + steps
    report_every = math.gcd(warmup, steps, REPORT_EVERY)
    run_dir = ws.root / tool / model
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = run_dir.parent / f"{model}.yaml"
    log = run_dir.parent / f"{model}.train.log"
    if tool == "opennmt":
        vocab = _opennmt_vocab(ws, bin_dir)
        _write_yaml(config, _opennmt_config(model, ws, vocab, run_dir, total, report_every, seed))
        command = [str(bin_dir / "onmt_train"), "-config", str(config)]
    else:
        _write_yaml(config, _joeynmt_config(model, ws, run_dir, total, report_every, seed))
        command = [str(bin_dir / "python"), "-m", "joeynmt", "train", str(config), "--skip-test"]
    stop = STOP_SIGNALS[tool]
    limit = None if minutes is None else 60.0 * minutes
    expected = (0,) if minutes is None else (0, -stop)
    done = run_measured(
        command,
        log,
        env=_environment(bin_dir),
        stop_after_s=limit,
        stop_signal=stop,
        grace_s=STOP_GRACE_S,
        expected=expected,
    )
    reports = _opennmt_reports(log) if tool == "opennmt" else _joeynmt_reports(log)
    tok_s, timed_steps = _steady_state(tool, command, log, reports, warmup)
    if total is not None and timed_steps != steps:
        raise _failure(tool, command, log, f"reported {timed_steps} timed steps, not {steps}")
    checkpoint = _checkpoint(tool, command, log, run_dir)
    # model_step_<N>.pt (OpenNMT-py), <N>.ckpt behind JoeyNMT's latest.ckpt link
    stem = checkpoint.stem.split("_")[-1]
    steps_made = int(stem) if stem.isdigit() else reports[-1].step
    return TrainResult(
        tool, model, tok_s, timed_steps, done.peak_rss_mb, done.wall_s, checkpoint, log, steps_made
    )


def _opennmt_vocab(ws: Workspace, bin_dir: Path) -> Path:
    """The shared vocabulary onmt_build_vocab counts in the training pieces, once a workspace."""
    vocab = ws.opennmt_vocab
    folder = vocab.parent
    if not vocab.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "vocab.partial"
        config = folder / "vocab.yaml"
        _write_yaml(
            config,
            {
                "data": _opennmt_corpus(ws),
                "src_vocab": str(partial),
                "share_vocab": True,
                "n_sample": -1,
                "save_data": str(folder / "samples"),
                "overwrite": True,
            },
        )
        command = [str(bin_dir / "onmt_build_vocab"), "-config", str(config)]
        run_measured(command, folder / "vocab.log", env=_environment(bin_dir))
        partial.replace(vocab)
    return vocab


def _opennmt_corpus(ws: Workspace) -> dict[str, Any]:
    return {
        "corpus_1": {
            "path_src": str(ws.pieces / f"train.{SRC}"),
            "path_tgt": str(ws.pieces / f"train.{TGT}"),
        }
    }


def _opennmt_config(
    model: str,
    ws: Workspace,
    vocab: Path,
    run_dir: Path,
    total: int | None,
    report_every: int,
    seed: int,
) -> dict[str, Any]:
    """onmt_train options: no validation, one checkpoint at the last step (``total``) or one
    every CHECKPOINT_EVERY steps of an unbounded run (the newest two kept)."""
    return {
        "data": _opennmt_corpus(ws),
        "src_vocab": str(vocab),
        "share_vocab": True,
        "vocab_size_multiple": 1,
        "save_model": str(run_dir / "model"),
        "train_steps": total or UNBOUNDED,
        "save_checkpoint_steps": total or CHECKPOINT_EVERY,
        "keep_checkpoint": -1 if total else 2,
        "valid_steps": UNBOUNDED,
        "report_every": report_every,
        "seed": seed,
        "batch_type": "sents",
        "batch_size": BATCH_SENTENCES,
        "bucket_size": len(_read_lines(ws.pieces / f"train.{SRC}")),
        "num_workers": 0,
        "encoder_type": "brnn",
        "decoder_type": "rnn",
        "rnn_type": "GRU",
        "enc_layers": 1,
        "dec_layers": 1,
        "enc_hid_size": 512,  # both directions
        "dec_hid_size": 512,
        "src_word_vec_size": 256,
        "tgt_word_vec_size": 256,
        "bridge": True,
        "dropout": [0.2],
        "optim": "adam",
        "learning_rate": 1e-3,
        "learning_rate_decay": 1.0,
        "max_grad_norm": 1.0,
        **ATTENTION[model]["opennmt"],
    }


def _joeynmt_config(
    model: str, ws: Workspace, run_dir: Path, total: int | None, report_every: int, seed: int
) -> dict[str, Any]:
    """JoeyNMT train config: stops after ``total`` updates (``updates``) or on SIGINT, never
    validates, and saves its checkpoint when training ends."""
    training: dict[str, Any] = {
        "optimizer": "adam",
        "learning_rate": 1e-3,
        # the default plateau scheduler passes an argument torch 2.13 rejects
        "scheduling": "exponential",
        "decrease_factor": 1.0,
        "clip_grad_norm": 1.0,
        "batch_size": BATCH_SENTENCES,
        "batch_type": "sentence",
        "epochs": UNBOUNDED,
        "logging_freq": report_every,
        "validation_freq": UNBOUNDED,
        "overwrite": True,
    }
    if total is not None:
        training["updates"] = total
    embeddings = {"embedding_dim": 256, "scale": False}
    return {
        "name": model,
        "model_dir": str(run_dir),
        "use_cuda": False,
        "random_seed": seed,
        "num_workers": 0,
        "data": {
            "train": str(ws.pieces / "train"),
            "dev": str(ws.pieces / "val"),
            "dataset_type": "plain",
            "src": _joeynmt_side(ws, SRC),
            "trg": _joeynmt_side(ws, TGT),
        },
        "training": training,
        "testing": {"batch_size": BATCH_SENTENCES, "batch_type": "sentence", "eval_metrics": []},
        "model": {
            "tied_embeddings": False,
            "encoder": {
                "type": "recurrent",
                "rnn_type": "gru",
                "embeddings": embeddings,
                "hidden_size": 256,
                "bidirectional": True,
                "num_layers": 1,
                "dropout": 0.2,
            },
            "decoder": {
                "type": "recurrent",
                "rnn_type": "gru",
                "embeddings": embeddings,
                "hidden_size": 512,
                "num_layers": 1,
                "init_hidden": "bridge",
                "dropout": 0.2,
                "hidden_dropout": 0.2,
                **ATTENTION[model]["joeynmt"],
            },
        },
    }


def _joeynmt_side(ws: Workspace, lang: str) -> dict[str, Any]:
    """Pre-split pieces (``level: word``, no tokenizer) and the joint piece vocabulary."""
    return {"lang": lang, "level": "word", "voc_file": str(ws.joint_vocab)}


def _opennmt_reports(log: Path) -> list[_Report]:
    """``Step N/T; ... bsz: src/tgt/sents; ...`` lines: tokens = bsz tgt x steps since the last."""
    reports: list[_Report] = []
    for match in _OPENNMT_REPORT.finditer(log.read_text(errors="replace")):
        step = int(match["step"])
        previous = reports[-1].step if reports else 0
        reports.append(
            _Report(step, _seconds(match["time"]), int(match["tgt"]) * (step - previous))
        )
    return reports


def _joeynmt_reports(log: Path) -> list[_Report]:
    """``Step: N, ... Tokens per Sec: R`` lines: tokens = R x seconds since the last report."""
    reports: list[_Report] = []
    for match in _JOEYNMT_REPORT.finditer(log.read_text(errors="replace")):
        now = _seconds(match["time"])
        tokens = int(match["rate"]) * (now - reports[-1].time) if reports else math.nan
        reports.append(_Report(int(match["step"]), now, tokens))
    return reports


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _steady_state(
    tool: str, command: Sequence[str], log: Path, reports: list[_Report], warmup: int
) -> tuple[float, int]:
    """Target tokens per second of the reported steps after ``warmup``, and how many they are."""
    start = [report for report in reports if report.step == warmup]
    timed = [report for report in reports if report.step > warmup]
    if not start or not timed:
        raise _failure(tool, command, log, f"logged no reports at and after step {warmup}")
    seconds = timed[-1].time - start[0].time
    return sum(report.tokens for report in timed) / seconds, timed[-1].step - warmup


def _checkpoint(tool: str, command: Sequence[str], log: Path, run_dir: Path) -> Path:
    """The newest complete checkpoint: OpenNMT-py's highest step that is a whole zip archive
    (torch.save writes the zip directory last, so a save cut short is not one); JoeyNMT's
    latest.ckpt, which it links after a save."""
    if tool == "opennmt":
        saved = sorted(run_dir.glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1]))
        complete = [path for path in saved if zipfile.is_zipfile(path)]
        if complete:
            return complete[-1]
    elif (run_dir / "latest.ckpt").is_file():
        return (run_dir / "latest.ckpt").resolve()
    raise _failure(tool, command, log, f"left no complete checkpoint in {run_dir}")


def decode(
    tool: str,
    checkpoint: Path,
    beam: int,
    ws: Workspace,
    bin_dir: Path,
    batch_sentences: int = 64,
    max_length: int = 100,
    split: str = "test",
    options: Mapping[str, Any] | None = None,
) -> DecodeResult:
    """Translate the pieces of ``split`` with ``checkpoint``, greedy (beam 1) or beam search, in
    batches of ``batch_sentences`` on the CPU, and detokenise the output. Both tools stop a
    hypothesis at ``max_length`` pieces and no sooner (``-max_length_ratio 0`` turns off
    OpenNMT-py's default cap of 1.25 x the batch's longest source + 5). Without ``options``,
    OpenNMT-py's beam search keeps its default length normalisation (``avg``) and JoeyNMT's has
    none (beam_alpha -1); ``options`` are onmt_translate flags (``{"alpha": 0.6}`` ->
    ``-alpha 0.6``) or keys of JoeyNMT's ``testing`` section.

    decode_s is the tool's own decoding time with the model loaded: JoeyNMT ``test`` mode's
    "Generation took S[sec]" (its config names the test set only), and for onmt_translate
    -report_time the output pieces over its "Tokens per second" (the same interval as "Total
    translation time (s)", which has only a tenth of a second; that figure is used if the two
    disagree). Both intervals cover the batch loop, input reading included.
    """
    _check_tool(tool)
    checkpoint = Path(checkpoint).resolve()
    options = dict(options or {})
    chosen = "".join(f"-{key}{value}" for key, value in sorted(options.items()))
    name = f"{tool}-{checkpoint.parent.name}-{checkpoint.stem}-{split}-beam{beam}{chosen}"
    out = ws.root / "decode" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = out / "decode.log"
    source = ws.pieces / f"{split}.{SRC}"
    if tool == "opennmt":
        command, output = _opennmt_translate(
            bin_dir, checkpoint, source, out, beam, batch_sentences, max_length, options
        )
    else:
        command, output = _joeynmt_test(
            bin_dir, checkpoint, ws, out, beam, batch_sentences, max_length, split, options
        )
    done = run_measured(command, log, env=_environment(bin_dir))
    pieces = _read_lines(output)
    sentences = len(_read_lines(source))
    if len(pieces) != sentences:
        raise _failure(tool, command, log, f"wrote {len(pieces)} lines for {sentences} sentences")
    if tool == "opennmt":
        seconds = _opennmt_decode_seconds(tool, command, log, pieces)
    else:
        seconds = _joeynmt_decode_seconds(tool, command, log)
    processor = spm.SentencePieceProcessor(model_file=str(ws.spm_model))
    hypotheses = out / f"hypotheses.{TGT}"
    _write_lines(hypotheses, [processor.decode(line.split()) for line in pieces])
    return DecodeResult(
        tool, beam, sentences / seconds, seconds, done.wall_s, done.peak_rss_mb, hypotheses
    )


def _opennmt_translate(
    bin_dir: Path,
    checkpoint: Path,
    source: Path,
    out: Path,
    beam: int,
    batch_sentences: int,
    max_length: int,
    options: Mapping[str, Any] | None = None,
) -> tuple[list[str], Path]:
    """onmt_translate's command and its output file; ``options`` become ``-key value`` flags."""
    output = out / f"pieces.{TGT}"
    command = [
        str(bin_dir / "onmt_translate"),
        *("-model", str(checkpoint), "-src", str(source), "-output", str(output)),
        *("-batch_type", "sents", "-batch_size", str(batch_sentences), "-beam_size", str(beam)),
        *("-max_length", str(max_length), "-max_length_ratio", "0", "-report_time"),
        *(part for key, value in (options or {}).items() for part in (f"-{key}", str(value))),
    ]
    return command, output


def _joeynmt_test(
    bin_dir: Path,
    checkpoint: Path,
    ws: Workspace,
    out: Path,
    beam: int,
    batch_sentences: int,
    max_length: int,
    split: str = "test",
    options: Mapping[str, Any] | None = None,
) -> tuple[list[str], Path]:
    """JoeyNMT test mode's command and its output file. Its config is the training run's
    (model_dir/config.yaml) with the test set pointed at ``split`` (JoeyNMT names the output
    after the ``test`` key, whatever file it reads) and ``options`` added to ``testing``."""
    config = yaml.safe_load((checkpoint.parent / "config.yaml").read_text())
    config["model_dir"] = str(out)
    data = config["data"]
    for training_split in ("train", "dev"):
        data.pop(training_split, None)
    data["test"] = str(ws.pieces / split)
    config["testing"] = {
        "load_model": str(checkpoint),
        "batch_size": batch_sentences,
        "batch_type": "sentence",
        "beam_size": beam,
        "max_output_length": max_length,
        "eval_metrics": [],
        **(options or {}),
    }
    _write_yaml(out / "config.yaml", config)
    python = str(bin_dir / "python")
    command = [python, "-m", "joeynmt", "test", str(out / "config.yaml"), "-o", str(out / "pieces")]
    return command, out / "pieces.test"  # JoeyNMT appends the split's name


def _opennmt_decode_seconds(
    tool: str, command: Sequence[str], log: Path, pieces: list[str]
) -> float:
    text = log.read_text(errors="replace")
    total = re.search(r"Total translation time \(s\): ([\d.]+)", text)
    rate = re.search(r"Tokens per second: ([\d.]+)", text)
    if total is None or rate is None:
        raise _failure(tool, command, log, "logged no translation time")
    tokens = sum(len(line.split()) for line in pieces)
    precise = tokens / float(rate[1]) if float(rate[1]) > 0 else math.inf
    return precise if abs(precise - float(total[1])) <= 0.051 else float(total[1])


def _joeynmt_decode_seconds(tool: str, command: Sequence[str], log: Path) -> float:
    took = re.findall(r"Generation took ([\d.]+)\[sec\]", log.read_text(errors="replace"))
    if len(took) != 1:
        raise _failure(tool, command, log, f"logged {len(took)} generation times, not 1")
    return float(took[0])


def bleu(hypotheses: Path, references: Path) -> float:
    """Corpus BLEU of hypotheses against references, sacreBLEU's defaults (cased, 13a)."""
    hyps, refs = _read_lines(hypotheses), _read_lines(references)
    if len(hyps) != len(refs):
        raise ValueError(f"{hypotheses} has {len(hyps)} lines, {references} has {len(refs)}")
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def _environment(bin_dir: Path) -> dict[str, str]:
    """This process's environment as seen from inside the peer's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # both tools' checkpoints hold more than tensors
    return env


def _failure(tool: str, command: Sequence[str], log: Path, problem: str) -> RuntimeError:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    return RuntimeError(f"{tool}: `{shlex.join(command)}` {problem}; last lines of {log}:\n{tail}")


def _check_tool(tool: str) -> None:
    if tool not in PEERS:
        raise ValueError(f"tool must be one of {PEERS}, got {tool!r}")


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
