"""The report: run collection, varying keys, seed aggregation, Markdown, chart and result files."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib.axes import Axes

from seq2attn.report import (
    ReportError,
    Run,
    aggregate,
    collect_runs,
    config_columns,
    config_row,
    export,
    plot,
    report,
    to_markdown,
    varying_keys,
)
from seq2attn.report.chart import labels, plot_curves
from seq2attn.report.tables import Variant

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "cell": {"type": "gru"},
    "scorer": {"_target_": "seq2attn.models.scorers.GeneralScorer", "_partial_": True},
    "attention": {"type": "luong", "input_feeding": False},
    "model": {"cell": "gru", "dropout": 0.2, "reverse_source": False, "hidden_sizes": [8, 8]},
    "teacher_forcing": {"_target_": "seq2attn.teacher_forcing.AlwaysSchedule"},
    "data": {"seed": 1, "cache_dir": "/cache"},
    "paths": {"output_dir": "/runs/0"},
    "run_name": "luong-general-gru",
    "seed": 1,
}


def config(**changes: Any) -> dict[str, Any]:
    """BASE with dotted keys changed, e.g. ``config(**{"cell.type": "lstm"})``."""
    result = copy.deepcopy(BASE)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = result
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return result


def write_run(folder: Path, cfg: dict[str, Any], metrics: dict[str, float] | None) -> Path:
    """A run folder as training leaves it; ``metrics=None`` leaves it unfinished."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "run.json").write_text(json.dumps({"git": {"commit": "abc123"}}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def seeded(seed: int, cell: str, test_bleu: float, val_bleu: float) -> tuple[dict, dict]:
    cfg = config(**{"seed": seed, "data.seed": seed, "cell.type": cell, "model.cell": cell})
    metrics = {
        "test/bleu": test_bleu,
        "val/bleu_best": val_bleu,
        "val/bleu": val_bleu - 1,
        "params": 1000.0,
        "time/wall_s": 10.0 * seed,
    }
    return cfg, metrics


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Three GRU seeds (test BLEU 10, 12, 14), one LSTM run (30) and one unfinished run."""
    root = tmp_path / "sweep"
    runs = [seeded(1, "gru", 10, 20), seeded(2, "gru", 12, 22), seeded(3, "gru", 14, 27)]
    runs.append(seeded(1, "lstm", 30, 31))
    for number, (cfg, metrics) in enumerate(runs):
        cfg["paths"]["output_dir"] = str(root / str(number))
        write_run(root / f"{number}_{cfg['cell']['type']}", cfg, metrics)
    write_run(root / "4_unfinished", config(), None)
    return root


def test_collect_runs_finds_finished_folders_and_notes_unfinished(sweep: Path) -> None:
    runs, unfinished = collect_runs(sweep)
    assert [r.name for r in runs] == ["0_gru", "1_gru", "2_gru", "3_lstm"]
    assert unfinished == [sweep / "4_unfinished"]
    assert runs[1].metrics["test/bleu"] == 12 and runs[1].commit == "abc123"
    assert runs[3].config["cell"]["type"] == "lstm"


def test_a_run_whose_metrics_cannot_be_read_is_skipped_with_a_warning(
    sweep: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (sweep / "1_gru" / "metrics.json").write_text('{"test/bleu": 12')  # cut off mid-write
    runs, _ = collect_runs(sweep)
    assert [r.name for r in runs] == ["0_gru", "2_gru", "3_lstm"]
    assert f"skipped {sweep / '1_gru'}: its run files cannot be read" in caplog.text


def test_varying_keys_ignore_bookkeeping_and_keys_only_some_runs_have() -> None:
    configs = [
        config(**{"paths.output_dir": "/a", "run_name": "a", "trainer.root": "/a/ckpt"}),
        config(**{"paths.output_dir": "/b", "cell.type": "lstm", "trainer.root": "/b/ckpt"}),
        config(**{"model.dropout": 0.3, "data.seed": 2, "seed": 2, "model.hidden_sizes": [8, 4]}),
        config(**{"scorer.hidden_size": 64, "model.cell": "rnn"}),
    ]
    assert varying_keys(configs) == ["cell.type", "model.dropout", "model.hidden_sizes", "seed"]
    assert varying_keys(configs[:1]) == []


def console(shown: bool) -> dict[str, bool]:
    return {"trainer.enable_model_summary": shown, "trainer.enable_progress_bar": shown}


def test_seeds_of_a_variant_group_together_whatever_their_console_showed() -> None:
    runs = [
        Run("a", config(**console(True), seed=1), {"test/bleu": 20.0}),
        Run("b", config(**console(False), seed=2), {"test/bleu": 24.0}),
    ]
    (variant,) = aggregate(runs, config_columns(runs))
    assert variant.runs == 2 and variant.mean["test/bleu"] == 22.0


def test_seeds_of_a_variant_group_together_when_the_corpus_was_reached_by_other_paths() -> None:
    # the same Multi30k files, once as ../shared/... and once as /work/shared/...
    relative = {"data.root": "../shared/m30k", "data.corpus.root": "../shared/m30k"}
    absolute = {"data.root": "/work/shared/m30k", "data.corpus.root": "/work/shared/m30k"}
    runs = [
        Run("a", config(**relative, seed=1), {"test/bleu": 20.0}),
        Run("b", config(**absolute, seed=2), {"test/bleu": 24.0}),
    ]
    (variant,) = aggregate(runs, config_columns(runs))
    assert variant.runs == 2 and variant.mean["test/bleu"] == 22.0


def test_config_columns_are_fixed_plus_varying(sweep: Path) -> None:
    runs, _ = collect_runs(sweep)
    runs.append(Run("extra", config(**{"model.dropout": 0.5}), {}))
    columns = config_columns(runs)
    assert list(columns) == [
        "attention",
        "scorer",
        "cell",
        "teacher forcing",
        "input feeding",
        "reverse source",
        "seed",
        "model.dropout",
    ]
    row = config_row(runs[-1], columns)
    assert row == {
        "attention": "luong",
        "scorer": "general",
        "cell": "gru",
        "teacher forcing": "always",
        "input feeding": "false",
        "reverse source": "false",
        "seed": "1",
        "model.dropout": "0.5",
    }


def test_option_names_come_from_class_names() -> None:
    cfg = config(
        **{
            "scorer._target_": "seq2attn.models.scorers.ScaledDotScorer",
            "teacher_forcing._target_": "seq2attn.teacher_forcing.InverseSigmoidSchedule",
        }
    )
    row = config_row(Run("r", cfg, {}), config_columns([]))
    assert (row["scorer"], row["teacher forcing"]) == ("scaled_dot", "inverse_sigmoid")
    no_attention = config(**{"attention.type": "none"})
    assert config_row(Run("r", no_attention, {}), config_columns([]))["scorer"] == "-"
    general = "seq2attn.models.scorers.GeneralScorer"
    for scale, name in [(True, "scaled_general"), (False, "general"), (None, "general")]:
        extra = {} if scale is None else {"scorer.scale": scale}
        cfg = config(**{"scorer._target_": general, **extra})
        assert config_row(Run("r", cfg, {}), config_columns([]))["scorer"] == name
    # a class no conf/scorer option names: its own name without the role suffix
    cfg = config(**{"scorer._target_": "tests.test_config_new_scorer.CosineScorer"})
    assert config_row(Run("r", cfg, {}), config_columns([]))["scorer"] == "cosine"


def test_aggregate_mean_and_sample_std_over_seeds(sweep: Path) -> None:
    runs, _ = collect_runs(sweep)
    lstm, gru = aggregate(runs, config_columns(runs))  # best test BLEU first
    assert (lstm.config["cell"], lstm.runs, lstm.mean["test/bleu"], lstm.std["test/bleu"]) == (
        "lstm",
        1,
        30,
        0,
    )
    assert (gru.config["cell"], gru.runs) == ("gru", 3)
    assert "seed" not in gru.config
    assert gru.mean["test/bleu"] == pytest.approx(12.0)
    assert gru.std["test/bleu"] == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2)
    assert gru.mean["val/bleu_best"] == pytest.approx(23.0)
    assert gru.std["val/bleu_best"] == pytest.approx(math.sqrt(13))  # sqrt((9 + 1 + 16) / 2)
    assert gru.mean["time/wall_s"] == pytest.approx(20.0)
    assert "test/chrf" not in gru.mean


def table(markdown: str, title: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the table under ``## <title>``."""
    section = markdown.split(f"## {title}", 1)[1].split("\n\n")[1]
    rows = [
        [cell.strip() for cell in line.strip("|").split(" | ")] for line in section.splitlines()
    ]
    return [row for row in rows if row[0] != "---"]


def test_markdown_has_runs_variants_and_the_unfinished_note(sweep: Path) -> None:
    runs, unfinished = collect_runs(sweep)
    markdown = to_markdown(runs, unfinished)
    header, *rows = table(markdown, "Runs (4)")
    assert header[:8] == ["run", "attention", "scorer", "cell", "teacher forcing"] + [
        "input feeding",
        "reverse source",
        "seed",
    ]
    assert len(rows) == 4
    first = dict(zip(header, rows[0], strict=True))
    assert (first["cell"], first["seed"], first["test BLEU"], first["val BLEU"]) == (
        "gru",
        "1",
        "10.00",
        "20.00",
    )
    assert (first["params"], first["wall s"], first["test chrF"]) == ("1,000", "10.0", "-")
    header, *rows = table(markdown, "Variants (2; mean ± std over seeds)")
    gru = dict(zip(header, rows[1], strict=True))
    assert (gru["seeds"], gru["test BLEU"], gru["val BLEU"]) == (
        "3",
        "12.00 ± 2.00",
        "23.00 ± 3.61",
    )
    assert "Skipped 1 unfinished run(s) without metrics.json" in markdown
    assert str(sweep / "4_unfinished") in markdown


def test_alignment_columns_appear_when_a_run_has_them(sweep: Path) -> None:
    runs, _ = collect_runs(sweep)
    assert "val AER" not in to_markdown(runs)
    for run, aer in zip(runs[:2], (0.25, 0.35), strict=True):
        run.metrics.update({"val/aer": aer, "val/attention_entropy": 2 * aer})
    markdown = to_markdown(runs)
    header, *rows = table(markdown, "Runs (4)")
    cells = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(c["val AER"], c["val entropy"]) for c in cells] == [
        ("0.250", "0.50"),
        ("0.350", "0.70"),
        ("-", "-"),
        ("-", "-"),
    ]
    header, *rows = table(markdown, "Variants (2; mean ± std over seeds)")
    gru = dict(zip(header, rows[1], strict=True))
    assert (gru["val AER"], gru["val entropy"]) == ("0.300 ± 0.071", "0.60 ± 0.14")


def test_one_seed_per_variant_has_no_variants_table(sweep: Path) -> None:
    runs, _ = collect_runs(sweep)
    assert "## Variants" not in to_markdown(runs[2:])


def test_chart_is_a_png(sweep: Path, tmp_path: Path) -> None:
    runs, _ = collect_runs(sweep)
    path = plot(aggregate(runs, config_columns(runs)), tmp_path / "charts" / "bleu.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_result_files_round_trip(sweep: Path, tmp_path: Path) -> None:
    runs, _ = collect_runs(sweep)
    runs.append(runs[0])  # same run_name and seed: numbered, not overwritten
    written = export(runs, tmp_path / "results")
    assert [p.name for p in written] == [
        "luong-general-gru-seed1.json",
        "luong-general-gru-seed2.json",
        "luong-general-gru-seed3.json",
        "luong-general-gru-seed1-2.json",
        "luong-general-gru-seed1-3.json",
    ]
    (tmp_path / "results" / "notes.json").write_text('{"not": "a result"}')
    again, unfinished = collect_runs(tmp_path / "results")
    assert not unfinished and len(again) == 5
    by_name = {r.name: r for r in again}
    original = runs[3]
    assert by_name["luong-general-gru-seed1-2"].config == original.config
    assert by_name["luong-general-gru-seed1-2"].metrics == original.metrics
    assert by_name["luong-general-gru-seed1-2"].commit == "abc123"
    assert to_markdown(again).count("| luong-general-gru-seed") == 5


def test_report_without_finished_runs_names_the_folder(tmp_path: Path) -> None:
    write_run(tmp_path / "run", config(), None)
    with pytest.raises(ReportError, match=f"{tmp_path}: no finished runs.*1 unfinished"):
        report(tmp_path)
    with pytest.raises(ReportError, match="no such folder or result file"):
        report(tmp_path / "missing")


def test_command_line_writes_markdown_chart_and_result_files(sweep: Path, tmp_path: Path) -> None:
    out, chart, results = tmp_path / "r.md", tmp_path / "r.png", tmp_path / "results"
    command = [sys.executable, "src/report.py", str(sweep), "--out", str(out)]
    command += ["--chart", str(chart), "--export-dir", str(results)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600
    )
    assert done.stdout == out.read_text()
    assert "12.00 ± 2.00" in done.stdout
    assert "skipping unfinished run" in done.stderr
    assert chart.read_bytes()[:4] == b"\x89PNG" and len(list(results.glob("*.json"))) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = subprocess.run(
        [sys.executable, "src/report.py", str(empty)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode == 1 and f"report: {empty}: no finished runs" in failed.stderr


def test_export_keeps_an_identical_file_and_never_overwrites_another_run(
    sweep: Path, tmp_path: Path
) -> None:
    runs, _ = collect_runs(sweep)
    results = tmp_path / "results"
    (first,) = export(runs[:1], results)
    assert export(runs[:1], results) == [first]  # the same result exported again
    changed = Run(runs[0].name, runs[0].config, {**runs[0].metrics, "test/bleu": 99.0})
    (second,) = export([changed], results)
    assert second.name == "luong-general-gru-seed1-2.json"
    assert json.loads(first.read_text())["metrics"]["test/bleu"] == 10
    assert json.loads(second.read_text())["metrics"]["test/bleu"] == 99


def test_training_command_goes_into_result_files_and_the_runs_table(tmp_path: Path) -> None:
    cfg, metrics = seeded(1, "gru", 10, 20)
    folder = write_run(tmp_path / "runs" / "a", cfg, metrics)
    argv = ["src/train.py", "experiment=study", "model.dropout=0.3", "run_name=a b"]
    (folder / "run.json").write_text(json.dumps({"argv": argv, "git": {"commit": "abc"}}))
    (run,), _ = collect_runs(tmp_path / "runs")
    expected = "python src/train.py experiment=study model.dropout=0.3 'run_name=a b'"
    assert run.command == expected
    (path,) = export([run], tmp_path / "results")
    (again,), _ = collect_runs(path)  # a single result file
    assert again.command == expected
    assert f"| `{expected}` |" in to_markdown([again])
    assert "command" not in to_markdown([Run("b", cfg, metrics)])


def test_report_fills_the_marked_block_of_a_page_from_several_paths(
    sweep: Path, tmp_path: Path
) -> None:
    cfg, metrics = seeded(5, "rnn", 3, 4)
    (path,) = export([Run("extra", cfg, metrics)], tmp_path / "extra")
    page = tmp_path / "results.md"
    page.write_text(
        "# Study\nprose\n<!-- report:cells -->\nold table\n<!-- /report:cells -->\nend\n"
    )
    markdown = report([sweep, path], into=(page, "cells"))
    text = page.read_text()
    assert text == f"# Study\nprose\n<!-- report:cells -->\n{markdown}<!-- /report:cells -->\nend\n"
    assert "old table" not in text and "## Runs (5)" in markdown and "| rnn |" in markdown
    report([sweep, path], into=(page, "cells"))
    assert page.read_text() == text  # refreshing is idempotent
    with pytest.raises(ReportError, match=r"needs one '<!-- report:heads -->' line"):
        report(sweep, into=(page, "heads"))
    with pytest.raises(ReportError, match="results.md: cannot read JSON"):
        report(page)
    notes = tmp_path / "notes.json"
    notes.write_text('{"not": "a result"}')
    with pytest.raises(ReportError, match="notes.json: not a result file"):
        report(notes)


def test_chart_labels_are_key_value_and_skip_unused_scorers() -> None:
    configs = [
        {"attention": "luong", "scorer": "scaled_dot", "input feeding": "true", "cell": "gru"},
        {"attention": "none", "scorer": "-", "input feeding": "false", "cell": "gru"},
    ]
    assert labels(configs) == [
        "attention=luong scorer=scaled_dot input feeding=true",
        "attention=none input feeding=false",
    ]
    assert labels(configs[:1]) == ["all runs"]


def test_error_bars_only_for_repeated_seeds_and_never_below_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variants = [
        Variant({"cell": "gru"}, 3, {"test/bleu": 2.0}, {"test/bleu": 5.0}),
        Variant({"cell": "lstm"}, 1, {"test/bleu": 30.0}, {"test/bleu": 0.0}),
        Variant({"cell": "rnn"}, 2, {"test/bleu": 20.0}, {"test/bleu": 1.5}),
    ]
    drawn: dict[str, Any] = {}
    original = Axes.bar

    def record(self: Axes, x: Any, height: Any, *args: Any, yerr: Any = None, **kw: Any) -> Any:
        drawn["yerr"] = yerr
        return original(self, x, height, *args, yerr=yerr, **kw)

    monkeypatch.setattr(Axes, "bar", record)
    plot(variants, tmp_path / "bleu.png")
    below, above = drawn["yerr"]
    assert list(below) == [2.0, 0.0, 1.5] and list(above) == [5.0, 0.0, 1.5]


METRICS_CSV = """epoch,step,train/loss,trainer/global_step,val/aer,val/bleu,test/bleu
0,49,3.5,50.0,,,
0,99,,,0.75,1.5,
0,99,2.5,100.0,,,
1,199,,,0.25,60.0,
1,199,,,,,70.0
"""


def test_validation_history_is_read_from_the_csv_log_and_kept_in_result_files(
    sweep: Path, tmp_path: Path
) -> None:
    folder = sweep / "0_gru"
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text(METRICS_CSV)
    run = next(r for r in collect_runs(sweep)[0] if r.name == "0_gru")
    assert run.history == (
        {"step": 100, "val/aer": 0.75, "val/bleu": 1.5},
        {"step": 200, "val/aer": 0.25, "val/bleu": 60.0},
    )
    (exported,) = export([run], tmp_path / "results")
    (again,), _ = collect_runs(exported)
    assert again.history == run.history
    assert "history" not in json.loads(export(collect_runs(sweep)[0][1:2], tmp_path)[0].read_text())


def test_curves_draw_one_line_per_variant_through_the_mean_over_seeds(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = collect_runs(sweep)[0]
    runs = [
        dataclasses.replace(run, history=({"step": 100, "val/aer": aer},))
        for run, aer in zip(runs, (0.2, 0.4, 0.6, 0.9), strict=True)
    ]
    drawn: list[tuple[list[float], list[float], str]] = []
    original = Axes.plot

    def record(self: Axes, x: Any, y: Any, *args: Any, label: str = "", **kwargs: Any) -> Any:
        drawn.append((list(x), list(y), label))
        return original(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "plot", record)
    path = plot_curves(runs, tmp_path / "curves.png", ["val/aer"])
    assert path.read_bytes().startswith(b"\x89PNG")
    assert sorted(drawn) == [([100], [pytest.approx(0.4)], "cell=gru"), ([100], [0.9], "cell=lstm")]


def test_debug_runs_are_left_out_and_named_unless_asked_for(sweep: Path) -> None:
    fdr = config(**{"seed": 1, "trainer.fast_dev_run": True})
    fdr["paths"]["output_dir"] = str(sweep / "5_fdr")
    write_run(sweep / "5_fdr", fdr, {"test/bleu": 99.0, "val/bleu_best": 99.0})
    markdown = report(sweep)
    assert "Left out 1 debug run(s)" in markdown and "5_fdr" in markdown
    header, *rows = table(markdown, "Variants (2; mean ± std over seeds)")
    gru = dict(zip(header, rows[1], strict=True))
    assert (gru["seeds"], gru["test BLEU"]) == ("3", "12.00 ± 2.00")  # not joined by the fdr run
    kept = report(sweep, include_debug=True)
    header, *rows = table(kept, "Variants (3; mean ± std over seeds)")
    assert "trainer.fast_dev_run" in header
    cells = {
        (dict(zip(header, r, strict=True))["trainer.fast_dev_run"], r[header.index("seeds")])
        for r in rows
    }
    assert cells == {("true", "1"), ("-", "3"), ("-", "1")}


def test_a_key_older_runs_lack_reads_as_their_options_default() -> None:
    """Runs made before ``scorer.scale_init`` existed had its default (false): a run that sets
    it is a variant of its own, and ``scale``, which every run has at its option's default
    (general: false, scaled_general: true), adds no column beside the scorer's."""
    old = Run("old", config(), {"test/bleu": 20.0})
    control = Run("control", config(**{"scorer.scale": False, "scorer.scale_init": True}), {})
    scaled = Run("scaled", config(**{"scorer.scale": True}), {"test/bleu": 30.0})
    runs = [old, control, scaled]
    columns = config_columns(runs)
    assert "scorer.scale_init" in columns.values() and "scorer.scale" not in columns.values()
    cells = [config_row(run, columns) for run in runs]
    assert [(c["scorer"], c["scorer.scale_init"]) for c in cells] == [
        ("general", "false"),
        ("general", "true"),
        ("scaled_general", "-"),
    ]
    assert len(aggregate(runs, columns)) == 3
