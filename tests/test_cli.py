"""eval / translate on a small trained checkpoint, and checkpoint loading."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seq2attn.checkpoints import CheckpointError
from seq2attn.checkpoints.loading import resolve_checkpoint
from seq2attn.config import ConfigError, DecodingSchema
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, train_sentencepiece
from seq2attn.data.toy import ToyCorpus
from seq2attn.inference import load
from seq2attn.inference.commands import evaluate, translate
from seq2attn.search import beam_search, greedy_decode
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]


def test_run_folder_resolves_to_its_best_checkpoint(trained_run: Path) -> None:
    path = resolve_checkpoint(trained_run)
    assert path.parent == trained_run / "checkpoints" and path.name.startswith("best-")


def test_eval_matches_sacrebleu_command_line(trained_run: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "eval",
        [f"ckpt_path={trained_run}", f"paths.output_dir={tmp_path}", "decoding.beam_size=3",
         "decoding.n_best=2"],
    )  # fmt: skip
    scores = evaluate(cfg)
    hyp, ref = tmp_path / "test.hyp.txt", tmp_path / "test.ref.txt"
    assert len(hyp.read_text().splitlines()) == 100
    nbest = [line.split(" ||| ") for line in (tmp_path / "test.nbest.txt").read_text().splitlines()]
    assert [row[0] for row in nbest] == [str(i // 2) for i in range(200)]
    assert [row[1] for row in nbest[::2]] == hyp.read_text().splitlines()
    assert all(row[2].startswith("logprob= ") and float(row[3]) <= 0 for row in nbest)
    cli = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "-b", "-w4"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert float(cli.stdout.strip()) == pytest.approx(scores["bleu"], abs=0.01)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["bleu"] == pytest.approx(scores["bleu"])
    assert saved["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert {"chrf", "ter"} <= saved.keys()
    assert 0 <= saved["repetition_rate"] <= 100 and saved["length_ratio"] > 0
    assert (saved["repetition_rate"], saved["length_ratio"]) == (
        scores["repetition_rate"],
        scores["length_ratio"],
    )
    assert saved["decoding"]["output_precision"] in ("fp32", "bf16")  # auto, resolved


@pytest.mark.parametrize("search", ["decoding=greedy", "decoding=beam"])
def test_eval_writes_the_same_translations_with_a_bf16_output_layer(
    trained_run: Path, tmp_path: Path, search: str
) -> None:
    texts = []
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        evaluate(
            compose_config(
                "eval",
                [
                    f"ckpt_path={trained_run}",
                    f"paths.output_dir={out}",
                    search,
                    f"decoding.output_precision={precision}",
                ],
            )
        )
        saved = json.loads((out / "scores.json").read_text())
        assert saved["decoding"]["output_precision"] == precision
        texts.append((out / "test.hyp.txt").read_text())
    assert texts[0] == texts[1] and len(texts[0].splitlines()) == 100


def test_eval_bleu_equals_training_test_bleu_under_greedy(
    trained_run: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "eval", [f"ckpt_path={trained_run}", f"paths.output_dir={tmp_path}", "decoding=greedy"]
    )
    trained = json.loads((trained_run / "metrics.json").read_text())
    scores = evaluate(cfg)
    assert scores["bleu"] == pytest.approx(trained["test/bleu"], abs=0.01)
    # the same teacher-forced attention, read against the same gold alignments
    for name in ("aer", "attention_entropy"):
        assert scores[name] == pytest.approx(trained[f"test/{name}"], abs=1e-4)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["aer"] == scores["aer"] and 0 < saved["aer"] < 1


def test_translate_keeps_order_and_handles_empty_and_long_lines(
    trained_run: Path, tmp_path: Path
) -> None:
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:5]
    long_line = " ".join(["the dog sees a cat"] * 200)
    lines = [sources[0], "", sources[1], long_line, "   ", *sources[2:]]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    cfg = compose_config(
        "translate",
        [
            f"ckpt_path={trained_run}",
            f"input={tmp_path / 'in.txt'}",
            f"output={tmp_path / 'out.txt'}",
            f"attention_dir={tmp_path / 'maps'}",
            f"paths.output_dir={tmp_path}",
            "max_source_length=40",
            "chunk_size=3",
        ],
    )
    translate(cfg)
    out = (tmp_path / "out.txt").read_text().split("\n")[:-1]
    assert len(out) == len(lines)
    assert out[1] == "" and out[4] == ""
    alone = load(trained_run).translate(
        [lines[2]], DecodingSchema(strategy="beam", beam_size=5, length_penalty=0.6)
    )
    assert out[2] == alone[0].text
    page = (tmp_path / "maps" / "attention.html").read_text()
    assert page.count("<section") == len(lines)
    assert page.count('<table class="grid">') == len(lines) - 2  # empty lines have no attention
    assert len(list((tmp_path / "maps").glob("sentence_*.png"))) == len(lines) - 2


def test_translate_reads_stdin_and_writes_stdout(trained_run: Path) -> None:
    source = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[0]
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "translate.py"), f"ckpt_path={trained_run}",
         "hydra.run.dir=" + str(trained_run / "translate")],
        input=f"{source}\n\n{source}\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT, timeout=600,
    )  # fmt: skip
    lines = result.stdout.split("\n")
    assert lines[1] == "" and lines[0] == lines[2] != ""


def test_beam_beats_greedy_on_model_score(trained_run: Path) -> None:
    translator = load(trained_run)
    model, tok = translator.model, translator.src_tokenizer
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src
    better_or_equal, greedy_total, beam_total = 0, 0.0, 0.0
    for ids in tok.encode(sources):
        src, lengths = torch.tensor([ids]), torch.tensor([len(ids)])
        with torch.no_grad():
            greedy = greedy_decode(model, src, lengths, BOS_ID, EOS_ID)[0]
            beam = beam_search(model, src, lengths, BOS_ID, EOS_ID, beam_size=5)[0][0]
        greedy_total += greedy.score
        beam_total += beam.score
        better_or_equal += beam.score >= greedy.score - 1e-5
    share = better_or_equal / len(sources)
    assert beam_total / len(sources) >= greedy_total / len(sources)
    assert share >= 0.9, f"beam 5 >= greedy on only {share:.0%} of sentences"


def test_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"not a seq2attn checkpoint"):
        load(path)


def test_corrupted_checkpoint_is_refused(trained_run: Path, tmp_path: Path) -> None:
    data = resolve_checkpoint(trained_run).read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"corrupted, truncated or not a PyTorch file"):
        load(truncated)


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("executed",))


def test_checkpoint_with_pickled_code_is_never_executed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"seq2attn": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused to load"):
        load(path)
    assert "executed" not in capsys.readouterr().out


def test_missing_checkpoint_lists_the_paths_searched(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no checkpoint found; searched: .*last\.ckpt"):
        load(tmp_path)


def test_average_cli_writes_the_mean_of_two_checkpoints(trained_run: Path, tmp_path: Path) -> None:
    best, last = resolve_checkpoint(trained_run), trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "averaged.ckpt"
    subprocess.run(
        [sys.executable, str(ROOT / "src" / "average.py"), str(best), str(last), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    averaged = load(out).model.state_dict()
    first, second = (
        load(best).model.state_dict(),
        load(last).model.state_dict(),
    )
    assert averaged.keys() == first.keys()
    for key, value in averaged.items():
        torch.testing.assert_close(value, (first[key] + second[key]) / 2)


def test_average_of_a_checkpoint_with_itself_scores_as_the_checkpoint(
    trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "averaged.ckpt"
    best = str(resolve_checkpoint(trained_run))
    subprocess.run(
        [sys.executable, str(ROOT / "src" / "average.py"), best, best, "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    cfg = compose_config(
        "eval", [f"ckpt_path={out}", f"paths.output_dir={tmp_path / 'eval'}", "decoding=greedy"]
    )
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert evaluate(cfg)["bleu"] == pytest.approx(trained["test/bleu"], abs=0.01)


def test_average_cli_names_a_folder_without_kept_checkpoints(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "average.py"), str(tmp_path), "--out", "x.ckpt"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert f"average: {tmp_path}: no best-*.ckpt files" in result.stderr


def test_an_ensemble_of_a_checkpoint_with_itself_scores_as_the_checkpoint(
    trained_run: Path, tmp_path: Path
) -> None:
    best = resolve_checkpoint(trained_run)
    cfg = compose_config(
        "eval",
        [f"ckpt_path=[{best},{best}]", f"paths.output_dir={tmp_path}", "decoding=greedy"],
    )
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert evaluate(cfg)["bleu"] == pytest.approx(trained["test/bleu"], abs=0.01)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["checkpoint"] == [str(best)] * 2
    assert "aer" not in saved  # the members attend separately: no one attention to score


def test_an_ensemble_of_two_checkpoints_translates_with_both(
    trained_run: Path, tmp_path: Path
) -> None:
    best = resolve_checkpoint(trained_run)
    contents = torch.load(best, weights_only=True)
    torch.manual_seed(0)
    for value in contents["state_dict"].values():
        if value.is_floating_point():
            value.add_(0.2 * torch.randn_like(value))
    other = tmp_path / "other.ckpt"
    torch.save(contents, other)
    loaded = load([best, other])
    assert loaded.paths == (best, other)
    sentences = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:20]
    decoding = DecodingSchema()

    def scores(path: Path | None) -> list[float]:
        translator = loaded if path is None else load(path)
        translations = translator.translate(sentences, decoding)
        assert all(t.nbest[0].attention is not None for t in translations)
        return [t.nbest[0].score for t in translations]

    together = scores(None)
    assert together != scores(best) and together != scores(other)


def test_translate_with_an_ensemble_of_copies_writes_the_model_translations(
    trained_run: Path, tmp_path: Path
) -> None:
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:8]
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in sources))
    outputs = {}
    for name, ckpt_path in [
        ("alone", f"{trained_run}"),
        ("ensemble", f"[{trained_run},{trained_run}]"),
    ]:
        cfg = compose_config(
            "translate",
            [
                f"ckpt_path={ckpt_path}",
                f"input={tmp_path / 'in.txt'}",
                f"output={tmp_path / name}.txt",
                f"attention_dir={tmp_path / name}",
                f"paths.output_dir={tmp_path}",
            ],
        )
        translate(cfg)
        outputs[name] = (tmp_path / f"{name}.txt").read_text()
    assert outputs["ensemble"] == outputs["alone"] and outputs["alone"].count("\n") == 8
    assert (tmp_path / "ensemble" / "attention.html").is_file()


def test_an_ensemble_refuses_members_with_other_tokenizers(
    trained_run: Path, tmp_path: Path
) -> None:
    best = resolve_checkpoint(trained_run)
    contents = torch.load(best, weights_only=True)
    contents["seq2attn"]["tgt_spm"] = train_sentencepiece(
        ["ein anderer satz", "noch ein satz"] * 50, 30, "unigram", 1.0
    )
    other = tmp_path / "other.ckpt"
    torch.save(contents, other)
    with pytest.raises(CheckpointError, match=r"other\.ckpt: its tokenizers differ from .*share"):
        load([best, other])
    with pytest.raises(CheckpointError, match=r"ckpt_path=\[\]"):
        load([])


def test_translate_refuses_to_write_over_its_input(trained_run: Path, tmp_path: Path) -> None:
    sentences = tmp_path / "in.txt"
    sentences.write_text("the big dogs see a small cat\n")
    cfg = compose_config(
        "translate",
        [f"ckpt_path={trained_run}", f"input={sentences}", f"output={tmp_path / '.' / 'in.txt'}"],
    )
    with pytest.raises(ConfigError, match=r"output=.*in\.txt: the same file as input="):
        translate(cfg)
    assert sentences.read_text() == "the big dogs see a small cat\n"
    assert [p.name for p in tmp_path.iterdir()] == ["in.txt"]  # no temporary file left


def test_translate_writes_the_nbest_list_of_every_line(trained_run: Path, tmp_path: Path) -> None:
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:4]
    lines = [sources[0], "", *sources[1:]]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    cfg = compose_config(
        "translate",
        [f"ckpt_path={trained_run}", f"input={tmp_path / 'in.txt'}",
         f"output={tmp_path / 'out.txt'}", f"nbest_output={tmp_path / 'nbest.txt'}",
         "decoding.beam_size=3", "decoding.n_best=3", "chunk_size=2"],
    )  # fmt: skip
    translate(cfg)
    out = (tmp_path / "out.txt").read_text().split("\n")[:-1]
    rows = [line.split(" ||| ") for line in (tmp_path / "nbest.txt").read_text().splitlines()]
    assert rows[3] == ["1", "", "logprob= 0.0000", "0.0000"]  # the empty line, after line 0's
    del rows[3]
    assert [int(row[0]) for row in rows] == [0, 0, 0, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    decoding = DecodingSchema(strategy="beam", beam_size=3, n_best=3, length_penalty=0.6)
    alone = load(trained_run).translate(sources, decoding)
    tokenizer = load(trained_run).tgt_tokenizer
    for i, translation in enumerate(alone):
        kept = rows[3 * i : 3 * i + 3]
        assert [row[1] for row in kept] == tokenizer.decode([h.tokens for h in translation.nbest])
        logprobs = [float(row[2].removeprefix("logprob= ")) for row in kept]
        keys = [float(row[3]) for row in kept]
        assert logprobs == pytest.approx(  # other batches and output precision: other sums
            [h.score for h in translation.nbest], rel=1e-3
        )
        # s = log p / ((5 + |Y|) / 6)^0.6, |Y| counting EOS: the key the list is ordered by
        lp = [((5 + len(h.tokens) + 1) / 6) ** 0.6 for h in translation.nbest]
        assert keys == pytest.approx([p / n for p, n in zip(logprobs, lp, strict=True)], abs=1e-3)
        assert keys == sorted(keys, reverse=True)
        assert kept[0][1] == out[[0, 2, 3, 4][i]]


@pytest.mark.parametrize(
    ("target", "message"),
    [("{tmp}/./out.txt", r"nbest_output=.*out\.txt: the same file as output="),
     ("{tmp}/./in.txt", r"nbest_output=.*in\.txt: the same file as input="),
     ("{tmp}", r"nbest_output=.*: a folder: give a file path"),
     ("''", r"nbest_output is empty: give a file path, or null"),
     ("{tmp}/in.txt/more/n.txt", r"nbest_output=.*: cannot write it \(.*in\.txt is a file, not a")],
)  # fmt: skip
def test_translate_refuses_an_nbest_output_it_cannot_or_must_not_write(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    message: str,
) -> None:
    def too_late(*args: object) -> None:
        raise AssertionError("the model was loaded before the output paths were checked")

    monkeypatch.setattr("seq2attn.inference.commands.load", too_late)
    (tmp_path / "in.txt").write_text("the big dogs see a small cat\n")
    cfg = compose_config(
        "translate",
        [f"ckpt_path={trained_run}", f"input={tmp_path / 'in.txt'}",
         f"output={tmp_path / 'out.txt'}", f"nbest_output={target.format(tmp=tmp_path)}"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        translate(cfg)
    assert (tmp_path / "in.txt").read_text() == "the big dogs see a small cat\n"
    assert [p.name for p in tmp_path.iterdir()] == ["in.txt"]  # nothing written, no temporary


def test_translate_splits_lines_on_newline_only(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"the dog\rsees a cat\nthe cat runs\r\n\xff\xfe the dog\n")
    out = tmp_path / "out.txt"
    cfg = compose_config(
        "translate",
        [f"ckpt_path={trained_run}", f"input={tmp_path / 'in.txt'}", f"output={out}",
         "on_decode_error=replace"],
    )  # fmt: skip
    translate(cfg)
    assert len(out.read_text().split("\n")[:-1]) == 3  # the lone \r stayed inside line 1


def test_translate_takes_undecodable_stdin_without_a_traceback(trained_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "translate.py"), f"ckpt_path={trained_run}",
         "on_decode_error=replace", "hydra.run.dir=" + str(trained_run / "translate_bytes")],
        input=b"the dog \xff\xfe runs\nthe cat\rsees a dog\n",
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    assert result.stdout.count(b"\n") == 2
    assert b"Traceback" not in result.stderr


def test_translate_in_batches_of_sentences_gives_the_same_lines(
    trained_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:7]
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    outputs = {}
    for name, batching in {
        "tokens": [],
        "sentences": ["max_tokens=null", "max_sentences=2"],
    }.items():
        cfg = compose_config(
            "translate",
            [
                f"ckpt_path={trained_run}",
                f"input={tmp_path / 'in.txt'}",
                f"output={tmp_path / name}.txt",
                "decoding=greedy",
                *batching,
            ],
        )
        with caplog.at_level("INFO", logger="seq2attn.inference.commands"):
            translate(cfg)
        outputs[name] = (tmp_path / f"{name}.txt").read_text()
    assert outputs["sentences"] == outputs["tokens"] and outputs["tokens"].count("\n") == 7
    assert caplog.text.count("translated 7 sentences in ") == 2


def test_batches_need_a_token_or_a_sentence_bound(trained_run: Path) -> None:
    cfg = compose_config("translate", [f"ckpt_path={trained_run}", "max_tokens=null"])
    with pytest.raises(ConfigError, match="max_tokens and max_sentences cannot both be null"):
        translate(cfg)


def test_eval_and_translate_start_without_the_training_stack() -> None:
    """src/eval.py and src/translate.py import neither Lightning nor matplotlib."""
    probe = (
        "import sys; sys.argv = ['x']; import seq2attn.cli, seq2attn.inference.commands; "
        "print(sorted(m for m in ('lightning', 'matplotlib', 'wandb') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_training_logs_attention_as_alignment_against_the_toy_gold(trained_run: Path) -> None:
    """val/aer and val/attention_entropy come from the teacher-forced pass of each validation
    (test/* of the test phase); AER is a share, entropy at most log of the longest source."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0.0 <= metrics[f"{split}/aer"] <= 1.0
        assert 0.0 < metrics[f"{split}/attention_entropy"] < math.log(40)


def test_translate_counts_its_sentences_on_a_terminal(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:7]
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    cfg = compose_config(
        "translate",
        [
            f"ckpt_path={trained_run}",
            f"input={tmp_path / 'in.txt'}",
            f"output={tmp_path / 'out.txt'}",
            f"paths.output_dir={tmp_path}",
            "chunk_size=3",
            "decoding=greedy",
        ],
    )
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    translate(cfg)
    assert "translating: 7 sentences" in terminal.getvalue().replace("\r", "\n")
