"""Typed schemas of the composed configuration, checked once at start-up before any work.

:func:`validate` checks a training config and returns a :class:`RunConfig`;
:func:`validate_eval`, :func:`validate_eval_data`, :func:`validate_translate` and
:func:`validate_decoding` check what evaluation and translation read. Every failure is a
:class:`ConfigError` naming the key, the value and what is allowed. Data keys are checked by
:mod:`seq2attn.data.pipeline` and the corpus schemas, the ``cpu`` group by
:class:`seq2attn.cpu_tuning.CpuSettings`, a scorer by its class.
"""

from seq2attn.config.run import (
    DecodingSchema,
    RunConfig,
    validate,
    validate_decoding,
    validate_eval,
    validate_eval_data,
    validate_translate,
)
from seq2attn.schema import ConfigError

__all__ = [
    "ConfigError",
    "DecodingSchema",
    "RunConfig",
    "validate",
    "validate_decoding",
    "validate_eval",
    "validate_eval_data",
    "validate_translate",
]
