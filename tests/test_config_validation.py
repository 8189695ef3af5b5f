"""The schema checks: invalid configurations fail at start-up, naming the key, the value and what
is allowed; a valid one comes back as the typed objects the run uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from seq2attn.config import (
    ConfigError,
    RunConfig,
    validate,
    validate_decoding,
    validate_eval,
    validate_translate,
)
from seq2attn.config.run import LengthPenaltyType, OutputPrecision, SearchStrategy
from seq2attn.config.trainer import check_validation_interval
from seq2attn.cpu_tuning import CpuSettings
from seq2attn.data.pipeline import DataPipeline, SentencePieceModel
from seq2attn.data.readers import HFData, Multi30kData, TextPairsData, TsvData
from seq2attn.models.scorers import DotScorer, GeneralScorer
from seq2attn.teacher_forcing import AlwaysSchedule
from tests.conftest import Compose, compose_config, run_refused

TEXT_PAIRS_FILES = [
    f"data.{split}_{side}={split}.{lang}"
    for split in ("train", "val", "test")
    for side, lang in (("src", "de"), ("tgt", "en"))
]
TSV_FILES = [f"data.{split}_file={split}.tsv" for split in ("train", "val", "test")]


def test_default_config_comes_back_typed(compose_train: Compose) -> None:
    run = validate(compose_train(tiny=False))
    assert isinstance(run, RunConfig)
    assert (run.model.attention, run.model.cell, run.model.key_size) == ("luong", "gru", 256)
    assert run.scorer.func is GeneralScorer and run.scorer.keywords == {
        "scale": False,
        "scale_init": False,
    }
    assert isinstance(run.scorer(query_size=4, key_size=6), GeneralScorer)
    assert type(run.data) is DataPipeline and run.data.vocab_size == 1000
    assert run.data.sp_model_type == SentencePieceModel.unigram
    assert run.data.corpus["_target_"] == "seq2attn.data.toy.ToyCorpus"
    assert run.decoding.strategy == SearchStrategy.greedy and run.decoding.beam_size == 1
    assert run.cpu == CpuSettings(
        flush_denormal=True, keep_freed_memory=True, num_threads=None, allocator="system"
    )
    assert isinstance(run.teacher_forcing, AlwaysSchedule)
    assert (run.scheduler_interval, run.anneal_to_time_limit) == ("epoch", False)
    assert (run.label_smoothing, run.nonfinite_loss) == (0.0, "stop")


def test_the_scheduler_keys_the_module_reads(compose_train: Compose) -> None:
    cosine = ["scheduler=warmup_cosine", "trainer.max_steps=400"]
    annealed = [*cosine, "scheduler.anneal_to_time_limit=true"]
    run = validate(compose_train(*annealed, "trainer.max_time=00:00:10:00", tiny=False))
    assert (run.scheduler_interval, run.anneal_to_time_limit) == ("step", True)
    with pytest.raises(ConfigError, match=r"anneal_to_time_limit=true needs trainer\.max_time"):
        validate(compose_train(*annealed, tiny=False))
    with pytest.raises(ConfigError, match=r"anneal_to_time_limit=True: .*needs scheduler=warmup"):
        validate(compose_train("+scheduler.anneal_to_time_limit=true", tiny=False))


@pytest.mark.parametrize(
    ("option", "schema", "key", "value"),
    [
        ("multi30k", Multi30kData, "src_lang", "de"),
        ("text_pairs", TextPairsData, "train_src", "train.de"),
        ("tsv", TsvData, "train_file", "train.tsv"),
        ("hf", HFData, "dataset", "wmt/wmt16"),
    ],
)
def test_each_corpus_checks_its_own_keys(
    compose_train: Compose, option: str, schema: type, key: str, value: str
) -> None:
    files = {"text_pairs": TEXT_PAIRS_FILES, "tsv": TSV_FILES}.get(option, [])
    run = validate(compose_train(f"data={option}", *files, tiny=False))
    assert type(run.data) is schema and getattr(run.data, key) == value
    assert run.data.vocab_size == 8000 and run.data.max_tokens == 4000


def test_a_wrong_corpus_value_names_its_key(compose_train: Compose) -> None:
    with pytest.raises(
        ConfigError, match=r"data\.on_decode_error: .*expected one of \[strict, rep"
    ):
        validate(compose_train("data=multi30k", "data.on_decode_error=ignore", tiny=False))
    with pytest.raises(ConfigError, match=r"^data\.test_file, data\.val_file: not set"):
        validate(compose_train("data=tsv", "data.train_file=a.tsv", tiny=False))
    with pytest.raises(ConfigError, match=r"^data\.corpus: not set; pick a corpus: data=<option>"):
        validate(compose_train("data=base", tiny=False))


def test_scorer_options_are_not_checked_against_sizes_without_attention(
    compose_train: Compose,
) -> None:
    run = validate(compose_train("attention=none", "model.encoder_hidden_size=32", tiny=False))
    assert run.scorer.func is DotScorer  # attention=none picks it, and never builds it


def test_decoding_eval_and_translate_keys_are_checked() -> None:
    assert validate_decoding(OmegaConf.create({"strategy": "beam", "beam_size": 5})).n_best == 1
    with pytest.raises(ConfigError, match=r"decoding\.strategy: .*expected one of"):
        validate_decoding(OmegaConf.create({"strategy": "sample"}))
    evaluation = validate_eval(compose_config("eval", ["ckpt_path=x", "split=val"]))
    assert (evaluation.split.value, evaluation.decoding.beam_size) == ("val", 5)
    assert evaluation.cpu.flush_denormal
    with pytest.raises(ConfigError, match=r"^split: .*'dev', expected one of \[val, test\]"):
        validate_eval(compose_config("eval", ["ckpt_path=x", "split=dev"]))
    beam = validate_eval(
        compose_config(
            "eval",
            [
                "ckpt_path=x",
                "decoding.length_penalty_type=avg",
                "decoding.coverage_penalty=0.2",
                "decoding.no_repeat_ngram_size=3",
                "decoding.min_length_a=0.5",
                "decoding.early_stop=true",
            ],
        )
    ).decoding
    assert beam.length_penalty_type == LengthPenaltyType.avg and beam.coverage_penalty == 0.2
    assert (beam.no_repeat_ngram_size, beam.min_length_a, beam.early_stop) == (3, 0.5, True)
    assert beam.output_precision == OutputPrecision.auto  # the decoding configs' default
    with pytest.raises(ConfigError, match=r"^decoding\.min_length_a=-1\.0: must be >= 0"):
        validate_eval(compose_config("eval", ["ckpt_path=x", "decoding.min_length_a=-1.0"]))
    translation = validate_translate(compose_config("translate", ["ckpt_path=x"]))
    assert (translation.chunk_size, translation.max_tokens) == (2000, 4000)
    with pytest.raises(ConfigError, match=r"^chunk_size=0: must be a positive number"):
        validate_translate(compose_config("translate", ["ckpt_path=x", "chunk_size=0"]))
    for command, validate_command in (("eval", validate_eval), ("translate", validate_translate)):
        assert validate_command(compose_config(command, ["ckpt_path=x"])).parallel_batches == 2
        with pytest.raises(ConfigError, match=r"^parallel_batches=0: must be a positive number"):
            validate_command(compose_config(command, ["ckpt_path=x", "parallel_batches=0"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hidden_size=-1"], r"model\.hidden_size=-1: must be a positive number"),
        (["resume_to=elsewhere"], r"resume_to: Invalid value 'elsewhere'"),
        (["model.dropout=1.5"], r"model\.dropout=1\.5: must lie in \[0, 1\)"),
        (
            ["model.source_word_dropout=1.0"],
            r"model\.source_word_dropout=1\.0: must lie in \[0, 1\)",
        ),
        (
            ["model.target_word_dropout=-0.1"],
            r"model\.target_word_dropout=-0\.1: must lie in \[0, 1\)",
        ),
        (
            ["cell.type=transformer"],
            r"model\.cell: .*'transformer', expected one of \[rnn, gru, lstm\]",
        ),
        (
            ["scorer=dot", "model.hidden_size=32", "model.encoder_hidden_size=32"],
            r"scorer=dot needs query_size == key_size, got query_size=32 and key_size=64;"
            r" set project_keys=true .*model\.hidden_size",
        ),
        (
            ["scorer=scaled_dot", "model.bidirectional=false", "model.encoder_hidden_size=8"],
            r"scorer=scaled_dot needs query_size == key_size",
        ),
        (
            ["attention=bahdanau", "attention.input_feeding=true"],
            r"attention\.input_feeding=true applies to attention=luong only",
        ),
        (["precision=16-mixed", "trainer.accelerator=cpu"], r"precision=16-mixed needs a CUDA GPU"),
        (["decoding=beam", "decoding.n_best=7"], r"decoding\.n_best=7: must lie in \[1, .*=5\]"),
        (
            ["decoding=beam", "decoding.length_penalty_type=wu"],
            r"decoding\.length_penalty_type: .*'wu', expected one of \[gnmt, avg\]",
        ),
        (
            ["decoding.output_precision=fp16"],
            r"decoding\.output_precision: .*'fp16', expected one of \[auto, fp32, bf16\]",
        ),
        (
            ["decoding=beam", "decoding.coverage_penalty=-0.2"],
            r"decoding\.coverage_penalty=-0\.2: must be >= 0 \(0: off\)",
        ),
        (
            ["decoding=beam", "decoding.no_repeat_ngram_size=-1"],
            r"decoding\.no_repeat_ngram_size=-1: must be >= 0 \(0: off\)",
        ),
        (
            ["decoding=beam", "decoding.no_repeat_ngram_size=1.5"],
            r"decoding\.no_repeat_ngram_size: Value '1\.5'",
        ),
        (
            ["decoding.min_length_a=-0.5"],
            r"decoding\.min_length_a=-0\.5: must be >= 0 \(0: off\)",
        ),
        (
            ["decoding.coverage_penalty=0.2"],
            r"decoding\.coverage_penalty=0\.2 with decoding=greedy: .*use decoding=beam",
        ),
        (
            ["decoding.length_penalty_type=avg"],
            r"decoding\.length_penalty_type=avg with decoding=greedy: .*use decoding=beam",
        ),
        (
            ["decoding.early_stop=true"],
            r"decoding\.early_stop=true with decoding=greedy: .*use decoding=beam",
        ),
        (
            ["decoding=beam", "decoding.early_stop=sometimes"],
            r"decoding\.early_stop: Value 'sometimes'",
        ),
        (
            ["attention=none", "decoding=beam", "decoding.coverage_penalty=0.2"],
            r"decoding\.coverage_penalty=0\.2 needs attention weights, and this model has none",
        ),
        (["data.max_tokens=0"], r"data\.max_tokens=0: must be a positive number"),
        (["data.sp_model_type=word"], r"data\.sp_model_type: .*expected one of \[unigram, bpe\]"),
        (["model.param_init=-0.1"], r"model\.param_init=-0\.1: must be a positive number"),
        (["model.bridge=sum"], r"model\.bridge: .*expected one of \[zero, last, mean, linear\]"),
        (["scorer=mlp", "scorer.hidden_sizes=[]"], r"scorer\.hidden_sizes=\[\]"),
        (["scorer=mlp", "scorer.hidden_sizes=[8,0]"], r"scorer\.hidden_sizes=\[8, 0\]: give"),
        (["scorer=additive", "scorer.hidden_size=0"], r"scorer\.hidden_size=0: must be a positive"),
        (["scorer=location", "scorer.max_source_length=-2"], r"scorer\.max_source_length=-2"),
        (["scorer=concat", "scorer.hidden_size=abc"], r"scorer\.hidden_size: Value 'abc'"),
        (
            ["+scorer.hiden_size=8"],
            r"scorer\.hiden_size: not an option of GeneralScorer; allowed: scale, scale_init",
        ),
        (
            ["scorer._target_=seq2attn.models.seq2seq.Seq2Seq"],
            r"scorer\._target_=seq2attn\.models\.seq2seq\.Seq2Seq: not a subclass of .*Scorer",
        ),
        (["data.min_length=0"], r"data\.min_length=0: must lie in \[1, data\.max_length=100\]"),
        (["data.normalization=NFD"], r"data\.normalization: .*expected one of \[NFKC, NFC, none\]"),
        (["data.subword_alpha=0"], r"data\.subword_alpha=0\.0: must be > 0 .*or null"),
        (
            ["data.sp_model_type=bpe", "data.subword_alpha=1.0"],
            r"data\.subword_alpha=1\.0: a bpe model drops each merge .*\(0, 1\)",
        ),
        (
            ["data.sp_model_type=bpe", "data.subword_alpha=0.1", "data.subword_nbest=8"],
            r"data\.subword_nbest=8: a bpe model samples by dropping merges",
        ),
        (["data.subword_alpha=0.1", "data.subword_nbest=1"], r"data\.subword_nbest=1: must be -1"),
        (["data.subword_alpha=0.1", "data.subword_nbest=-2"], r"data\.subword_nbest=-2: must be"),
        (["data.subword_nbest=8"], r"data\.subword_nbest=8 needs data\.subword_alpha"),
        (["data.corpus.num_train=many"], r"data\.corpus\.num_train: Value 'many'"),
        (["+data.corpus.num_trian=5"], r"data\.corpus\.num_trian: not an option of ToyCorpus"),
        (["nonfinite_loss=retry"], r"nonfinite_loss: .*'retry', expected one of \[stop, skip\]"),
        (["cpu.num_threads=0"], r"cpu\.num_threads=0: must be a positive number"),
        (
            ["model.share_embeddings=true", "data.joint_vocab=false"],
            r"model\.share_embeddings=true needs one vocabulary",
        ),
        (["label_smoothing=1.0"], r"label_smoothing=1\.0: must lie in \[0, 1\)"),
    ],
)
def test_invalid_values_are_named(
    compose_train: Compose, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides, tiny=False))


def test_dot_scorer_with_projection_accepts_unequal_sizes(compose_train: Compose) -> None:
    validate(
        compose_train(
            "scorer=dot", "model.encoder_hidden_size=32", "scorer.project_keys=true", tiny=False
        )
    )


def test_unknown_group_option_lists_the_choices(compose_train: Compose) -> None:
    with pytest.raises(ConfigCompositionException, match=r"(?s)cell/transformer.*gru.*lstm.*rnn"):
        compose_train("cell=transformer")


def test_misspelt_key_is_rejected(compose_train: Compose) -> None:
    with pytest.raises(ConfigCompositionException, match=r"model\.hiden_size"):
        compose_train("model.hiden_size=8")


def test_wiring_picks_its_scorer_and_cli_overrides_it(compose_train: Compose) -> None:
    assert compose_train("attention=bahdanau").scorer._target_.endswith("AdditiveScorer")
    assert compose_train("attention=luong").scorer._target_.endswith("GeneralScorer")
    cfg = compose_train("attention=bahdanau", "scorer=dot")
    assert cfg.model.scorer._target_.endswith("DotScorer")
    assert cfg.run_name == "toy_bahdanau-dot-gru"
    assert compose_train("data=multi30k", "data.tgt_lang=fr", tiny=False).run_name == (
        "multi30k-de-fr_luong-general-gru"
    )


def test_two_pass_sampling_needs_a_parallel_decoder(compose_train: Compose) -> None:
    with pytest.raises(ConfigError, match=r"teacher_forcing\.mode=two_pass needs a parallel"):
        validate(
            compose_train(
                "attention=bahdanau", "teacher_forcing=linear", "teacher_forcing.mode=two_pass"
            )
        )
    validate(
        compose_train("attention=luong", "teacher_forcing=linear", "teacher_forcing.mode=two_pass")
    )


def test_invalid_schedule_parameter_is_named(compose_train: Compose) -> None:
    with pytest.raises(ConfigError, match=r"teacher_forcing\.p=1\.5"):
        validate(compose_train("teacher_forcing=constant", "teacher_forcing.p=1.5"))


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_gpu_strategies_are_refused_on_cpu(compose_train: Compose, strategy: str) -> None:
    with pytest.raises(ConfigError, match=r"strategy=\w+Strategy needs a CUDA GPU"):
        validate(compose_train(f"strategy={strategy}", "trainer.accelerator=cpu"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", r"^optimizer: Invalid learning rate: -1"),
        ("+optimizer.bogus=1", r"^optimizer: .*unexpected keyword argument 'bogus'"),
        ("trainer.devices=0", r"^trainer\.devices=0: must be a number of devices >= 1, auto"),
        ("trainer.max_epochs=abc", r"^trainer\.max_epochs=abc: must be a whole number >= -1"),
        ("trainer.max_steps=-2", r"^trainer\.max_steps=-2: must be a whole number >= -1"),
    ],
)
def test_trainer_and_optimizer_values_are_checked_before_any_data(
    compose_train: Compose, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(override))


def test_a_bad_value_ends_train_py_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_refused("train.py", "optimizer.lr=-1", run_dir=tmp_path / "run")
    assert result.returncode == 2
    assert "error: optimizer: Invalid learning rate: -1" in result.stderr
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work: no run folder left


def test_missing_multi30k_files_end_train_py_with_exit_2_and_no_run_folder(tmp_path: Path) -> None:
    empty = tmp_path / "multi30k"
    empty.mkdir()
    result = run_refused(
        "train.py", "data=multi30k", f"data.root={empty}", "data.download=false",
        run_dir=tmp_path / "run",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"error: Multi30k files are missing in {empty} (data.download=false)" in result.stderr
    assert "Traceback" not in result.stderr
    # the run record (config.yaml, run.json) was written before the data was read: it goes too
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", ["eval.py", "translate.py"])
def test_a_missing_ckpt_path_is_one_line_before_any_work(tmp_path: Path, script: str) -> None:
    result = run_refused(script, run_dir=tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ckpt_path is required: a checkpoint file, a run folder")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # refused before the output layer's speed probe, which logs what it chose
    assert "output_precision" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "batches", "message"),
    [
        ({"val_check_interval": 40}, 30, "val_check_interval=40: more than the 30 training"),
        ({"val_check_interval": 20, "devices": 2}, 30, "more than the 15 training batches"),
        ({"val_check_interval": 20, "limit_train_batches": 10}, 30, "more than the 10 training"),
        ({"val_check_interval": 20, "limit_train_batches": 0.5}, 30, "more than the 15 training"),
    ],
)
def test_a_validation_interval_longer_than_an_epoch_is_named(
    overrides: dict, batches: int, message: str
) -> None:
    trainer = OmegaConf.create({"check_val_every_n_epoch": 1, "devices": 1, **overrides})
    with pytest.raises(ConfigError, match=message):
        check_validation_interval(trainer, batches)
    # a step count across epochs, or an interval within the epoch, is fine
    check_validation_interval(OmegaConf.merge(trainer, {"check_val_every_n_epoch": None}), batches)
    check_validation_interval(OmegaConf.merge(trainer, {"val_check_interval": 5}), batches)
