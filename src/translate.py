"""Translate lines from stdin or a file: ``python src/translate.py ckpt_path=<ckpt>``."""

import hydra
from omegaconf import DictConfig

from seq2attn.cli import run_cli
from seq2attn.inference.commands import translate


@hydra.main(version_base="1.3", config_path="../conf", config_name="translate")
def main(cfg: DictConfig) -> None:
    run_cli(translate, cfg)


if __name__ == "__main__":
    main()
