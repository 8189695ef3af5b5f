"""Adding a scorer is one class and one YAML file: here both live in this test (the YAML in a
temporary config folder on Hydra's search path), and the scorer is validated, trained and
counted without a change to any other file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from seq2attn.config import ConfigError, validate
from seq2attn.flops import count_flops
from seq2attn.models.scorers import Scorer, TokenCosts
from seq2attn.tasks import train
from tests.conftest import Compose

SCORER_YAML = """\
_target_: tests.test_config_new_scorer.CosineScorer
_partial_: true
# the score's scale: cosines lie in [-1, 1], too flat for a softmax
temperature: 5.0
"""


class CosineScorer(Scorer):
    """Cosine score: score(h_t, h_s) = tau * cos(h_t, P h_s), P of shape (Hq, Hk)."""

    def __init__(self, query_size: int, key_size: int, temperature: float = 5.0) -> None:
        self.check(query_size, key_size, temperature)
        super().__init__(query_size, key_size)
        self.P = nn.Linear(key_size, query_size, bias=False)
        self.temperature = temperature

    @classmethod
    def check(cls, query_size: int, key_size: int, temperature: float = 5.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: must be a positive number")

    def prepare(self, keys: Tensor) -> Tensor:
        return F.normalize(self.P(keys), dim=-1)  # (B, S, Hq)

    def score(self, query: Tensor, prepared: Tensor) -> Tensor:
        return self.temperature * F.normalize(query, dim=-1) @ prepared.transpose(1, 2)

    def flops(self) -> TokenCosts:
        q, k = self.query_size, self.key_size
        return TokenCosts(source=2 * k * q, target=0, pair=2 * q)


@pytest.fixture
def compose_cosine(compose_train: Compose, tmp_path: Path) -> Compose:
    """``compose_train`` with ``conf/scorer/cosine.yaml`` on the search path, and picked."""
    (tmp_path / "extra" / "scorer").mkdir(parents=True)
    (tmp_path / "extra" / "scorer" / "cosine.yaml").write_text(SCORER_YAML)
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'extra'}]"

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_train(searchpath, "scorer=cosine", *overrides, tiny=tiny)

    return _compose


def test_the_new_option_composes_and_validates(compose_cosine: Compose) -> None:
    cfg = compose_cosine(tiny=False)
    assert cfg.run_name == "toy_luong-cosine-gru"
    run = validate(cfg)
    assert run.scorer.func is CosineScorer and run.scorer.keywords == {"temperature": 5.0}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scorer.temperature=-1", r"^scorer\.temperature=-1\.0: must be a positive number$"),
        ("scorer.temperature=hot", r"^scorer\.temperature: Value 'hot' .* converted to Float"),
        (
            "+scorer.temprature=2",
            r"^scorer\.temprature: not an option of CosineScorer; allowed: temperature$",
        ),
    ],
)
def test_a_wrong_option_is_named_with_what_is_allowed(
    compose_cosine: Compose, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_cosine(override, tiny=False))


def test_the_new_scorer_trains_and_its_gradients_reach_it(compose_cosine: Compose) -> None:
    cfg = compose_cosine("model.hidden_size=16", "model.embedding_size=8")
    validate(cfg)
    torch.manual_seed(0)
    model = instantiate(cfg.model, src_vocab_size=20, tgt_vocab_size=22)
    output = model(
        torch.randint(4, 20, (3, 5)), torch.tensor([5, 4, 2]), torch.randint(4, 22, (3, 6))
    )
    F.cross_entropy(output.logits.flatten(0, 1), torch.randint(4, 22, (18,))).backward()
    scorer = model.decoder.attention.scorer
    assert isinstance(scorer, CosineScorer) and scorer.P.weight.grad.abs().sum() > 0

    metrics = train(compose_cosine("debug=fdr"))
    assert math.isfinite(metrics["train/loss"])


def test_the_new_scorer_counts_its_flops(compose_cosine: Compose) -> None:
    sizes = ["model.hidden_size=10", "model.embedding_size=6", "model.dropout=0"]
    cfg = compose_cosine(*sizes, "model.bridge=zero")  # flops.py leaves the bridge out
    model = instantiate(cfg.model, src_vocab_size=17, tgt_vocab_size=19).eval()
    batch, source, target = 3, 5, 4
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(4, 17, (batch, source)), torch.full((batch,), source),
              torch.randint(4, 19, (batch, target)))  # fmt: skip
    counted = count_flops(model, batch * source, batch * target, pairs=batch * source * target)
    assert counted.forward == counter.get_total_flops() > 0
