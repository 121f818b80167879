"""Traitflow: e-commerce event streams -> Item2Vec -> NMF customer trait profiles.

The public API, importable from the package root::

    from traitflow import PipelineConfig, read_events, train, profile_customers, Store

Names resolve lazily (PEP 562): importing ``traitflow`` or ``traitflow.config`` stays cheap, which
the DAG files rely on (the dag-processor parses them every few seconds and must not load numpy,
gensim or scikit-learn).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "PipelineConfig": "traitflow.config",
    "ConfigError": "traitflow.config",
    "ThinDataError": "traitflow.config",
    "ColumnMapping": "traitflow.events",
    "EventsFileError": "traitflow.events",
    "MostlyRejectedError": "traitflow.events",
    "LoadResult": "traitflow.events",
    "load_mapping": "traitflow.events",
    "read_events": "traitflow.events",
    "TraitflowModel": "traitflow.model",
    "TokenTable": "traitflow.model",
    "ProfileBatch": "traitflow.profile_batch",
    "train": "traitflow.pipeline",
    "profile_customers": "traitflow.pipeline",
    "Store": "traitflow.store",
}

__all__ = [
    "ColumnMapping",
    "ConfigError",
    "EventsFileError",
    "LoadResult",
    "MostlyRejectedError",
    "PipelineConfig",
    "ProfileBatch",
    "Store",
    "ThinDataError",
    "TokenTable",
    "TraitflowModel",
    "__version__",
    "load_mapping",
    "profile_customers",
    "read_events",
    "train",
]

if TYPE_CHECKING:
    from traitflow.config import ConfigError, PipelineConfig, ThinDataError
    from traitflow.events import (
        ColumnMapping,
        EventsFileError,
        LoadResult,
        MostlyRejectedError,
        load_mapping,
        read_events,
    )
    from traitflow.model import TokenTable, TraitflowModel
    from traitflow.pipeline import profile_customers, train
    from traitflow.profile_batch import ProfileBatch
    from traitflow.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'traitflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
