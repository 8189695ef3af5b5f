"""Translate lines from stdin or a file: ``python src/translate.py ckpt_path=<ckpt>``."""

import hydra
from omegaconf import DictConfig

from seq2attn.overrides import exit_unless_allocator


@hydra.main(version_base="1.3", config_path="../conf", config_name="translate")
def main(cfg: DictConfig) -> None:
    # torch and the model code are imported once the command runs: --help answers at once
    from seq2attn.cli import run_cli
    from seq2attn.inference.commands import translate

    run_cli(translate, cfg)


if __name__ == "__main__":
    exit_unless_allocator("translate")
    main()
