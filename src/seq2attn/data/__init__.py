"""Corpora, tokenizers, caching and batching for seq2attn."""

from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.corpus import CorpusError, ParallelCorpus
from seq2attn.data.datamodule import Batch, TranslationDataModule, build_datamodule
from seq2attn.data.preprocess import LengthFilter, TextFilter
from seq2attn.data.readers import HFCorpus, Multi30kCorpus, TextPairsCorpus, TsvCorpus
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_sentencepiece
from seq2attn.data.toy import ToyCorpus

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "Batch",
    "CorpusError",
    "HFCorpus",
    "LengthFilter",
    "Multi30kCorpus",
    "ParallelCorpus",
    "TextFilter",
    "TextPairsCorpus",
    "TsvCorpus",
    "Tokenizer",
    "TokenBudgetBatchSampler",
    "ToyCorpus",
    "TranslationDataModule",
    "build_datamodule",
    "train_sentencepiece",
]
