"""Corpora, tokenizers, caching and batching for seq2attn.

Import the modules themselves: this package imports nothing, so ``seq2attn.data.tokenizer``,
``batching`` and ``cache`` load without Lightning (only ``datamodule`` needs it).
"""
