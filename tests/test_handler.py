"""handler.py, the bundle's Inference Endpoints handler, loaded the way Inference Endpoints loads it."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

import hf_pipeline
from hf_pipeline.handler import PARAMETERS, parse_request

from .helpers import REPORT, run_fresh, without_score

# What Inference Endpoints does with a repository folder: handler.py imported as a top-level module (by file
# location, the folder first on sys.path), EndpointHandler built once with the folder, then called per request.
LOAD_LIKE_INFERENCE_ENDPOINTS = """
import importlib.util, json, sys
folder = {folder!r}
spec = importlib.util.spec_from_file_location("handler.EndpointHandler", folder + "/handler.py")
sys.path.insert(0, folder)
module = importlib.util.module_from_spec(spec)
sys.modules["handler.EndpointHandler"] = module
spec.loader.exec_module(module)
handler = module.EndpointHandler(folder)
"""
REQUESTS = """
answers = [handler({{"inputs": {report!r}}}),
           handler({{"inputs": [{report!r}, "Quiste simple.", ""], "parameters": {{"batch_size": 2, "stride": 8}}}}),
           handler({{"inputs": {report!r}, "parameters": {{"layers": 1}}}})]
errors = []
for parameters in ({{"temperature": 0.5}}, {{"quantize": "int8"}}):
    try:
        handler({{"inputs": {report!r}, "parameters": parameters}})
    except ValueError as error:
        errors.append(str(error))
print(json.dumps({{"answers": answers, "errors": errors}}))
"""


@pytest.fixture(scope="module")
def endpoint(tiny_bundle, tmp_path_factory) -> dict:
    """The answers and errors of the handler of the tiny bundle, in a process that never imported the project."""
    code = LOAD_LIKE_INFERENCE_ENDPOINTS.format(folder=str(tiny_bundle)) + REQUESTS.format(report=REPORT)
    return json.loads(run_fresh(code, tmp_path_factory.mktemp("endpoint")).strip().splitlines()[-1])


def test_every_bundle_carries_the_handler(tiny_bundle, shared_bundle):
    source = (Path(hf_pipeline.__file__).parent / "handler.py").read_bytes()
    assert (tiny_bundle / "handler.py").read_bytes() == (shared_bundle / "handler.py").read_bytes() == source


def test_the_handler_imports_only_torch_transformers_and_the_standard_library():
    tree = ast.parse((Path(hf_pipeline.__file__).parent / "handler.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert all(node.level == 0 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers"}


def test_the_handler_answers_a_text_and_a_list_with_the_pipelines_entities(endpoint, ner):
    single, several, outermost = endpoint["answers"]
    expected = ner(REPORT)
    assert single == json.loads(json.dumps(expected)) and single
    assert [[without_score(e) for e in answer] for answer in several] == [
        [without_score(e) for e in answer] for answer in ner([REPORT, "Quiste simple.", ""], stride=8)
    ]
    assert several[0] and several[2] == []
    assert outermost == [e for e in single if e["layer"] == 1] and outermost


def test_the_handler_refuses_unknown_and_load_time_parameters_naming_what_it_takes(endpoint):
    unknown, load_time = endpoint["errors"]
    assert unknown == f"Unknown parameter(s) temperature: this endpoint takes {', '.join(PARAMETERS)}."
    assert "quantize is chosen when the endpoint starts" in load_time and "RADIOLOGY_NER_QUANTIZE=int8" in load_time


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ("a text", "Send a JSON object"),
        ({"parameters": {}}, "without inputs"),
        ({"inputs": 3}, "inputs must be a text or a list of texts"),
        ({"inputs": ["ok", None]}, "inputs must be a text or a list of texts"),
        ({"inputs": "ok", "parameters": [1]}, "parameters must be a JSON object"),
        ({"inputs": "ok", "options": {}}, "Unknown request field(s) options"),
    ],
)
def test_malformed_requests_are_refused_with_what_to_send(request_body, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_request(request_body)


def test_a_request_is_passed_on_as_the_pipeline_takes_it():
    assert parse_request({"inputs": ["a", "b"]}) == (["a", "b"], {})
    assert parse_request({"inputs": "a", "parameters": None}) == ("a", {})
    layers_from_a_query_string = {"inputs": "a", "parameters": {"layers": 2, "stride": 16}}
    assert parse_request(layers_from_a_query_string) == ("a", {"layers": [2], "stride": 16})
