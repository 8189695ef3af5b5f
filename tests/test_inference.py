"""The Lightning-free inference API: what it imports, and that it translates as eval.py does."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2attn.checkpoints.loading import resolve_checkpoint
from seq2attn.config import DecodingSchema, validate_decoding
from seq2attn.config.run import OutputPrecision, SearchStrategy
from seq2attn.inference import load
from seq2attn.inference import translator as translator_module
from seq2attn.inference.commands import evaluate
from seq2attn.shortlist import shortlist_for
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]


def test_importing_inference_leaves_lightning_out() -> None:
    probe = (
        "import sys, seq2attn.inference, seq2attn.checkpoints.loading, seq2attn.search; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'lightning', 'pytorch_lightning', 'lightning_fabric'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def _eval_hypotheses(ckpt_path: str, output_dir: Path) -> tuple[list[str], DecodingSchema]:
    """eval.py's test hypotheses under beam 3 with the fp32 output layer, and that decoding.
    (``auto`` would time bf16 against fp32 in each process, and on a loaded machine two probes
    can choose differently; the two paths then differ where logits tie within rounding.)"""
    overrides = [f"ckpt_path={ckpt_path}", f"paths.output_dir={output_dir}"]
    overrides += ["decoding.beam_size=3", "decoding.output_precision=fp32"]
    cfg = compose_config("eval", overrides)
    evaluate(cfg)
    hypotheses = (output_dir / "test.hyp.txt").read_text().splitlines()
    return hypotheses, validate_decoding(cfg.decoding)


def test_load_translates_as_eval_does_for_a_folder_a_file_and_a_list(
    trained_run: Path, tmp_path: Path
) -> None:
    best = resolve_checkpoint(trained_run)
    for name, given, ckpt_path in [
        ("folder", trained_run, str(trained_run)),
        ("file", best, str(best)),
        ("list", [trained_run, best], f"[{trained_run},{best}]"),
    ]:
        translator = load(given)
        assert translator.paths == ((best,) if name != "list" else (best, best))
        corpus = instantiate(OmegaConf.create(translator.config["data"]["corpus"]))
        sources = corpus.splits()["test"].src
        expected, decoding = _eval_hypotheses(ckpt_path, tmp_path / name)
        translations = translator.translate(sources, decoding)
        assert translations.texts == expected, name
        assert translations.stats.sentences == len(sources) == 100
        first = translations[0]
        assert first.attention_map is not None
        rows, columns = first.attention_map.weights.shape
        assert (rows, columns) == (len(first.target_pieces), len(first.source_pieces))


def test_batches_searched_side_by_side_translate_as_one_at_a_time(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single, ensemble = load(trained_run), load([trained_run, trained_run])
    corpus = instantiate(OmegaConf.create(single.config["data"]["corpus"]))
    sources = corpus.splits()["test"].src
    searching: set[str] = set()
    search = translator_module.decode

    def recording(*args: object, **kwargs: object) -> object:
        searching.add(threading.current_thread().name)
        return search(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(translator_module, "decode", recording)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on a 2-core machine
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    fp32, bf16 = OutputPrecision.fp32, OutputPrecision.bf16
    beam = DecodingSchema(SearchStrategy.beam, beam_size=3, n_best=2, output_precision=fp32)
    cases = [
        ("greedy", single, DecodingSchema(output_precision=fp32)),
        ("beam", single, beam),
        ("greedy, bf16 output layer", single, DecodingSchema(output_precision=bf16)),
        ("beam, bf16 output layer", single, dataclasses.replace(beam, output_precision=bf16)),
        ("ensemble", ensemble, beam),
    ]
    for name, translator, decoding in cases:
        shortlist = shortlist_for(single.model.output_layer)  # type: ignore[union-attr]
        rows = shortlist.rows
        alone = translator.translate(sources, decoding, max_sentences=8, parallel_batches=1)
        rows_alone, rows = shortlist.rows - rows, shortlist.rows
        searching.clear()
        side_by_side = translator.translate(sources, decoding, max_sentences=8, parallel_batches=2)
        assert len(searching) == 2 and threading.current_thread().name not in searching, name
        assert shortlist.rows - rows == rows_alone, name  # every row counted, under threads too
        assert (rows_alone > 0) == ("bf16" in name), name
        assert side_by_side.texts == alone.texts, name
        assert side_by_side.stats.batches == alone.stats.batches >= 13, name
        for one, other in zip(alone, side_by_side, strict=True):
            assert [h.tokens for h in one.nbest] == [h.tokens for h in other.nbest], name
            assert [h.score for h in one.nbest] == pytest.approx([h.score for h in other.nbest])
