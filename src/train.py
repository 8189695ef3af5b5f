"""Train a seq2seq model: ``python src/train.py attention=bahdanau cell=lstm``."""

import hydra
from omegaconf import DictConfig, OmegaConf

from seq2attn.overrides import exit_on_override_error, exit_unless_allocator


def run_folder(ckpt_path: str | None, resume_to: str, log_dir: str, new_folder: str) -> str:
    """Hydra's run folder: the resumed run's own with ``resume_to=same_folder``, else a new one."""
    from seq2attn.checkpoints.loading import run_folder_to_resume

    same = run_folder_to_resume(ckpt_path, log_dir) if resume_to == "same_folder" else None
    return new_folder if same is None else str(same)


OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # the training stack (torch, Lightning) is imported once a run starts: --help answers at once
    from seq2attn.cli import run_cli
    from seq2attn.tasks import train

    metrics = run_cli(train, cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    exit_on_override_error("train")
    exit_unless_allocator("train")
    main()
