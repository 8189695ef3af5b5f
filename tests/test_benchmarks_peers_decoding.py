"""benchmarks.peers: the decoding settings of experiments.decoding_grid reach each peer's
command or config, on the split asked for (nothing is run: the peers need not be installed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks import peers
from experiments.decoding_grid import DecodingSetting

SETTING = DecodingSetting("gnmt", 1.4, 3)


def test_onmt_translate_gets_the_settings_flags(tmp_path: Path) -> None:
    command, output = peers._opennmt_translate(
        tmp_path / "bin",
        tmp_path / "model_step_100.pt",
        tmp_path / "val.de",
        tmp_path,
        5,
        64,
        100,
        SETTING.options("opennmt"),
    )
    flags = command[command.index("-report_time") + 1 :]
    assert flags == ["-length_penalty", "wu", "-alpha", "1.4", "-block_ngram_repeat", "3"]
    assert command[command.index("-src") + 1] == str(tmp_path / "val.de")
    assert output == tmp_path / "pieces.en"
    # without options: the tool's defaults, no flag added
    plain, _ = peers._opennmt_translate(tmp_path, tmp_path, tmp_path, tmp_path, 5, 64, 100)
    assert plain[-1] == "-report_time"


def test_joeynmt_test_reads_the_split_with_the_settings_alpha(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    training = {"data": {"train": "t", "dev": "d", "test": "x"}, "testing": {"beam_size": 1}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(training))
    ws = peers.Workspace(tmp_path / "ws")
    out = tmp_path / "out"
    out.mkdir()
    command, output = peers._joeynmt_test(
        tmp_path / "bin",
        run_dir / "latest.ckpt",
        ws,
        out,
        5,
        64,
        100,
        "val",
        DecodingSetting("gnmt", 1.4).options("joeynmt"),
    )
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"] == {"test": str(ws.pieces / "val")}
    assert config["testing"]["beam_alpha"] == 1.4
    assert config["testing"]["no_repeat_ngram_size"] == -1  # JoeyNMT's "off"
    assert config["testing"]["beam_size"] == 5
    assert command[-3:] == [str(out / "config.yaml"), "-o", str(out / "pieces")]
    assert output == out / "pieces.test"
