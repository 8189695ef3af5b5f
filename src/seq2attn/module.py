"""Lightning wrapper: loss, teacher forcing, decoding for validation, metrics, optimisers."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from seq2attn.alignment import AttentionAsAlignment
from seq2attn.config import DecodingSchema, RunConfig
from seq2attn.config.model import build_model
from seq2attn.config.run import MODULE_KEYS
from seq2attn.data.datamodule import TranslationDataModule, attached_datamodule
from seq2attn.data.dataset import Batch
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seq2attn.distillation import Teacher
from seq2attn.faults import NonFiniteLoss, largest_over_ranks
from seq2attn.loss import SoftTargets, rdrop_training_nll, token_nll, training_nll
from seq2attn.metrics import bleu_score, corpus_scores, gather_hypotheses
from seq2attn.models.length_shaped import fp32_on_cpu
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.search import decode
from seq2attn.teacher_forcing import Feedback, SamplingMode, Schedule

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]  # (optimizer[, clock=...]) -> scheduler


class Seq2SeqModule(L.LightningModule):
    """Trains a :class:`Seq2Seq` with token-level cross-entropy; validates by decoding + BLEU."""

    def __init__(
        self,
        model: Seq2Seq,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        teacher_forcing: Schedule,
        decoding: DecodingSchema,
        label_smoothing: float = 0.0,
        rdrop_alpha: float = 0.0,
        nonfinite_loss: str = "stop",
        scheduler_interval: str = "epoch",
        anneal_to_time_limit: bool = False,
        free_running_loss: bool = False,
        compile_loop: bool = False,
        teacher: Teacher | None = None,
    ) -> None:
        super().__init__()
        self._compile_loop = compile_loop
        self.teacher = teacher  # not a submodule: neither trained nor saved with the student
        self.free_running_loss = free_running_loss
        self._free_nll = {"val": 0.0, "test": 0.0}
        self.nonfinite_loss = nonfinite_loss
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.anneal_to_time_limit = anneal_to_time_limit
        self.teacher_forcing = teacher_forcing
        self.decoding = decoding
        self.label_smoothing = label_smoothing
        self.rdrop_alpha = rdrop_alpha
        self.translations: dict[str, dict[int, str]] = {}
        self._nll = {"val": 0.0, "test": 0.0}
        self._tokens = {"val": 0, "test": 0}
        self._alignment = {"val": AttentionAsAlignment(), "test": AttentionAsAlignment()}
        self._skip_update = False
        self.skipped_batches = 0

    def on_fit_start(self) -> None:
        """The distillation teacher on the student's device; ``compile_loop``: the decoder's
        per-position function compiled in every process (``ddp_spawn`` hands its workers the
        model pickled, before this hook compiles it)."""
        if self.teacher is not None:
            self.teacher.to(self.device)
        if not self._compile_loop:
            return
        if self.model.decoder.compile_loop():
            log.info("compile_loop=true: the decoder's per-position function is compiled")
        else:
            log.info("compile_loop=true: this decoder has no per-position loop; nothing to compile")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        ratio = self.teacher_forcing(self.global_step)
        loss = self._training_loss(batch, ratio)
        if largest_over_ranks(self.trainer, int(not torch.isfinite(loss).item())):
            message = f"non-finite training loss at step {self.global_step}"
            if self.nonfinite_loss == "stop":
                raise NonFiniteLoss(f"{message}; nonfinite_loss=skip skips such batches")
            self._skip_update = True  # until the optimizer step (gradient accumulation)
            self.skipped_batches += 1
            if self.trainer.is_global_zero:
                log.warning("%s: no update from this batch (nonfinite_loss=skip)", message)
            self.log("train/skipped_batches", float(self.skipped_batches), batch_size=1)
            return loss  # the backward still runs, on every rank: DDP reduces gradients in it
        batch_size = batch.src.size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/tf_ratio", ratio, batch_size=batch_size)
        self.log(
            "train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size
        )
        return loss

    def _training_loss(self, batch: Batch, ratio: float) -> Tensor:
        """The per-token training loss: cross-entropy (smoothed, mixed with a distillation
        teacher's distributions if any), over the batch run twice with R-Drop's consistency term
        when ``rdrop_alpha`` > 0 (:func:`seq2attn.loss.rdrop_training_nll`)."""
        src, lengths, tgt_in, tgt_out = batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out
        if self.rdrop_alpha > 0:  # one batch of twice the rows: independent dropout masks
            src, lengths = src.repeat(2, 1), lengths.repeat(2)
            tgt_in, tgt_out = tgt_in.repeat(2, 1), tgt_out.repeat(2, 1)
        output = self.model(
            src,
            lengths,
            tgt_in,
            teacher_forcing_ratio=ratio,
            sample=self.teacher_forcing.feedback == Feedback.sample,
            two_pass=self.teacher_forcing.mode == SamplingMode.two_pass,
            compute_logits=False,
        )
        soft = None if self.teacher is None else self.teacher.soft_targets(batch)
        if self.rdrop_alpha == 0:
            loss = training_nll(self.model, output, tgt_out, self.label_smoothing, soft)
            return loss / batch.num_target_tokens
        if soft is not None:
            soft = SoftTargets(soft.logits.repeat(2, 1, 1), soft.weight)
        total, symmetric_kl = rdrop_training_nll(
            self.model, output, tgt_out, self.rdrop_alpha, self.label_smoothing, soft
        )
        tokens = batch.num_target_tokens
        self.log("train/rdrop_kl", symmetric_kl / tokens, batch_size=batch.src.size(0))
        return total / (2 * tokens)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """The update, or none after a non-finite loss under ``nonfinite_loss=skip``: the closure
        (forward, backward) has run on every rank; its gradients are dropped (zeroed before the
        next backward). A skipped batch still counts as a step toward ``max_steps``, as
        Lightning counts every call of this hook."""
        if self.nonfinite_loss != "skip" or optimizer_closure is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
            return
        loss = optimizer_closure()
        skip, self._skip_update = self._skip_update, False
        if not skip:
            optimizer.step(closure=lambda: loss)

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        # a metric (not trainer.global_step) so that spawned processes report it back too
        self.log("trainer/global_step", float(self.global_step), batch_size=1)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _start_evaluation(self, split: str) -> None:
        self._nll[split], self._tokens[split], self._free_nll[split] = 0.0, 0, 0.0
        self._alignment[split] = AttentionAsAlignment()
        self.translations[split] = {}

    def _evaluation_step(self, batch: Batch, split: str) -> None:
        forced = self.model(batch.src, batch.src_lengths, batch.tgt_in)
        assert forced.logits is not None
        self._nll[split] += token_nll(forced.logits, batch.tgt_out).item()
        self._tokens[split] += batch.num_target_tokens
        if self.free_running_loss:  # the decoder fed its own argmax, scored on the reference
            free = self.model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing_ratio=0.0)
            assert free.logits is not None
            self._free_nll[split] += token_nll(free.logits, batch.tgt_out).item()
        if forced.attention is not None:
            gold = attached_datamodule(self.trainer).gold_alignments(split)
            self._alignment[split].add(
                forced.attention,
                batch.tgt_out != PAD_ID,
                batch.src_lengths,
                [None] * len(batch.indices) if gold is None else [gold[i] for i in batch.indices],
            )
        # in fp32 on a CPU, as src/eval.py decodes a checkpoint: the BLEU a run reports is eval.py's
        with fp32_on_cpu(batch.src):
            found = decode(self.model, batch.src, batch.src_lengths, self.decoding, BOS_ID, EOS_ID)
        best = [nbest[0] for nbest in found]
        texts = attached_datamodule(self.trainer).tgt_tokenizer.decode([hyp.tokens for hyp in best])
        self.translations[split].update(zip(batch.indices.tolist(), texts, strict=True))

    def _end_evaluation(self, split: str) -> None:
        nll, tokens, free_nll = self._nll[split], self._tokens[split], self._free_nll[split]
        alignment = self._alignment[split]
        if dist.is_available() and dist.is_initialized():
            totals = torch.tensor(
                [nll, float(tokens), free_nll, *alignment.totals()],
                dtype=torch.float64,
                device=self.device,
            )
            dist.all_reduce(totals)
            nll, tokens, free_nll = totals[0].item(), int(totals[1].item()), totals[2].item()
            alignment = AttentionAsAlignment.from_totals(totals[3:].tolist())
        merged = gather_hypotheses(self.translations[split])
        self.translations[split] = merged
        references = attached_datamodule(self.trainer).references(split)
        indices = sorted(merged)
        hyps = [merged[i] for i in indices]
        refs = [references[i] for i in indices]
        loss = nll / max(tokens, 1)
        metrics = {"loss": loss, "ppl": float(torch.tensor(loss).exp())}
        if split == "test":
            scores, _ = corpus_scores(hyps, refs)
            metrics.update(scores)
        else:
            metrics["bleu"] = bleu_score(hyps, refs)
        metrics.update(alignment.scores())
        if self.free_running_loss:  # exposure bias: the loss the model's own inputs add
            metrics["free_running_loss"] = free_nll / max(tokens, 1)
            metrics["exposure_gap"] = metrics["free_running_loss"] - loss
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, prog_bar=name == "bleu", sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning does not keep RNG states; a resumed run continues the same random streams
        # (each rank restores its own process's states: every rank reads rank 0's file, and
        # DDP ranks draw from streams seeded alike)
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": _numpy_state(),
        }
        checkpoint["skipped_batches"] = self.skipped_batches

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
        if states := checkpoint.get("rng"):
            torch.set_rng_state(states["torch"])
            cuda = states.get("cuda", [])
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            random.setstate(states["python"])
            name, keys, position, has_gauss, cached = states["numpy"]
            np.random.set_state((name, keys.numpy(), position, has_gauss, cached))

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as Lightning does, except under bf16-mixed: Lightning's mixed-precision plugin
        refuses to clip for a fused optimizer, which unscales fp16 gradients inside its step, but
        bf16 has no scaler, so the gradients are clipped here as they are."""
        plugin = self.trainer.precision_plugin
        scaled = not isinstance(plugin, MixedPrecision) or plugin.scaler is not None
        if not gradient_clip_val or scaled:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)

    def time_limit_spent(self) -> float:
        """The share of ``trainer.max_time`` spent training, 0 without a time limit; a step that
        starts past the limit counts the whole limit spent."""
        callbacks = getattr(self.trainer, "callbacks", [])  # set by Trainer.__init__
        timer = next((c for c in callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if timer is None or remaining is None:
            return 0.0
        elapsed = timer.time_elapsed("train")
        return elapsed / max(elapsed + max(remaining, 0.0), 1e-9)

    def configure_optimizers(self) -> Any:
        overrides = {}
        fused = getattr(self.optimizer_factory, "keywords", {}).get("fused", False)
        if fused and str(self.trainer.precision) == "16-mixed":
            # fp16's gradient scaler: a fused optimizer unscales inside its step, after clipping
            log.info("optimizer.fused=true is set aside under %s precision", self.trainer.precision)
            overrides["fused"] = False
        optimizer = self.optimizer_factory(self.parameters(), **overrides)
        if self.scheduler_factory is None:
            return optimizer
        if self.anneal_to_time_limit:
            scheduler = self.scheduler_factory(optimizer, clock=self.time_limit_spent)
        else:
            scheduler = self.scheduler_factory(optimizer)
        if self.scheduler_interval == "step":
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val/bleu",
                "interval": "epoch",
                # epochs without validation (check_val_every_n_epoch > 1) skip the step
                "strict": False,
            },
        }


def _numpy_state() -> tuple[Any, ...]:
    """NumPy's legacy RNG state as plain types (weights-only loadable)."""
    state = np.random.get_state()
    assert isinstance(state, tuple)
    name, keys, position, has_gauss, cached = state
    return (name, torch.from_numpy(np.array(keys)), position, has_gauss, cached)


def build_module(
    cfg: DictConfig,
    run: RunConfig,
    datamodule: TranslationDataModule,
    teacher: Teacher | None = None,
) -> Seq2SeqModule:
    """Build the network at the tokenizers' vocabulary sizes and wrap it for training; ``run``
    is the checked config (:func:`seq2attn.config.validate`), ``cfg`` gives the nodes to build,
    ``teacher`` the distillation teacher (:func:`seq2attn.distillation.load_teacher`)."""
    model = build_model(
        run.model,
        run.scorer,
        datamodule.src_tokenizer.vocab_size,
        datamodule.tgt_tokenizer.vocab_size,
    )
    scheduler = None
    if cfg.get("scheduler"):
        node = OmegaConf.to_container(cfg.scheduler, resolve=True)
        assert isinstance(node, dict)
        scheduler = instantiate({k: v for k, v in node.items() if k not in MODULE_KEYS})
    return Seq2SeqModule(
        model=model,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        scheduler_interval=run.scheduler_interval,
        anneal_to_time_limit=run.anneal_to_time_limit,
        teacher_forcing=run.teacher_forcing,
        decoding=run.decoding,
        label_smoothing=run.label_smoothing,
        rdrop_alpha=run.rdrop_alpha,
        nonfinite_loss=run.nonfinite_loss,
        free_running_loss=run.free_running_loss,
        compile_loop=run.compile_loop,
        teacher=teacher,
    )
