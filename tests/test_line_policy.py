"""eval and translate read lines as training does: decoding policy, line numbers, character cut."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from seq2attn.config import ConfigError, validate_translate
from seq2attn.data.corpus import CorpusError
from seq2attn.data.readers import OnDecodeError
from seq2attn.data.toy import ToyCorpus
from seq2attn.inference import Translator
from seq2attn.inference.commands import evaluate, translate
from seq2attn.inference.lines import LinePolicy, check_input, check_outputs, open_input, read_split
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
STRICT = LinePolicy(OnDecodeError.strict, max_chars=1000)
REPLACE = LinePolicy(OnDecodeError.replace, max_chars=1000)
TIMEOUT = 300


def sentences(count: int) -> list[str]:
    return ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:count]


def spy_on_sources(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sentences every Translator.translate call receives, in order."""
    seen: list[str] = []
    original = Translator.translate

    def translate(self: Translator, batch: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        seen.extend(batch)
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate", translate)
    return seen


def run_script(script: str, args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=TIMEOUT,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.count(errors[0]) == 1, stderr
    assert re.fullmatch(pattern, errors[0]), errors[0]


# --- the policy itself --------------------------------------------------------------------------


def test_lines_split_on_newline_only_and_lose_bom_crlf_and_outer_spaces() -> None:
    raw = io.BytesIO("\ufeffa b\r\nc\rd\n  e  \n\nlast".encode())
    assert list(STRICT.prepare(raw, "in.txt")) == ["a b", "c\rd", "e", "", "last"]


def test_strict_stops_at_the_first_bad_line_naming_input_and_line() -> None:
    lines = STRICT.prepare(io.BytesIO(b"one\ntwo\nth\xffree\nfour\n"), "in.txt")
    assert [next(lines), next(lines)] == ["one", "two"]
    with pytest.raises(
        CorpusError,
        match=r"^in\.txt, line 3: bytes that are not UTF-8 \(b'\\xffree' at byte 2 of the line\); "
        r"fix the input or set on_decode_error=replace$",
    ):
        next(lines)


def test_replace_keeps_every_line_and_counts_the_replaced_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = io.BytesIO(b"\xffa\nb\nc\xfe\xfe\n")
    with caplog.at_level(logging.WARNING):
        assert list(REPLACE.prepare(raw, "stdin")) == ["\ufffda", "b", "c\ufffd\ufffd"]
    assert [r.getMessage() for r in caplog.records] == [
        "stdin: replaced bytes that are not UTF-8 in 2 lines"
    ]


def test_long_lines_are_cut_to_max_chars_after_stripping(caplog: pytest.LogCaptureFixture) -> None:
    policy = LinePolicy(OnDecodeError.strict, max_chars=5)
    raw = io.BytesIO("  abcdefgh\nabcde\n\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\n".encode())
    with caplog.at_level(logging.WARNING):
        assert list(policy.prepare(raw, "in.txt")) == ["abcde", "abcde", "\u00e9" * 5]
    assert [r.getMessage() for r in caplog.records] == [
        "in.txt: 2 lines are longer than max_chars=5; the model sees their first max_chars "
        "characters"
    ]


def test_translate_settings_and_the_checkpoint_give_the_policy() -> None:
    default = validate_translate(compose_config("translate", ["ckpt_path=x"]))
    assert default.on_decode_error is OnDecodeError.strict  # as training's file corpora
    stored = {"data": {"max_chars": 700, "normalization": "NFKC"}}
    assert LinePolicy.for_translate(default, stored) == LinePolicy(
        OnDecodeError.strict, 700, "NFKC"
    )
    given = validate_translate(
        compose_config("translate", ["ckpt_path=x", "max_chars=9", "on_decode_error=replace"])
    )
    assert LinePolicy.for_translate(given, stored) == LinePolicy(OnDecodeError.replace, 9, "NFKC")
    with pytest.raises(ConfigError, match=r"max_chars=null .* data\.max_chars, but it is None"):
        LinePolicy.for_translate(default, {"data": {}})


def test_lines_are_normalised_as_training_normalised_its_sources() -> None:
    policy = LinePolicy(OnDecodeError.strict, 10, "NFKC")
    # a ligature and a full-width letter become their compatibility forms before the cut
    assert list(policy.prepare(["\ufb01ne \uff21".encode()], "stdin")) == ["fine A"]
    unchanged = LinePolicy(OnDecodeError.strict, 10, "none")
    assert list(unchanged.prepare(["\ufb01ne".encode()], "stdin")) == ["\ufb01ne"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("on_decode_error=ignore", r"on_decode_error: .*expected one of \[strict, replace\]"),
        ("max_chars=0", r"max_chars=0: must be a positive number"),
    ],
)
def test_translate_refuses_bad_policy_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_translate(compose_config("translate", ["ckpt_path=x", override]))


def test_a_missing_input_file_is_a_config_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match=r"input=.*nope\.txt: cannot read it \(No such file"),
        open_input(str(tmp_path / "nope.txt"), STRICT),
    ):
        pass


def test_an_input_that_cannot_be_read_is_refused_before_it_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readable = tmp_path / "in.txt"
    readable.write_text("ein Hund\n")
    check_input(str(readable))
    check_input(None)  # stdin
    with pytest.raises(ConfigError, match=r"^input=.*nope\.txt: cannot read it \(No such file"):
        check_input(str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match=r"^input=.* is a folder: give a file of sentences"):
        check_input(str(tmp_path))
    monkeypatch.setattr("os.access", lambda path, mode: False)  # tests run as root here
    with pytest.raises(ConfigError, match=r"^input=.*in\.txt: cannot read it \(Permission denied"):
        check_input(str(readable))


def test_outputs_are_refused_where_a_new_file_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_outputs(None, {"output": str(tmp_path / "new" / "deeper" / "out.txt")})  # made later
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match=r"output=.*: cannot write it \(.*plain is a file, not"):
        check_outputs(None, {"output": str(tmp_path / "plain" / "new" / "out.txt")})
    asked: list[Path] = []

    def no_permission(path: Path, mode: int) -> bool:
        asked.append(path)
        return False

    monkeypatch.setattr("os.access", no_permission)
    with pytest.raises(ConfigError, match=r"^nbest_output=.*: cannot write it \(no permission to"):
        check_outputs(None, {"nbest_output": str(tmp_path / "new" / "out.txt")})
    assert asked == [tmp_path]  # the nearest folder that exists


# --- translate on a trained checkpoint -----------------------------------------------------------


def test_translate_strict_file_names_file_and_line_and_writes_nothing(
    trained_run: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"the dog runs\nthe cat sees a dog\nthe \xff\xfe dog\nthe cat\n")
    result = run_script(
        "translate.py",
        [f"ckpt_path={trained_run}", f"input={source}", f"output={tmp_path / 'out.txt'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
    )  # fmt: skip
    assert_one_line_error(
        result,
        re.escape(f"error: {source}, line 3: ")
        + r"bytes that are not UTF-8 \(b'\\xff\\xfe d' at byte 4 of the line\); "
        r"fix the input or set on_decode_error=replace",
    )
    # no output, no temporary file, and no run folder: nothing was done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_translate_strict_stdin_names_stdin_and_line(trained_run: Path, tmp_path: Path) -> None:
    result = run_script(
        "translate.py",
        [f"ckpt_path={trained_run}", f"hydra.run.dir={tmp_path / 'run'}"],
        stdin=b"the dog runs\n\x89PNG\r\n\x1a\n\x00\x00",
    )
    assert_one_line_error(result, r"error: stdin, line 2: bytes that are not UTF-8 .*")
    assert result.stdout == b""  # the bad line was in the first chunk: nothing was translated


def test_translate_replace_keeps_the_line_count_and_warns_once(
    trained_run: Path, tmp_path: Path
) -> None:
    result = run_script(
        "translate.py",
        [f"ckpt_path={trained_run}", "on_decode_error=replace", "decoding=greedy",
         f"hydra.run.dir={tmp_path / 'run'}"],
        stdin=b"the dog \xff runs\nthe cat\n\xfe\xfe\nthe dog\rsees a cat\n",
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout.count(b"\n") == 4
    assert stderr.count("stdin: replaced bytes that are not UTF-8 in 2 lines") == 1


def test_translate_cuts_long_lines_to_max_chars_before_tokenising(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    short = sentences(2)
    long_line = " ".join([short[0]] * 100)
    limit = max(map(len, short))
    (tmp_path / "in.txt").write_text(f"{short[1]}\n{long_line}\n{short[0]}\n")
    seen = spy_on_sources(monkeypatch)
    overrides = [f"ckpt_path={trained_run}", f"input={tmp_path / 'in.txt'}", "decoding=greedy",
                 f"output={tmp_path / 'out.txt'}", "chunk_size=2"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        translate(compose_config("translate", [*overrides, f"max_chars={limit}"]))
    assert seen == [short[1], long_line[:limit], short[0]]
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 3
    cut = [r.getMessage() for r in caplog.records if "max_chars" in r.getMessage()]
    assert cut == [
        f"{tmp_path / 'in.txt'}: 1 lines are longer than max_chars={limit}; the model sees "
        "their first max_chars characters"
    ]
    seen.clear()  # max_chars=null: the training run's data.max_chars (1000)
    translate(compose_config("translate", overrides))
    assert len(long_line) > 1000 and seen == [short[1], long_line[:1000], short[0]]


# --- eval on a trained checkpoint ---------------------------------------------------------------


def text_pairs(tmp_path: Path, test_src: bytes) -> list[str]:
    """Overrides for eval on ``data=text_pairs`` files whose test source is ``test_src``."""
    lines = test_src.count(b"\n")
    good = "".join(s + "\n" for s in sentences(lines)).encode()
    files = {"train_src": good, "train_tgt": good, "val_src": good, "val_tgt": good,
             "test_src": test_src, "test_tgt": good}  # fmt: skip
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return ["data=text_pairs", *(f"data.{name}={tmp_path / name}" for name in files)]


BAD_TEST_SRC = b"the dog runs\nthe cat sees a dog\nthe \xff dog\nthe cat\n"


def test_eval_strict_names_file_and_line_in_one_line(trained_run: Path, tmp_path: Path) -> None:
    result = run_script(
        "eval.py",
        [f"ckpt_path={trained_run}", *text_pairs(tmp_path, BAD_TEST_SRC), "decoding=greedy",
         f"hydra.run.dir={tmp_path / 'run'}"],
    )  # fmt: skip
    assert_one_line_error(
        result,
        re.escape(f"error: {tmp_path / 'test_src'}, line 3: ")
        + r"bytes that are not UTF-8 .*; fix the file or set data\.on_decode_error=replace",
    )
    assert not list((tmp_path / "run").glob("*.txt"))


def test_eval_replace_counts_and_max_chars_cuts_the_sources(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = spy_on_sources(monkeypatch)
    overrides = [f"ckpt_path={trained_run}", *text_pairs(tmp_path, BAD_TEST_SRC), "decoding=greedy",
                 "data.on_decode_error=replace", "data.max_chars=10",
                 f"paths.output_dir={tmp_path / 'out'}"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        evaluate(compose_config("eval", overrides))
    assert seen == ["the dog ru", "the cat se", "the \ufffd dog", "the cat"]
    assert len((tmp_path / "out" / "test.hyp.txt").read_text().splitlines()) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert f"{tmp_path / 'test_src'}: replaced bytes that are not UTF-8 in 1 lines" in messages
    assert any(re.search(r"\d+ pairs are longer than max_chars=10", m) for m in messages)


def test_eval_reads_only_its_split_with_the_checkpoint_policy(
    trained_run: Path, tmp_path: Path
) -> None:
    overrides = text_pairs(tmp_path, BAD_TEST_SRC)
    (tmp_path / "train_src").write_bytes(b"\xff\n" * 4)  # never read by eval
    data = compose_config("eval", [f"ckpt_path={trained_run}", *overrides]).data
    given = OmegaConf.to_container(data, resolve=True)
    assert isinstance(given, dict)
    config = {str(k): v for k, v in given.items() if v is not None}
    with pytest.raises(CorpusError, match=r"test_src, line 3: bytes that are not UTF-8"):
        read_split(config, "test.ckpt", "test")
    split = read_split(config, "test.ckpt", "val")
    assert split.inputs.src == split.texts.src == sentences(4) and split.gold is None
    with pytest.raises(ConfigError, match=r"^data\.max_chars=0: must be a positive number$"):
        read_split({**config, "max_chars": 0}, "test.ckpt", "val")
