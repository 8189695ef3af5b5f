"""Invalid configurations fail at start-up, naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from seq2attn.config import ConfigError, validate
from tests.conftest import Compose


def test_default_config_is_valid(compose_train: Compose) -> None:
    validate(compose_train(tiny=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.hidden_size=-1"], r"model\.hidden_size=-1: must be a positive number"),
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
            r"scorer=DotScorer needs equal query and key sizes.*model\.hidden_size=32.*64"
            r".*scorer\.project_keys=true",
        ),
        (
            ["scorer=scaled_dot", "model.bidirectional=false", "model.encoder_hidden_size=8"],
            r"scorer=ScaledDotScorer needs equal query and key sizes",
        ),
        (
            ["attention=bahdanau", "attention.input_feeding=true"],
            r"attention\.input_feeding=true applies to attention=luong only",
        ),
        (["precision=16-mixed", "trainer.accelerator=cpu"], r"precision=16-mixed needs a CUDA GPU"),
        (["decoding=beam", "decoding.n_best=7"], r"decoding\.n_best=7: must lie in \[1, .*=5\]"),
        (["data.max_tokens=0"], r"data\.max_tokens=0: must be a positive number"),
        (["data.sp_model_type=word"], r"data\.sp_model_type: .*expected one of \[unigram, bpe\]"),
        (["model.param_init=-0.1"], r"model\.param_init=-0\.1: must be a positive number"),
        (["model.bridge=sum"], r"model\.bridge: .*expected one of \[zero, last, mean, linear\]"),
        (["scorer=mlp", "scorer.hidden_sizes=[]"], r"scorer\.hidden_sizes=\[\]"),
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
    assert cfg.run_name == "bahdanau-dot-gru"


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
