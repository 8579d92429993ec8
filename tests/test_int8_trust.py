"""int8 predictions that do not depend on the batch, and an int8 load that leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest

import hf_pipeline

from .helpers import make_shared_bundle, run_fresh, sample_texts, without_score


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory):
    return make_shared_bundle(tmp_path_factory.mktemp("int8") / "bundle", max_position_embeddings=48)


def test_a_reports_int8_entities_are_the_same_alone_and_in_any_batch(int8_bundle):
    ner = hf_pipeline.load_pipeline(int8_bundle, quantize="int8")
    texts = sample_texts()[:8]  # several windows each with a window of 48 tokens
    alone = [[without_score(e) for e in ner(text, batch_size=1)] for text in texts]
    assert sum(map(len, alone)) > 20
    for batch_size in (2, 8, 32):
        together = ner(list(reversed(texts)), batch_size=batch_size)[::-1]
        assert [[without_score(e) for e in doc] for doc in together] == alone, batch_size


def test_an_int8_export_leaves_no_files_and_sends_no_telemetry(int8_bundle, tmp_path):
    """The export of a bundle without onnx/ goes to a temporary folder that is removed once the graphs are loaded;
    ONNX Runtime writes no telemetry database under the user's home."""
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), temporary.mkdir()
    code = (
        "import json, hf_pipeline\n"
        f"ner = hf_pipeline.load_pipeline({str(int8_bundle)!r}, quantize='int8')\n"
        "print(json.dumps(len(ner('Quiste renal derecho.'))))"
    )
    output = run_fresh(code, tmp_path, project=True, HOME=str(home), TMPDIR=str(temporary))
    assert json.loads(output.strip().splitlines()[-1]) >= 0
    assert not os.listdir(temporary), os.listdir(temporary)
    assert not (home / ".cache" / "Microsoft").exists()
