"""int8 inference on CPU with ONNX Runtime: a token classifier exported to ONNX, its MatMuls quantized to 8 bits.

It travels with every model bundle. ``pipeline("radiology-ner", ..., quantize="int8")`` runs each layer model (or the
shared model) as an int8 ONNX graph: weights int8, activations quantized on the fly (per block of each row where one
scale per window loses too much, per window elsewhere), the VNNI / AVX-512 kernels of ONNX Runtime
(:func:`quantize_weights`). A bundle may carry the graphs (``onnx/model.int8.onnx`` for the root model,
``onnx/layer_<k>.int8.onnx`` for the others: :func:`graph_files`, :func:`export_int8`), so a user needs no export
step; without them the pipeline exports once into a temporary folder, removed once loaded. Running needs
``onnxruntime``; exporting also needs ``onnx`` and ``onnxscript`` (``pip install "radiology-ner[int8]"``).
Imported only when int8 is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import re
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
PER_BLOCK_LAYERS = 2  # the first encoder layers, every MatMul quantized per block (split_matmuls)
SOURCE_KEY = "radiology_ner.source"  # graph metadata: model_digest of the fp32 model it was exported from


def graph_files(architecture: str, layer_numbers: Sequence[int]) -> list[str]:
    """The paths, inside a bundle, of the int8 graphs of a pipeline's models: the root model (layer 1, or the shared
    model of every layer), then ``layer_<k>`` for each other layer model."""
    numbers = [1] if architecture == "shared" else list(layer_numbers)
    return [f"{INT8_FOLDER}/model.int8.onnx", *(f"{INT8_FOLDER}/layer_{n}.int8.onnx" for n in numbers[1:])]


def _onnxruntime() -> Any:
    """onnxruntime, imported in a try block: transformers then does not require it to load the remote code."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read when it loads: no session file, no usage events
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            'quantize="int8" runs the model with ONNX Runtime: pip install onnxruntime '
            '(and onnx onnxscript to export a bundle that carries no int8 graph), or pip install "radiology-ner[int8]".'
        ) from None
    onnxruntime.disable_telemetry_events()  # also when it was imported before this module
    return onnxruntime


def export_int8(model: torch.nn.Module, path: str | Path, max_length: int) -> Path:
    """Export ``model`` to ONNX (dynamic batch and length up to ``max_length``) and quantize it to int8."""
    _onnxruntime()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, _quiet():
        fp32 = export_fp32(model, Path(folder) / "model.onnx", max_length)
        partial = Path(folder) / path.name
        quantize_weights(fp32, partial)
        onnx = importlib.import_module("onnx")
        graph = onnx.load(str(partial))
        onnx.helper.set_model_props(graph, {SOURCE_KEY: model_digest(model)})
        onnx.save(graph, str(partial))
        os.replace(partial, path)  # complete or absent
    return path


def model_digest(model: torch.nn.Module) -> str:
    """What an int8 graph records of the fp32 model it was exported from: its output count, its classifier and
    samples of its embeddings and of every encoder weight (a graph of another model, or of earlier weights of
    this one, records another digest)."""
    digest = hashlib.sha256(str(getattr(model.config, "num_labels", "")).encode())
    for name, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().cpu().float().flatten()
        digest.update(name.encode())
        digest.update(values[:: max(1, values.numel() // 4096)].numpy().tobytes())
    return digest.hexdigest()[:32]


def export_fp32(model: torch.nn.Module, path: Path, max_length: int) -> Path:
    """The full-precision ONNX graph of ``model``, with dynamic batch and length up to ``max_length``.

    The attention is exported as written out (``eager``: MatMul, Softmax), which ONNX Runtime runs 8-20% faster on
    mBERT-base shapes than the export of PyTorch's fused attention, whose masking adds IsNaN and Where nodes.
    """
    example = {name: torch.ones(2, 16, dtype=torch.long) for name in INPUTS}  # 2 and 16: no dimension fixed to 1
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=max_length)
    with _eager_attention(model):
        torch.onnx.export(
            model.eval(),
            (),
            str(path),
            kwargs=example,
            dynamo=True,
            external_data=False,
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: length} for name in INPUTS},
            verbose=False,
        )
    return path


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """The model with its attention written out, for the time of the export; then as it was."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def quantize_weights(fp32: Path, int8: Path) -> None:
    """Quantize the weighted MatMuls of an fp32 graph to int8, in two ONNX Runtime ways.

    Most go through ``quantize_dynamic`` (weights per output channel, the activations of a whole call with one
    scale: :class:`Int8Model` calls the graph one window at a time; fast kernels). Those where one scale loses too
    much (:func:`split_matmuls`) become ``MatMulNBits`` with 8 bits: weights in blocks of 128 input rows with a
    scale each, and ``accuracy_level=4``, which quantizes the activations per block of each row on the fly (slower
    kernels, but an outlier no longer flattens a whole window).
    On the quality benchmark's trained bundles this keeps 96.8% (softmax) and 98.0% (CRF) of the entities identical
    to fp32, F1 within 0.3 point (README, Speed on CPU).
    """
    onnx = importlib.import_module("onnx")
    quantization = importlib.import_module("onnxruntime.quantization")
    nbits = importlib.import_module("onnxruntime.quantization.matmul_nbits_quantizer")
    model = onnx.load(str(fp32))
    _, per_batch = split_matmuls(model.graph)
    options = {"bits": 8, "block_size": 128, "is_symmetric": True, "accuracy_level": 4}
    quantizer = nbits.MatMulNBitsQuantizer(
        model, **options, nodes_to_exclude=per_batch, algo_config=nbits.DefaultWeightOnlyQuantConfig(**options)
    )
    quantizer.process()
    quantization.quantize_dynamic(
        quantizer.model.model,
        str(int8),
        weight_type=quantization.QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],  # MatMulNBits is another op type: left as it is
    )


def split_matmuls(graph: Any) -> tuple[list[str], list[str]]:
    """The names of the weighted MatMuls that get one activation scale per block of a row, and of the others (one
    scale per window). Per block: every one that narrows its input (each layer's feed-forward output, whose input
    comes out of GELU with outliers, and the classifier) and every one of the first :data:`PER_BLOCK_LAYERS` encoder
    layers, whose errors all later layers carry. The layer of a node is read from the module path the exporter
    records (``...encoder.layer.<n>...``); a graph without it gets per-block scales everywhere.

    Entities identical to fp32 on the quality benchmark's trained MiniLM bundles (softmax / CRF; README, Speed on
    CPU): every MatMul with one scale per batch, 90.2% / 94.7%; this split, 96.8% / 98.0%; every MatMul per block,
    98.3% / 98.5%, but slower on mBERT-base-shaped bundles.
    """
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    weighted = [(node, shapes.get(node.input[1], ())) for node in graph.node if node.op_type == "MatMul"]
    weighted = [(node, shape) for node, shape in weighted if len(shape) == 2]
    layers = {node.name: _encoder_layer(node) for node, _ in weighted}
    known = any(layer is not None for layer in layers.values())
    per_block, per_batch = [], []
    for node, (rows, columns) in weighted:
        layer = layers[node.name]
        first = layer is not None and layer < PER_BLOCK_LAYERS
        (per_block if not known or rows > columns or first else per_batch).append(node.name)
    return per_block, per_batch


def _encoder_layer(node: Any) -> int | None:
    """The encoder layer a node belongs to, from the exporter's name scopes (``bert.encoder.layer.3``...)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            found = re.search(r"\.layer\.(\d+)'", prop.value)
            return int(found.group(1)) if found else None
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantizer's progress lines and advice (warnings, root logger) are not for the user.

    ONNX Runtime's quantizers call ``logging.basicConfig(level=INFO)`` when imported and ``logging.warning`` when
    run, which give a root logger without handlers one that prints: a placeholder handler makes both do nothing,
    so the user's logging is left as it was.
    """
    root, placeholder = logging.getLogger(), logging.NullHandler()
    loggers = [root, logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    root.addHandler(placeholder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.removeHandler(placeholder)
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _session(path: str | Path, options: Any, expected: str) -> Any:
    """An ONNX Runtime session of ``path``, refused unless it is a graph exported from the model it serves."""
    onnxruntime = _onnxruntime()
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own types for every kind of broken file
        raise ValueError(
            f"{path} is not a readable ONNX graph ({type(error).__name__}): export it again with "
            "hf_pipeline.bundle.add_int8(bundle), or delete it to export one on first use."
        ) from None
    recorded = session.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)
    if recorded != expected:
        raise ValueError(
            f"{path} was not exported from this bundle's weights ({'another model' if recorded else 'no record'}): "
            "it would predict another model's entities. Export it again with hf_pipeline.bundle.add_int8(bundle), "
            "or delete it to export one on first use."
        )
    return session


class Int8Model:
    """One int8 ONNX graph, called like the torch model it replaces: ``logits`` for ``input_ids`` and a mask.

    Each window runs alone, without its padding: the MatMuls quantized with one activation scale per call then take
    that scale from the window itself, so a report's entities do not depend on the other texts of its batch.
    """

    def __init__(self, path: str | Path, threads: int, source: str) -> None:
        options = _onnxruntime().SessionOptions()
        options.intra_op_num_threads = threads
        self.session = _session(path, options, source)

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: inputs[name].numpy().astype(np.int64) for name in INPUTS}
        lengths = feeds["attention_mask"].sum(1)
        rows = []
        for row, length in enumerate(lengths):
            feed = {name: np.ascontiguousarray(values[row : row + 1, :length]) for name, values in feeds.items()}
            rows.append(self.session.run(["logits"], feed)[0][0])
        logits = np.zeros((len(rows), feeds["input_ids"].shape[1], rows[0].shape[-1]), dtype=np.float32)
        for row, values in enumerate(rows):
            logits[row, : len(values)] = values
        return torch.from_numpy(logits)


def load_int8(
    models: list[Any], files: list[str], source: str, max_length: int, revision: str | None = None
) -> list[Int8Model]:
    """The int8 graphs of a pipeline's models (``files``: :func:`graph_files`): the bundle's own (a folder or the Hub
    repo's files), else exported now into a temporary folder."""
    _onnxruntime()
    threads = torch.get_num_threads()
    graphs = []
    with tempfile.TemporaryDirectory(prefix="radiology-ner-int8-") as exported:  # removed once the graphs are loaded
        for model, relative in zip(models, files):
            carried = cached_file(source, relative, revision=revision, _raise_exceptions_for_missing_entries=False)
            if carried is None:
                logger.warning(
                    "%s carries no int8 graph (%s): exporting one now; save it with the bundle to skip this step "
                    "(hf_pipeline.bundle.add_int8).",
                    source,
                    relative,
                )
                carried = export_int8(model, Path(exported) / relative, max_length)
            graphs.append(Int8Model(carried, threads, model_digest(model)))
    return graphs
