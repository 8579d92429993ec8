"""The model card: Hub metadata reloaded with ModelCard.load, usage, results tables, and the card of save_bundle."""

from __future__ import annotations

import re
import shutil

import pytest
from huggingface_hub import ModelCard

from hf_dataset import SAMPLE_CORPUS
from hf_pipeline.model_card import entity_types, write_model_card

from .helpers import make_bundle

LABELS = ["O", "B-Anatomical_Entity", "I-Anatomical_Entity", "B-Finding", "I-Finding", "B-Measure", "I-Measure"]
TRAINING = {"preset": None, "layers": [1, 2, 3], "learning_rate": 5e-05, "num_train_epochs": 10, "seed": 42}


def scores(p: float, r: float, f: float) -> dict[str, float]:
    return {"precision": p, "recall": r, "f1": f}


def split_result(exact_f1: float, lenient_f1: float) -> dict:
    return {
        "exact": scores(0.75, 0.7, exact_f1),
        "lenient": scores(0.81, 0.78, lenient_f1),
        "gold": 120,
        "predicted": 112,
        "per_type": {
            "Anatomical_Entity": {
                "gold": 50,
                "predicted": 48,
                "exact": scores(0.9, 0.86, 0.8796),
                "lenient": scores(0.95, 0.91, 0.9296),
            },
            "Finding": {
                "gold": 40,
                "predicted": 37,
                "exact": scores(0.6, 0.55, 0.5739),
                "lenient": scores(0.7, 0.65, 0.6741),
            },
            "Measure": {
                "gold": 30,
                "predicted": 27,
                "exact": scores(0.7, 0.63, 0.6632),
                "lenient": scores(0.8, 0.72, 0.7579),
            },
        },
        "oracle": {"exact_f1": 0.9876, "lenient_f1": 0.9954},
    }


RESULTS = {"validation": split_result(0.7241, 0.7948), "test": split_result(0.7127, 0.7851)}


def write_full_card(bundle):
    return write_model_card(
        bundle,
        labels=LABELS,
        base_model="google-bert/bert-base-multilingual-cased",
        dataset="org/spradie-layered",
        training=TRAINING,
        results=RESULTS,
        repo_id="org/radiology-ner",
    )


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def test_card_metadata_reloads_with_results(bundle):
    path = write_full_card(bundle)
    assert path == bundle / "README.md"
    data = ModelCard.load(path).data
    assert data.language == "es"
    assert data.license == "unknown"  # no license given: never a permissive default for someone else's data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "token-classification"
    assert {"ner", "nested-ner", "medical", "radiology", "spanish", "custom_code"} <= set(data.tags)
    assert data.base_model == "google-bert/bert-base-multilingual-cased"
    assert data.datasets == ["org/spradie-layered"]
    assert data.model_name == "radiology-ner"
    reported = {(r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results}
    expected = {(split, f"{mode} F1"): RESULTS[split][mode]["f1"] for split in RESULTS for mode in ("exact", "lenient")}
    assert reported == expected
    assert {(r.task_type, r.metric_type, r.dataset_name) for r in data.eval_results} == {
        ("token-classification", "f1", "org/spradie-layered")
    }


def test_card_body_usage_results_and_citations(bundle):
    path = write_full_card(bundle)
    text = ModelCard.load(path).text
    assert (
        'pipeline("radiology-ner", model="org/radiology-ner", revision="<commit sha>", trust_remote_code=True)' in text
    )
    assert 'ner("Riñón derecho de 7,2 cm sin dilatación de la vía excretora.")' in text
    assert "hf_pipeline.load_pipeline(" in text
    for key in ("entity_group", "score", "word", "start", "end", "layer"):
        assert f"`{key}`" in text
    assert "`Anatomical_Entity`, `Finding`, `Measure`" in text
    assert "| `learning_rate` | 5e-05 |" in text
    assert "### validation" in text and "### test" in text
    assert "| Finding | 0.6000 | 0.5500 | 0.5739 | 0.7000 | 0.6500 | 0.6741 | 40 | 37 |" in text
    assert "exact F1 0.9876, lenient F1 0.9954" in text
    assert "not a medical device" in text.lower()
    assert "@inproceedings{solartepabon2021radiology" in text and "@inproceedings{cotik2021spradie" in text
    assert "SpRadIE" in text and "from scratch" not in text


def test_tiny_preset_card_has_no_base_model_datasets_or_model_index(bundle):
    path = write_model_card(bundle, labels=LABELS, base_model=None, dataset=None)
    card = ModelCard.load(path)
    metadata = card.data.to_dict()
    assert metadata["language"] == "es" and metadata["pipeline_tag"] == "token-classification"
    for key in ("base_model", "datasets", "model-index", "model_name"):
        assert key not in metadata
    assert "trained from scratch" in card.text
    assert "synthetic sample" in card.text
    assert 'model="<repo_id>"' in card.text


def test_local_paths_show_as_folder_names_only(bundle, tmp_path):
    path = write_model_card(bundle, labels=LABELS, base_model=str(tmp_path), dataset=str(tmp_path), results=RESULTS)
    card = ModelCard.load(path)
    assert card.data.base_model is None and card.data.datasets is None
    assert f"fine-tuned from `{tmp_path.name}`" in card.text and str(tmp_path) not in str(card)
    assert {r.dataset_name for r in card.data.eval_results} == {tmp_path.name}


def test_save_bundle_writes_a_card_and_keeps_an_existing_one(tiny_bundle, tmp_path):
    card = ModelCard.load(tiny_bundle / "README.md")
    assert card.data.language == "es" and card.data.base_model is None
    assert "trained from scratch" in card.text
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\nmine\n", encoding="utf-8")
    make_bundle(folder)
    assert ModelCard.load(folder / "README.md").text.strip() == "mine"


def remote_code_files(card_text: str) -> set[str]:
    """The files the security notice says ``trust_remote_code=True`` runs."""
    notice = re.search(r"`trust_remote_code=True` runs this repo's (.+?) on your machine", card_text, re.DOTALL)
    assert notice, "no security notice"
    return set(re.findall(r"`([^`]+)`", notice.group(1)))


def test_the_security_notice_names_exactly_the_python_files_of_the_bundle(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")  # save_bundle copies the modules, then writes the card
    modules = {path.name for path in bundle.glob("*.py")}
    assert {"radiology_ner.py", "words.py", "crf.py", "int8.py"} <= modules
    assert remote_code_files(ModelCard.load(bundle / "README.md").text) == modules
    (bundle / "handler.py").write_text("class EndpointHandler: ...\n", encoding="utf-8")  # a module added later
    assert remote_code_files(ModelCard.load(write_full_card(bundle)).text) == modules | {"handler.py"}


def test_the_card_shows_the_spacy_component_and_the_inference_endpoints_handler(bundle):
    text = ModelCard.load(write_full_card(bundle)).text
    spacy_part = text.split("## Use it in spaCy", 1)[1].split("\n## ", 1)[0]
    assert 'nlp.add_pipe("radiology_ner", config={"model": "org/radiology-ner"' in spacy_part
    assert 'doc.spans["radiology_ner"]' in spacy_part and 'alignment_mode="expand"' in spacy_part
    endpoint_part = text.split("## Deploy on Inference Endpoints", 1)[1].split("\n## ", 1)[0]
    assert "`handler.py`" in endpoint_part and "RADIOLOGY_NER_QUANTIZE=int8" in endpoint_part
    assert (bundle / "handler.py").is_file()


def test_the_citation_names_the_papers_authors_as_published(bundle):
    text = ModelCard.load(write_full_card(bundle)).text
    assert "Blazquez-Herranz, Alberto and" in text and "Alvaro" not in text


@pytest.mark.parametrize("relative", [False, True])
def test_a_model_trained_on_the_bundled_sample_says_so(bundle, monkeypatch, relative):
    monkeypatch.chdir(SAMPLE_CORPUS.parent.parent)
    dataset = "hf_dataset/sample_corpus" if relative else str(SAMPLE_CORPUS)
    text = ModelCard.load(write_model_card(bundle, labels=LABELS, base_model=None, dataset=dataset)).text
    assert "training data: the small synthetic sample corpus shipped with the project (`hf_dataset/" in text
    assert "a local brat corpus" not in text


def test_entity_types_keep_label_order():
    assert entity_types(LABELS) == ["Anatomical_Entity", "Finding", "Measure"]
