"""The tasks behind ``src/eval.py`` and ``src/translate.py``. They import nothing of the
training stack (no Lightning), so a translation starts in the time torch and Hydra take."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from seq2attn.attention_page import PageHeader, PageSentence
from seq2attn.config import ConfigError, DecodingSchema, validate_eval, validate_translate
from seq2attn.cpu_tuning import configure_cpu
from seq2attn.inference.lines import (
    LinePolicy,
    check_input,
    check_outputs,
    open_input,
    open_output,
    read_chunks,
    read_split,
)
from seq2attn.inference.loading import data_config_for, load
from seq2attn.inference.outputs import (
    nbest_lines,
    page_header,
    page_sentence,
    write_attention_page,
    write_heatmaps,
    write_json,
    write_lines,
)
from seq2attn.inference.translator import Translator
from seq2attn.metrics import corpus_scores, output_scores
from seq2attn.search import ranking_of
from seq2attn.shortlist import resolve_output_precision

log = logging.getLogger(__name__)


ATTENTION_SCORES = {
    "attention_entropy": "nats per attention row, teacher-forced pass",
    "aer": "alignment error rate of argmax attention links against the gold word alignments",
}
OUTPUT_SCORES = {
    "repetition_rate": "% of hypotheses with a word n-gram (n >= 2) three times or more",
    "length_ratio": "hypothesis words / reference words (whitespace tokens)",
}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Translate a split with a checkpoint, score it with sacreBLEU (and the output's repetition
    rate and length ratio) and write the outputs."""
    settings = validate_eval(cfg)
    names = checkpoint_names(cfg)
    configure_cpu(settings.cpu)
    translator = load(names, Path(cfg.paths.log_dir))
    settings = dataclasses.replace(
        settings, decoding=resolve_output_precision(settings.decoding, cfg.paths.cache_dir)
    )
    split = settings.split.value
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    data = data_config_for(translator.config["data"], given)  # type: ignore[arg-type]
    evaluation = read_split(data, str(translator.paths[0]), split)
    inputs, pairs = evaluation.inputs, evaluation.texts
    log.info(
        "translating %d sentences of %s with %s",
        len(pairs),
        split,
        ", ".join(map(str, translator.paths)),
    )
    translations = translator.translate(
        inputs.src,
        settings.decoding,
        max_tokens=settings.max_tokens,
        max_sentences=settings.max_sentences,
        max_source_length=settings.max_source_length,
        progress=True,
        parallel_batches=settings.parallel_batches,
    )
    scores, signatures = corpus_scores(translations.texts, pairs.tgt)
    output = output_scores(translations.texts, pairs.tgt)
    alignment = translator.score_attention(
        inputs.src,
        inputs.tgt,
        evaluation.gold,
        max_tokens=settings.max_tokens,
        max_sentences=settings.max_sentences,
        max_source_length=settings.max_source_length,
    )
    attention = {} if alignment is None else alignment.scores()
    output_dir = Path(cfg.paths.output_dir)
    write_lines(output_dir / f"{split}.hyp.txt", translations.texts)
    write_lines(output_dir / f"{split}.ref.txt", pairs.tgt)
    if settings.decoding.n_best > 1:
        nbest = nbest_lines(
            translations.items, translator.tgt_tokenizer, ranking_of(settings.decoding)
        )
        write_lines(output_dir / f"{split}.nbest.txt", nbest)
    if settings.attention_page:
        shown = range(min(settings.attention_page, len(translations)))
        page = write_attention_page(
            _header(f"seq2attn attention: {split}", translator, settings.decoding),
            [page_sentence(translations[i], translator.tgt_tokenizer, pairs.tgt[i]) for i in shown],
            output_dir / f"{split}.attention.html",
        )
        log.info("attention page of %d sentences: %s", len(shown), page)
    paths = [str(path) for path in translator.paths]
    write_json(
        output_dir / "scores.json",
        {
            **scores,
            **output,
            **attention,
            "signatures": signatures,
            "checkpoint": paths if len(paths) > 1 else paths[0],
            "split": split,
            "data": data,
            "decoding": dataclasses.asdict(settings.decoding),
            "sentences": translations.stats.sentences,
            "decode_seconds": translations.stats.seconds,
        },
    )
    for name, value in scores.items():
        log.info("%s = %.2f  %s", name.upper(), value, signatures[name])
    for name, value in output.items():
        log.info("%s = %.3f  %s", name.upper(), value, OUTPUT_SCORES[name])
    for name, value in attention.items():
        log.info("%s = %.3f  %s", name.upper(), value, ATTENTION_SCORES[name])
    log.info("outputs in %s", output_dir)
    return {**scores, **output, **attention}


def translate(cfg: DictConfig) -> None:
    """Translate lines of ``cfg.input`` (or stdin) to ``cfg.output`` (or stdout), in order."""
    settings = validate_translate(cfg)
    names = checkpoint_names(cfg)
    nbest_output = cfg.get("nbest_output")
    check_input(cfg.input)
    check_outputs(cfg.input, {"output": cfg.output, "nbest_output": nbest_output})
    if nbest_output is not None and settings.decoding.n_best == 1:
        log.warning("nbest_output with decoding.n_best=1 holds one hypothesis per line")
    configure_cpu(settings.cpu)
    translator = load(names, Path(cfg.paths.log_dir))
    settings = dataclasses.replace(
        settings, decoding=resolve_output_precision(settings.decoding, cfg.paths.cache_dir)
    )
    attention_dir = Path(cfg.attention_dir) if cfg.attention_dir else None
    page: list[PageSentence] = []
    policy = LinePolicy.for_translate(settings, translator.config)
    ranking = ranking_of(settings.decoding)
    sentences, seconds = 0, 0.0
    with (
        open_input(cfg.input, policy) as source,
        open_output(cfg.output) as sink,
        open_output(nbest_output, "nbest_output")
        if nbest_output is not None
        else nullcontext() as nbest_sink,
        # on a terminal only (stderr): a count of translated sentences and their rate
        tqdm(desc="translating", unit=" sentences", disable=None) as bar,
    ):
        for chunk in read_chunks(source, settings.chunk_size):
            translations = translator.translate(
                chunk,
                settings.decoding,
                max_tokens=settings.max_tokens,
                max_sentences=settings.max_sentences,
                max_source_length=settings.max_source_length,
                parallel_batches=settings.parallel_batches,
            )
            sink.writelines(text + "\n" for text in translations.texts)
            sink.flush()
            if nbest_sink is not None:
                lines = nbest_lines(
                    translations.items, translator.tgt_tokenizer, ranking, sentences
                )
                nbest_sink.writelines(line + "\n" for line in lines)
            sentences += translations.stats.sentences
            bar.update(translations.stats.sentences)
            seconds += translations.stats.seconds
            if attention_dir is not None:
                write_heatmaps(translations.items, attention_dir, len(page) + 1)
                page += [page_sentence(t, translator.tgt_tokenizer) for t in translations]
    log.info(
        "translated %d sentences in %.2f s of search (%.1f sentences/s)",
        sentences,
        seconds,
        sentences / seconds if seconds else 0.0,
    )
    if attention_dir is not None:
        title = f"seq2attn attention: {Path(cfg.input).name if cfg.input else 'stdin'}"
        path = write_attention_page(
            _header(title, translator, settings.decoding), page, attention_dir / "attention.html"
        )
        log.info("attention maps of %d sentences in %s", len(page), path)


def _header(title: str, translator: Translator, decoding: DecodingSchema) -> PageHeader:
    """A page header naming the checkpoint(s) as given relative to the working folder."""
    paths = ", ".join(_shown(path) for path in translator.paths)
    return page_header(title, f"checkpoint {paths}", translator.config, decoding)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else its name."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def checkpoint_names(cfg: DictConfig) -> str | list[str]:
    """``ckpt_path`` as given: one checkpoint (or run folder), or a list of them to ensemble.

    Raises:
        ConfigError: ``ckpt_path`` is not given.
    """
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(
            "ckpt_path is required: a checkpoint file, a run folder (its best checkpoint), last "
            "(the newest run) or a list [a, b] decoded as an ensemble"
        )
    ckpt_path = cfg.ckpt_path
    if OmegaConf.is_list(ckpt_path):
        return [str(path) for path in ckpt_path]
    return str(ckpt_path)
