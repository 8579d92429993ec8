"""int8 inference on CPU with ONNX Runtime: a token classifier exported to ONNX, its MatMuls quantized to 8 bits.

It travels with every model bundle. ``pipeline("radiology-ner", ..., quantize="int8")`` runs each layer model (or the
shared model) as an int8 ONNX graph: weights int8 with a scale per output column, activations quantized on the fly
with a scale per row (per token), ONNX Runtime's integer kernels (:func:`quantize_weights`). A bundle may carry the
graphs (``onnx/model.int8.onnx`` for the root model, ``onnx/layer_<k>.int8.onnx`` for the others: :func:`graph_files`,
:func:`export_int8`), so a user needs no export step; without them the pipeline exports once into a temporary folder,
removed once loaded. Running needs ``onnxruntime``; exporting also needs ``onnx`` and ``onnxscript``
(``pip install "radiology-ner[int8]"``).
Imported only when int8 is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
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
OPSET = 21  # QuantizeLinear by blocks (quantize_weights)
ROW_ZERO_POINT = 128  # each row's int8 values shifted into uint8, for ONNX Runtime's u8 x s8 kernels
WEIGHT_LEVELS = 63  # weights in [-63, 63]: AVX2 kernels add pairs of u8 x s8 products in int16, which must not saturate
SOURCE_KEY = "radiology_ner.source"  # graph metadata: model_digest of the fp32 model it was exported from
ROW_CONSTANTS = {
    "int8_one": np.array(1.0, np.float32),  # MatMulIntegerToFloat's input scale: the rows' own come after it
    "int8_zero_point": np.array(ROW_ZERO_POINT, np.uint8),
    "int8_last_axis": np.array([-1], np.int64),
    "int8_smallest": np.array(1e-12, np.float32),  # a row of zeros keeps a scale that divides
    "int8_step": np.array(1 / 127, np.float32),
}


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
        graph, onnx = quantize_weights(fp32), importlib.import_module("onnx")
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
            opset_version=OPSET,
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


def quantize_weights(fp32: Path) -> Any:
    """The fp32 graph at ``fp32`` with every weighted MatMul rewritten as int8 by int8, one activation scale per row.

    Each row of a MatMul's input (one token) is quantized on its own, symmetrically: its scale is its largest
    absolute value over 127, its values shifted by 128 into ``uint8`` (``QuantizeLinear`` with one block per row).
    The weights are ``int8`` in [-63, 63] with a scale per output column (:data:`WEIGHT_LEVELS`). ONNX Runtime's
    ``MatMulIntegerToFloat`` multiplies the two and applies the weights' scales; a ``Mul`` applies the rows'. A
    token's outputs then depend on that token's values alone, never on the other tokens or texts of a call: a
    report's entities are the same alone and in any batch. One quantized input serves every MatMul that reads it
    (query, key and value).
    """
    onnx = importlib.import_module("onnx")
    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer if len(tensor.dims) == 2}
    rows: dict[str, tuple[str, str]] = {}  # an input's name: its quantized rows and their scales
    nodes, added = [], [_constant(onnx, name, value) for name, value in ROW_CONSTANTS.items()]
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None:
            nodes.append(node)
            continue
        if node.input[0] not in rows:
            rows[node.input[0]] = _quantize_rows(onnx, node.input[0], f"int8_rows_{len(rows)}", weight.dims[0], nodes)
        quantized, scales = rows[node.input[0]]
        values, column_scales = _quantize_columns(onnx.numpy_helper.to_array(weight))
        name = f"int8_{len(added)}"
        added += [_constant(onnx, f"{name}_weight", values), _constant(onnx, f"{name}_scale", column_scales)]
        inputs = [quantized, f"{name}_weight", "int8_one", f"{name}_scale", "int8_zero_point"]
        nodes += [
            onnx.helper.make_node("MatMulIntegerToFloat", inputs, [f"{name}_out"], domain="com.microsoft"),
            onnx.helper.make_node("Mul", [f"{name}_out", scales], list(node.output)),
        ]
    used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + added)
    _add_runtime_domain(onnx, model)
    return model


def _quantize_rows(onnx: Any, source: str, name: str, width: int, nodes: list[Any]) -> tuple[str, str]:
    """Append the nodes that quantize each row of ``source`` (``width`` values) to ``nodes``; their outputs."""
    make = onnx.helper.make_node
    zero_point = onnx.numpy_helper.from_array(np.array([ROW_ZERO_POINT], np.uint8))
    nodes += [
        make("Abs", [source], [f"{name}_abs"]),
        make("ReduceMax", [f"{name}_abs", "int8_last_axis"], [f"{name}_max"], keepdims=1),
        make("Max", [f"{name}_max", "int8_smallest"], [f"{name}_kept"]),
        make("Mul", [f"{name}_kept", "int8_step"], [f"{name}_scale"]),
        make("Shape", [f"{name}_scale"], [f"{name}_shape"]),
        make("ConstantOfShape", [f"{name}_shape"], [f"{name}_zero_point"], value=zero_point),
        make("QuantizeLinear", [source, f"{name}_scale", f"{name}_zero_point"], [name], axis=-1, block_size=width),
    ]
    return name, f"{name}_scale"


def _quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``int8`` weights ``[in, out]`` with a symmetric scale per output column, and those scales."""
    scales = np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS
    return np.round(weight / scales).astype(np.int8), scales.astype(np.float32)


def _constant(onnx: Any, name: str, value: np.ndarray) -> Any:
    return onnx.numpy_helper.from_array(np.asarray(value), name)


def _add_runtime_domain(onnx: Any, model: Any) -> None:
    """ONNX Runtime's operator domain, for ``MatMulIntegerToFloat``."""
    if all(entry.domain != "com.microsoft" for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and advice (warnings, log records) are not for the user.

    A placeholder handler on the root logger keeps a record sent while it has no handler from reaching Python's
    last-resort printer, and keeps ``logging.basicConfig`` from giving it one: the user's logging is left as it was.
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

    A report's entities do not depend on the other texts of its batch, twice over: every MatMul quantizes each
    token's row with a scale of its own (:func:`quantize_weights`), and each window runs alone, without padding.
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
