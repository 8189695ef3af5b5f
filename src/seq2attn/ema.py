"""An exponential moving average of the weights (``ema.*``; Polyak averaging, fairseq's
``--ema-decay``), kept beside training:

    θ̄ ← θ                          after each optimizer step up to ``start_step``,
    θ̄ ← d·θ̄ + (1 − d)·θ            after each later one,

with ``d`` the decay: the last ``1/(1 − d)`` steps carry 63 % of θ̄'s weight. Training goes on
with ``θ``; validation, the kept checkpoints and the closing test use ``θ̄``. A checkpoint's
``state_dict`` holds ``θ̄``, so eval, translate, averaging, a warm start and a distillation
teacher read the averaged model unchanged; ``θ`` is kept under ``checkpoint["ema"]`` for a resume.

Lightning's own ``EMAWeightAveraging`` copies the whole LightningModule (a distillation teacher
held by it included) and lets a resume switch the average off unnoticed; this one averages the
network's parameters alone, in fp32, and a resume that would switch it on or off is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from seq2attn.checkpoints import MODEL_PREFIX, CheckpointError
from seq2attn.checkpoints.loading import read_checkpoint
from seq2attn.config.run import EMASchema

KEY = "ema"  # the checkpoint entry: decay, updates and the training weights θ


class WeightEMA(Callback):
    """Keeps θ̄ of ``pl_module.model``'s parameters and shows it to validation and checkpoints.

    It must run before any callback that saves in ``on_train_batch_end`` (``ResumeCheckpoint``),
    so that a step's checkpoint holds that step's θ̄.
    """

    def __init__(self, decay: float, start_step: int = 0) -> None:
        self.decay = decay
        self.start_step = start_step
        self.updates = 0  # optimizer steps averaged into θ̄ (those after start_step)
        self._averages: list[torch.Tensor] = []  # θ̄, fp32
        self._names: list[list[str]] = []  # each parameter's names (a tied weight has several)
        self._held: list[torch.Tensor] | None = None  # θ, while the module shows θ̄
        self._last_step = 0
        self._restored: dict[str, Any] | None = None

    @staticmethod
    def _parameters(pl_module: L.LightningModule) -> list[torch.Tensor]:
        return [p.detach() for p in pl_module.model.parameters()]  # type: ignore[union-attr]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # a resume (the model was restored from state_dict, θ̄): θ̄ and θ are put in place when
        # training starts, on the device the parameters are on by then
        if trainer.state.fn == "fit":
            self._restored = {KEY: checkpoint.get(KEY), "state_dict": checkpoint["state_dict"]}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = pl_module.model.named_parameters(remove_duplicate=False)  # type: ignore[union-attr]
        names: dict[int, list[str]] = {}
        for name, parameter in named:
            names.setdefault(id(parameter), []).append(MODEL_PREFIX + name)
        self._names = [names[id(p)] for p in pl_module.model.parameters()]  # type: ignore[union-attr]
        parameters = self._parameters(pl_module)
        self._averages = [p.float().clone() for p in parameters]
        if self._restored is not None and self._restored[KEY] is not None:
            stored, state = self._restored[KEY], self._restored["state_dict"]
            with torch.no_grad():
                for parameter, average, names_of in zip(
                    parameters, self._averages, self._names, strict=True
                ):
                    average.copy_(state[names_of[0]])
                    parameter.copy_(stored["training_weights"][names_of[0]])
            self.updates = int(stored["updates"])
        self._restored = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # restored by now, on a resume

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self._last_step:  # no optimizer step (gradient accumulation)
            return
        self._last_step = trainer.global_step
        parameters = [p.float() for p in self._parameters(pl_module)]
        with torch.no_grad():
            if trainer.global_step <= self.start_step:
                torch._foreach_copy_(self._averages, parameters)
            else:
                torch._foreach_lerp_(self._averages, parameters, 1.0 - self.decay)
                self.updates += 1

    def _show_average(self, pl_module: L.LightningModule) -> None:
        if self._held is not None or not self._averages:
            return
        parameters = self._parameters(pl_module)
        self._held = [p.clone() for p in parameters]
        with torch.no_grad():
            torch._foreach_copy_(parameters, self._averages)

    def _show_training(self, pl_module: L.LightningModule) -> None:
        if self._held is None:
            return
        with torch.no_grad():
            torch._foreach_copy_(self._parameters(pl_module), self._held)
        self._held = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._show_average(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a checkpoint saved at this validation gets θ̄ and θ either way (on_save_checkpoint)
        if trainer.state.fn == "fit":
            self._show_training(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the run's model is θ̄: the closing test and its translations use it; θ stays held for
        # the last.ckpt written after this
        self._show_average(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the module keeps θ̄; θ and the fp32 θ̄ are not needed by the closing test
        self._held, self._averages = None, []

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._averages:
            return
        training = self._held if self._held is not None else self._parameters(pl_module)
        state, weights = checkpoint["state_dict"], {}
        for names_of, average, weight in zip(self._names, self._averages, training, strict=True):
            shown = average.to(weight.dtype)  # one tensor for all names of a tied weight
            for name in names_of:
                state[name], weights[name] = shown, weight
        checkpoint[KEY] = {
            "decay": self.decay,
            "updates": self.updates,
            "training_weights": weights,
        }


def weight_ema(settings: EMASchema) -> WeightEMA | None:
    """The callback for ``ema.*``, None while ``ema.decay`` is null."""
    if settings.decay is None:
        return None
    return WeightEMA(settings.decay, settings.start_step)


def check_resumable_average(path: Path, settings: EMASchema) -> None:
    """Refuse a resume that would switch the moving average on or off: without it, the run
    would train on from θ̄ (the checkpoint's ``state_dict``) instead of θ; with it, from a
    checkpoint that keeps no θ̄, the average would restart mid-run."""
    stored = read_checkpoint(path, mmap=True).get(KEY)
    if stored is None and settings.decay is not None:
        raise CheckpointError(
            f"{path}: trained without a moving average of the weights, and ema.decay="
            f"{settings.decay} would start one mid-run; resume with ema.decay=null, or start a "
            "new run from its weights with init_from"
        )
    if stored is not None and settings.decay is None:
        raise CheckpointError(
            f"{path}: trained with a moving average of the weights (ema.decay={stored['decay']}); "
            f"resume with ema.decay={stored['decay']}, or start a new run from its averaged "
            "weights with init_from"
        )
