"""Translate with trained checkpoints, without the training stack (no Lightning import).

from seq2attn.inference import load
translator = load("logs/train/runs/<run>")   # a file, a run folder, or a list (ensemble)
result = translator.translate(["Ein Hund rennt ."])
result.texts, result[0].nbest, result[0].attention_map
"""

from seq2attn.inference.loading import data_config_for, load
from seq2attn.inference.translator import Translation, Translations, TranslationStats, Translator

__all__ = [
    "Translation",
    "TranslationStats",
    "Translations",
    "Translator",
    "data_config_for",
    "load",
]
