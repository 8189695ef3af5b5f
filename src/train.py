"""Train a seq2seq model: ``python src/train.py attention=bahdanau cell=lstm``."""

import hydra
from omegaconf import DictConfig

from seq2attn.cli import run_cli
from seq2attn.tasks import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_cli(train, cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
