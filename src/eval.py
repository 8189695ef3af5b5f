"""Score a checkpoint on a split: ``python src/eval.py ckpt_path=<ckpt or run folder>``."""

import hydra
from omegaconf import DictConfig

from seq2attn.overrides import exit_unless_allocator


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    # torch and the model code are imported once the command runs: --help answers at once
    from seq2attn.cli import run_cli
    from seq2attn.inference.commands import evaluate

    return run_cli(evaluate, cfg)["bleu"]


if __name__ == "__main__":
    exit_unless_allocator("eval")
    main()
