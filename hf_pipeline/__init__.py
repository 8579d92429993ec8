"""Overlapping NER for Spanish radiology reports: the pipeline, the bundle and the scorer.

``import hf_pipeline`` is cheap: it imports neither torch nor transformers, so the scorer and the dataset tools
start fast. The names below load their module on first use (PEP 562), and the ``radiology-ner`` task is
registered with transformers' pipeline registry as soon as ``transformers.pipelines`` is imported (at once if it
already is), so ``import hf_pipeline`` followed by ``pipeline("radiology-ner", ...)`` finds the task.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hf_pipeline.lazy import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover
    from hf_pipeline.bundle import TASK, load_pipeline, save_bundle
    from hf_pipeline.radiology_ner import RadiologyNerPipeline
    from hf_pipeline.words import decode_bio, word_spans

_LAZY = {
    "TASK": "hf_pipeline.bundle",
    "load_pipeline": "hf_pipeline.bundle",
    "save_bundle": "hf_pipeline.bundle",
    "RadiologyNerPipeline": "hf_pipeline.radiology_ner",
    "decode_bio": "hf_pipeline.words",
    "word_spans": "hf_pipeline.words",
}
METRIC_PATH = str(Path(__file__).resolve().parent / "radiology_ner_metric")
"""The folder of the task's scorer as an ``evaluate`` module: ``evaluate.load(hf_pipeline.METRIC_PATH)``."""
_TRANSFORMERS_PIPELINES = "transformers.pipelines"
_OWN_MODULES = ("hf_pipeline.bundle", "hf_pipeline.radiology_ner")  # they import transformers.pipelines themselves

__all__ = [
    "METRIC_PATH",
    "TASK",
    "RadiologyNerPipeline",
    "decode_bio",
    "load_pipeline",
    "register_task",
    "save_bundle",
    "word_spans",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)


def register_task() -> None:
    """Register ``radiology-ner`` with transformers' local pipeline registry (imports torch; idempotent)."""
    from transformers import AutoModelForTokenClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    from hf_pipeline.bundle import TASK
    from hf_pipeline.radiology_ner import RadiologyNerPipeline

    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is not RadiologyNerPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=RadiologyNerPipeline, pt_model=AutoModelForTokenClassification, type="text"
        )


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Calls :func:`register_task` once ``transformers.pipelines`` is imported and none of our modules is mid-import.

    It watches the modules in ``watched``: when one finishes executing it tries again, so the registration never
    imports a module of this package that is still half-initialised (``bundle`` imports transformers first).
    """

    def __init__(self, watched: Sequence[str]) -> None:
        self.watched = set(watched)
        self.done = {name for name in watched if name in sys.modules}

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname not in self.watched:
            return None
        spec = next(
            (
                found
                for finder in sys.meta_path
                if finder is not self and hasattr(finder, "find_spec")
                for found in [finder.find_spec(fullname, path, target)]
                if found is not None
            ),
            None,
        )
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader.exec_module = self._exec_then_register(fullname, spec.loader.exec_module)
        return spec

    def _exec_then_register(self, fullname: str, exec_module: Any) -> Any:
        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            self.done.add(fullname)
            self.try_register()

        return exec_and_register

    def try_register(self) -> None:
        if _TRANSFORMERS_PIPELINES not in self.done:
            return
        if any(name in sys.modules and name not in self.done for name in _OWN_MODULES):
            return  # one of ours is half-imported; its own completion calls back here
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        register_task()


def _install_registration_hook() -> None:
    if any(getattr(finder, "_radiology_ner_hook", False) for finder in sys.meta_path):
        return
    hook = _RegisterAfterImport([_TRANSFORMERS_PIPELINES, *_OWN_MODULES])
    hook._radiology_ner_hook = True
    sys.meta_path.insert(0, hook)
    hook.try_register()


_install_registration_hook()
