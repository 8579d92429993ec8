"""Inference Endpoints handler of a radiology-ner bundle: ``EndpointHandler(path)`` and one call per request.

Every bundle carries this file as ``handler.py``. Inference Endpoints imports it as a top-level module from the
repository folder (the folder is put on ``sys.path``), builds ``EndpointHandler(path_of_the_folder)`` once and
calls it with each request's JSON body. The bundle's pipeline module uses relative imports (``from .words import
...``), so it cannot be imported as a top-level module; the handler loads it the way transformers loads remote code,
``pipeline("radiology-ner", model=path, trust_remote_code=True)``, which imports the bundle's own modules as one
package (the code run is this repository's, the code beside this file). It imports torch and transformers only.

Request::

    {"inputs": "Riñón derecho de 7,2 cm ...", "parameters": {"layers": [1, 2], "stride": 32, "batch_size": 8}}

``inputs``: one text or a list of texts. ``parameters`` (optional): ``layers`` (which nesting layers to return; a
number or a list), ``max_length`` (window length in tokens), ``stride`` (tokens shared by consecutive windows),
``batch_size`` (windows per forward pass); any other is refused, naming the ones it takes.

Response: the pipeline's output: for one text a list of entities, for a list one list per text; each entity a dict
with ``entity_group``, ``score``, ``word``, ``start``, ``end`` (end-exclusive character offsets) and ``layer``.

Set when the endpoint starts (its environment variables): ``RADIOLOGY_NER_QUANTIZE=int8`` runs int8 ONNX graphs
with ONNX Runtime on CPU (the bundle's ``onnx/`` when it has them; the image needs ``onnxruntime``, and ``onnx`` and
``onnxscript`` to export them otherwise). The models run on the GPU when there is one, else on CPU.
"""

import os
from typing import Any

import torch
from transformers import pipeline

TASK = "radiology-ner"
QUANTIZE_VARIABLE = "RADIOLOGY_NER_QUANTIZE"
PARAMETERS = ("layers", "max_length", "stride", "batch_size")
LOAD_TIME = {"quantize": QUANTIZE_VARIABLE}  # pipeline options fixed when the endpoint starts


class EndpointHandler:
    """Loads the bundle in ``path`` once; each call answers one request (see the module docstring)."""

    def __init__(self, path: str = "") -> None:
        options: dict[str, Any] = {}
        quantize = os.environ.get(QUANTIZE_VARIABLE, "").strip()
        if quantize:
            options = {"quantize": quantize, "device": "cpu"}  # int8 runs on CPU
        elif torch.cuda.is_available():
            options = {"device": 0}
        self.pipeline = pipeline(TASK, model=path or ".", trust_remote_code=True, **options)

    def __call__(self, data: dict[str, Any]) -> list[Any]:
        """The entities of ``data["inputs"]``, with ``data["parameters"]`` passed to the pipeline.

        Raises:
            ValueError: a request that is not ``{"inputs": str | list of str, "parameters": {...}}`` or names a
                parameter this endpoint does not take; the message says what to send instead.
        """
        inputs, parameters = parse_request(data)
        return self.pipeline(inputs, **parameters)


def parse_request(data: Any) -> tuple[Any, dict[str, Any]]:
    """``(inputs, parameters)`` of a request body, checked."""
    if not isinstance(data, dict) or "inputs" not in data:
        raise ValueError(
            'Send a JSON object {"inputs": "text" or ["text", ...], "parameters": {...}}; '
            f"got {type(data).__name__}{' without inputs' if isinstance(data, dict) else ''}."
        )
    unknown = sorted(set(data) - {"inputs", "parameters"})
    if unknown:
        raise ValueError(f"Unknown request field(s) {', '.join(unknown)}: send only inputs and parameters.")
    inputs = data["inputs"]
    texts = inputs if isinstance(inputs, list) else [inputs]
    if not isinstance(inputs, (str, list)) or not all(isinstance(text, str) for text in texts):
        raise ValueError("inputs must be a text or a list of texts (strings).")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters must be a JSON object, got {type(parameters).__name__}.")
    for name in sorted(set(parameters) & set(LOAD_TIME)):
        raise ValueError(
            f"{name} is chosen when the endpoint starts, not per request: set the environment variable "
            f"{LOAD_TIME[name]} in the endpoint's settings (for example {LOAD_TIME[name]}=int8)."
        )
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {', '.join(unknown)}: this endpoint takes {', '.join(PARAMETERS)}.")
    if isinstance(parameters.get("layers"), int):  # a query string gives one number
        parameters = {**parameters, "layers": [parameters["layers"]]}
    return inputs, parameters
