"""The data group: every option extends conf/data/base.yaml and composes to the values it had
before the shared keys moved there."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml
from omegaconf import OmegaConf

from seq2attn.data.pipeline import DataPipeline
from tests.conftest import CONF_DIR, Compose

DATA_DIR = CONF_DIR / "data"
OPTIONS = sorted(p.stem for p in DATA_DIR.glob("*.yaml") if p.stem != "base")
# per option: a few values as composed, unresolved (interpolations as written)
EXPECTED = {
    "toy": {
        "corpus._target_": "seq2attn.data.toy.ToyCorpus",
        "corpus.num_train": 20000,
        "max_length_ratio": None,
        "vocab_size": 1000,
        "max_tokens": 3000,
    },
    "multi30k": {
        "corpus._target_": "seq2attn.data.readers.Multi30kCorpus",
        "corpus.src_lang": "${data.src_lang}",
        "root": "${oc.env:SEQ2ATTN_DATA,${paths.data_dir}/multi30k}",
        "test_split": "test_2016_flickr",
        "on_decode_error": "strict",
        "max_length_ratio": 3.0,
        "vocab_size": 8000,
        "max_tokens": 4000,
    },
    "text_pairs": {
        "corpus._target_": "seq2attn.data.readers.TextPairsCorpus",
        "corpus.train_src": "${oc.select:data.train_src}",
        "train_src": "???",
        "on_decode_error": "strict",
        "max_length_ratio": 3.0,
        "vocab_size": 8000,
    },
    "tsv": {
        "corpus._target_": "seq2attn.data.readers.TsvCorpus",
        "test_file": "???",
        "on_decode_error": "strict",
        "max_tokens": 4000,
    },
    "hf": {
        "corpus._target_": "seq2attn.data.readers.HFCorpus",
        "dataset": "wmt/wmt16",
        "val_split": "validation",
        "vocab_size": 8000,
    },
}
SHARED = {  # equal in every option
    "_target_": "seq2attn.data.datamodule.TranslationDataModule",
    "normalization": "NFKC",
    "drop_empty": True,
    "max_chars": 1000,
    "min_length": 1,
    "max_length": 100,
    "spm_model": None,
    "joint_vocab": True,
    "sp_model_type": "unigram",
    "character_coverage": 1.0,
    "max_sentences": None,
    "cache_dir": "${paths.cache_dir}",
    "seed": "${seed}",
    "num_workers": 0,
    "subword_alpha": None,
    "subword_nbest": -1,
}


def test_every_option_is_listed() -> None:
    assert sorted(EXPECTED) == OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_to_its_values(compose_train: Compose, option: str) -> None:
    data = OmegaConf.to_container(compose_train(f"data={option}", tiny=False).data)
    assert isinstance(data, dict)
    flat = {**data, **{f"corpus.{k}": v for k, v in data["corpus"].items()}}
    assert {key: flat[key] for key in EXPECTED[option]} == EXPECTED[option]
    assert {key: flat[key] for key in SHARED} == SHARED


def test_base_holds_the_schema_keys_and_options_only_their_own() -> None:
    base = yaml.safe_load((DATA_DIR / "base.yaml").read_text())
    assert list(base) == [f.name for f in fields(DataPipeline)]
    for option in OPTIONS:
        own = yaml.safe_load((DATA_DIR / f"{option}.yaml").read_text())
        assert own["defaults"] == ["base", "_self_"], option
        repeated = (set(own) & set(base)) - {"corpus"}
        assert all(own[key] != base[key] for key in repeated), (option, repeated)
