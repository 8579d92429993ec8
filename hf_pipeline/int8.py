"""int8 inference on CPU with ONNX Runtime: a token classifier exported to ONNX, its MatMuls quantized to 8 bits.

It travels with every model bundle. ``pipeline("radiology-ner", ..., quantize="int8")`` runs each layer model (or the
shared model) as an int8 ONNX graph: weights int8 in blocks with a scale each, activations quantized per block on the
fly, the VNNI / AVX-512 kernels of ONNX Runtime (:func:`quantize_weights`). A bundle may carry the graphs
(``onnx/model.int8.onnx`` for the root model, ``onnx/layer_<k>.int8.onnx`` for the others: :func:`graph_files`,
:func:`export_int8`), so a user needs no export step; without them the pipeline exports once into a temporary
folder. Running needs ``onnxruntime``; exporting also needs ``onnx`` and ``onnxscript`` (``pip install
"radiology-ner[int8]"``). Imported only when int8 is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import cached_file

logger = logging.getLogger(__name__)
INT8_FOLDER = "onnx"
INPUTS = ("input_ids", "attention_mask")  # what the pipeline feeds every model (no token types)


def graph_files(architecture: str, layer_numbers: Sequence[int]) -> list[str]:
    """The paths, inside a bundle, of the int8 graphs of a pipeline's models: the root model (layer 1, or the shared
    model of every layer), then ``layer_<k>`` for each other layer model."""
    numbers = [1] if architecture == "shared" else list(layer_numbers)
    return [f"{INT8_FOLDER}/model.int8.onnx", *(f"{INT8_FOLDER}/layer_{n}.int8.onnx" for n in numbers[1:])]


def _onnxruntime() -> Any:
    """onnxruntime, imported in a try block: transformers then does not require it to load the remote code."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            'quantize="int8" runs the model with ONNX Runtime: pip install onnxruntime '
            '(and onnx onnxscript to export a bundle that carries no int8 graph), or pip install "radiology-ner[int8]".'
        ) from None
    return onnxruntime


def export_int8(model: torch.nn.Module, path: str | Path, max_length: int) -> Path:
    """Export ``model`` to ONNX (dynamic batch and length up to ``max_length``) and quantize it to int8."""
    _onnxruntime()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = {name: torch.ones(2, 16, dtype=torch.long) for name in INPUTS}  # 2 and 16: no dimension fixed to 1
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=max_length)
    with tempfile.TemporaryDirectory() as folder, _quiet():
        fp32 = Path(folder) / "model.onnx"
        torch.onnx.export(
            model.eval(),
            (),
            str(fp32),
            kwargs=example,
            dynamo=True,
            external_data=False,
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: length} for name in INPUTS},
            verbose=False,
        )
        partial = Path(folder) / path.name
        quantize_weights(fp32, partial)
        os.replace(partial, path)  # complete or absent
    return path


def quantize_weights(fp32: Path, int8: Path) -> None:
    """Every weighted MatMul to ONNX Runtime's ``MatMulNBits`` with 8 bits: int8 weights in blocks of 128 input
    rows, each with its own scale, and ``accuracy_level=4``, which quantizes the activations to int8 per block of each
    row on the fly and multiplies with int8 kernels (VNNI on this CPU).

    One scale per block of a row, not one per tensor, is what keeps the outliers of the activations (after GELU) from
    flattening everything else: on the quality benchmark's trained bundles it keeps 98% of the entities identical to
    fp32, where ``quantize_dynamic`` (one scale per batch) kept 90% (README, Speed on CPU).
    """
    onnx = importlib.import_module("onnx")
    nbits = importlib.import_module("onnxruntime.quantization.matmul_nbits_quantizer")
    options = {"bits": 8, "block_size": 128, "is_symmetric": True, "accuracy_level": 4}
    quantizer = nbits.MatMulNBitsQuantizer(
        onnx.load(str(fp32)), **options, algo_config=nbits.DefaultWeightOnlyQuantConfig(**options)
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(int8), False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantizer's progress lines and advice (warnings, root logger) are not for the user."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


class Int8Model:
    """One int8 ONNX graph, called like the torch model it replaces: ``logits`` for ``input_ids`` and a mask."""

    def __init__(self, path: str | Path, threads: int) -> None:
        onnxruntime = _onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(inputs[name].numpy(), dtype=np.int64) for name in INPUTS}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def load_int8(
    models: list[Any], files: list[str], source: str, max_length: int, revision: str | None = None
) -> list[Int8Model]:
    """The int8 graphs of a pipeline's models (``files``: :func:`graph_files`): the bundle's own (a folder or the Hub
    repo's files), else exported now into a temporary folder."""
    _onnxruntime()
    threads = torch.get_num_threads()
    exported = None
    graphs = []
    for model, relative in zip(models, files):
        carried = cached_file(source, relative, revision=revision, _raise_exceptions_for_missing_entries=False)
        if carried is None:
            if exported is None:
                exported = tempfile.mkdtemp(prefix="radiology-ner-int8-")
                logger.warning(
                    "%s carries no int8 graph (%s): exporting one now; save it with the bundle to skip this step "
                    "(hf_pipeline.bundle.add_int8).",
                    source,
                    relative,
                )
            carried = export_int8(model, Path(exported) / relative, max_length)
        graphs.append(Int8Model(carried, threads))
    return graphs
