"""Corpora, tokenizers, caching and batching for seq2attn."""

from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.corpus import ParallelCorpus
from seq2attn.data.datamodule import Batch, TranslationDataModule
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_sentencepiece
from seq2attn.data.toy import ToyCorpus

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "Batch",
    "ParallelCorpus",
    "Tokenizer",
    "TokenBudgetBatchSampler",
    "ToyCorpus",
    "TranslationDataModule",
    "train_sentencepiece",
]
