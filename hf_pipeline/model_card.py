"""Write the model card (``README.md``) of a bundle: Hub metadata, usage, training settings and results.

Uses only ``huggingface_hub``, the standard library and light project modules (no torch, transformers or datasets),
so it runs wherever a bundle is published from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_dataset import SAMPLE_CORPUS
from hf_pipeline.hub import is_hub_id

TAGS = ["token-classification", "ner", "nested-ner", "medical", "radiology", "spanish", "custom_code"]
LOCAL_CORPUS = "local corpus"
EXAMPLE = "Riñón derecho de 7,2 cm sin dilatación de la vía excretora."
HANDLER_FILE = "handler.py"

CITATIONS = """```bibtex
@inproceedings{solartepabon2021radiology,
  title     = {Information Extraction from {Spanish} Radiology Reports using multilingual {BERT}},
  author    = {Solarte-Pab{\\'o}n, Oswaldo and Montenegro, Orlando and Blazquez-Herranz, Alberto and
               Saputro, Hadi and Rodriguez-Gonz{\\'a}lez, Alejandro and Menasalvas, Ernestina},
  booktitle = {Working Notes of CLEF 2021 - Conference and Labs of the Evaluation Forum},
  year      = {2021}
}

@inproceedings{cotik2021spradie,
  title     = {Overview of {CLEF} {eHealth} Task 1 - {SpRadIE}: A challenge on information extraction from
               {Spanish} Radiology Reports},
  author    = {Cotik, Viviana and Alemany, Laura Alonso and Filippo, Dar{\\'i}o and Luque, Franco and
               Roller, Roland and Vivaldi, Jorge and Ayach, Ammer and Carranza, Fernando and
               De Francesca, Lucas and Dellanzo, Anabella and Urquiza, Macarena Fern{\\'a}ndez},
  booktitle = {Working Notes of CLEF 2021 - Conference and Labs of the Evaluation Forum},
  year      = {2021}
}
```"""


def plain_name(name_or_path: str) -> str:
    """A Hub id as it is; a local folder as its name alone (a card never shows a local path).

    >>> plain_name("google-bert/bert-base-multilingual-cased"), plain_name("/data/models/all-MiniLM-L6-v2/")
    ('google-bert/bert-base-multilingual-cased', 'all-MiniLM-L6-v2')
    """
    return name_or_path if is_hub_id(name_or_path) else Path(name_or_path).resolve().name


def entity_types(labels: list[str]) -> list[str]:
    """The entity types of IOB2 label names, in label order.

    >>> entity_types(["O", "B-Finding", "I-Finding", "B-Measure", "I-Measure"])
    ['Finding', 'Measure']
    """
    return list(dict.fromkeys(label[2:] for label in labels if label[:2] in ("B-", "I-")))


def write_model_card(
    bundle_dir: str | Path,
    *,
    labels: list[str],
    base_model: str | None,
    dataset: str | None,
    training: dict | None = None,
    results: dict | None = None,
    license: str = "unknown",
    repo_id: str | None = None,
    architecture: str = "per_layer",
    decoder: str = "softmax",
    scheme: str = "depth",
) -> Path:
    """Write ``bundle_dir/README.md``, replacing any card already there.

    Args:
        bundle_dir: the bundle folder written by ``save_bundle``.
        labels: the IOB2 label names of the models (``O``, ``B-T``, ``I-T`` ...).
        base_model: the checkpoint the layers were fine-tuned from; ``None`` when trained from scratch
            (the ``tiny`` preset). Only a Hub id goes into the metadata; a local folder is named in the text.
        dataset: the training dataset (Hub id, local folder, or brat folder such as ``SAMPLE_CORPUS``); ``None``
            for a local brat corpus. A local path is named by its last part only.
        training: training settings, shown as a table.
        results: ``eval_results.json`` of ``train.py``: ``{split: {"exact": {...}, "lenient": {...}, ...}}``.
        license: the license of the weights: the training data's license (``unknown`` when not known).
        architecture: ``per_layer`` (one encoder per layer) or ``shared`` (one encoder, one head per layer).
        decoder: ``softmax`` (a label per word), ``crf`` (a linear-chain CRF per tag sequence, Viterbi decoding) or
            ``span`` (the span head).
        scheme: ``depth`` (a tag sequence per nesting layer), ``type`` (a tag sequence per entity type) or ``span``
            (the span head: every span scored for every type).
        repo_id: the Hub repo the bundle is meant for; used in the usage example and as the model-index name.

    Returns:
        The path of the card.
    """
    bundle_dir = Path(bundle_dir)
    name = repo_id or (bundle_dir.name if bundle_dir.name != "model" else "radiology-ner")
    hub_dataset, hub_base_model = is_hub_id(dataset), is_hub_id(base_model)
    training_data = describe_dataset(dataset)
    base_model = plain_name(base_model) if base_model else None
    dataset = plain_name(dataset) if dataset else None
    modules = sorted(path.name for path in bundle_dir.glob("*.py"))  # what trust_remote_code=True may run
    data = ModelCardData(
        language="es",
        license=license,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=TAGS,
        datasets=[dataset] if hub_dataset else None,
        base_model=base_model if hub_base_model else None,
        model_name=name.split("/")[-1] if results else None,  # the model-index name
        eval_results=eval_results(results, dataset) if results else None,
    )
    body = card_body(
        name, labels, base_model, training_data, training, results, repo_id, architecture, decoder, modules, scheme
    )
    path = bundle_dir / "README.md"
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(path)
    return path


def eval_results(results: dict[str, Any], dataset: str | None) -> list[EvalResult]:
    """One exact-F1 and one lenient-F1 ``EvalResult`` per split."""
    return [
        EvalResult(
            task_type="token-classification",
            task_name="Nested named entity recognition",
            dataset_type=dataset or LOCAL_CORPUS,
            dataset_name=dataset or LOCAL_CORPUS,
            dataset_split=split,
            metric_type="f1",
            metric_name=f"{mode} F1",
            metric_value=scores[mode]["f1"],
        )
        for split, scores in results.items()
        for mode in ("exact", "lenient")
    ]


def describe_dataset(dataset: str | None) -> str:
    """How the card names the training data: the project's sample, a Hub id or a folder's name.

    >>> describe_dataset("org/reports"), describe_dataset("/data/corpora/reports/"), describe_dataset(None)
    ('`org/reports`', '`reports`', 'a local brat corpus')
    """
    if not dataset:
        return "a local brat corpus"
    if not is_hub_id(dataset) and Path(dataset).resolve() == SAMPLE_CORPUS.resolve():
        return (
            "the small synthetic sample corpus shipped with the project (`hf_dataset/sample_corpus`, written for "
            "tests and demos)"
        )
    return f"`{plain_name(dataset)}`"


def card_body(
    name: str,
    labels: list[str],
    base_model: str | None,
    training_data: str,
    training: dict | None,
    results: dict | None,
    repo_id: str | None,
    architecture: str = "per_layer",
    decoder: str = "softmax",
    modules: list[str] | None = None,
    scheme: str = "depth",
) -> str:
    sections = [
        overview(name, base_model, training_data, architecture, decoder, scheme),
        labels_section(labels),
        usage(repo_id, modules or []),
        spacy_section(repo_id),
        endpoint_section(),
        training_section(training),
        results_section(results),
        limitations(base_model, scheme),
        f"## Citation\n\n{CITATIONS}\n",
    ]
    return "\n".join(section for section in sections if section)


def overview(
    name: str,
    base_model: str | None,
    training_data: str,
    architecture: str = "per_layer",
    decoder: str = "softmax",
    scheme: str = "depth",
) -> str:
    origin = (
        f"fine-tuned from `{base_model}`"
        if base_model
        else "trained from scratch (the `tiny` preset: a small BERT and WordPiece tokenizer, for tests and demos)"
    )
    layout = (
        "**Architecture: `shared`.** One encoder, fine-tuned once for all layers, with one classifier head per"
        ' layer (the classifier\'s outputs are one block of labels per layer, `config.json["ner_labels"]`):'
        " one forward pass serves every layer, a third of the compute, memory and download of the paper's"
        " three encoders. There are no layer folders; `AutoModelForTokenClassification` loads the model."
        if architecture == "shared"
        else "**Architecture: `per_layer`** (the paper's). One model per layer: layer 1 at the root, the others in"
        " `layer_2/`, `layer_3/`, each with its own copy of the tokenizer so that every layer also works alone in"
        " the stock `token-classification` pipeline."
    )
    if scheme == "type":
        layout = (
            "**Scheme: `type`, architecture `shared`.** One encoder with one IOB2 tag sequence per entity type (the"
            " formulation that won SpRadIE), plus a second or third sequence for a type only where entities of that"
            ' type overlap in the training data (`config.json["ner_sequences"]` lists `[type, sub-layer]` of each);'
            " the classifier's outputs are one block of `O`, `B-<type>`, `I-<type>` per sequence."
        )
    if scheme == "span":
        layout = (
            "**Scheme and head: `span`, architecture `shared`.** No tag sequences: every span of up to"
            ' `config.json["ner_span_max_words"]` words is scored for every entity type from the representations of'
            ' its first and last words (the scorer `config.json["ner_span_scorer"]` names: `biaffine`, or an MLP'
            " over [start; end; width], `mlp_mean` adding the mean of the span's words; the stock token classifier"
            " gives each word a start and an end representation, and the head's own weights sit beside the model in"
            " `span_head.safetensors`). A span is returned when its probability reaches"
            ' `config.json["ner_span_threshold"]`, chosen on validation;'
            " one span can be several types, and any nesting depth can be returned. The stock"
            " `token-classification` pipeline cannot use this model: load it with `radiology-ner`."
        )
    if decoder == "crf":
        layout += (
            "\n\n**Decoder: `crf`.** Each tag sequence has a linear-chain CRF: its label-to-label transition scores are"
            ' in `config.json["ner_crf_transitions"]` and the `radiology-ner` pipeline decodes each with Viterbi'
            " (IOB2-valid by construction; an entity's score is the mean CRF marginal probability of its words). The"
            " stock `token-classification` pipeline still loads the model but decodes each word on its own."
        )
    return f"""# {name.split("/")[-1]}

Named entity recognition for **Spanish radiology reports** whose entities overlap and nest (a `Finding`
inside an `Anatomical_Entity`, a `Measure` inside a `Finding` ...). It returns every entity with its type,
its layer and its exact character offsets into the input text.

**Method**: every word gets several IOB2 tags, one per tag sequence: one per nesting *layer* (Solarte-Pabón et
al., CLEF eHealth 2021, SpRadIE task) or one per entity type (below), and a BERT token classifier predicts every
sequence; or, with the span head (below), no tags at all: every span is scored for every type. The `radiology-ner`
pipeline (`radiology_ner.py`) tokenizes once, runs the model(s) and merges the
sequences' entities; an entity two sequences predict is returned once, and each entity's `layer` is its nesting
depth among the predicted entities (1 outermost).

{layout}

Models {origin}; training data: {training_data}.
"""


def labels_section(labels: list[str]) -> str:
    types = ", ".join(f"`{entity_type}`" for entity_type in entity_types(labels))
    return f"""## Entity labels

{types}

Each layer predicts the IOB2 labels `O`, `B-<type>`, `I-<type>` ({len(labels)} labels).
"""


def usage(repo_id: str | None, modules: list[str]) -> str:
    model = repo_id or "<repo_id>"
    code = "this repo's Python code"
    if modules:
        names = [f"`{module}`" for module in modules]
        code = f"this repo's {', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else f"this repo's {names[0]}"
    return f"""## How to use

```python
from transformers import pipeline

ner = pipeline("radiology-ner", model="{model}", revision="<commit sha>", trust_remote_code=True)
ner("{EXAMPLE}")
```

`trust_remote_code=True` runs {code} on your machine: read them first, and pin `revision` to the commit
you read so that later pushes cannot change the code you run.

With the project installed, no remote code is needed (this also works on a local bundle folder):

```python
import hf_pipeline

ner = hf_pipeline.load_pipeline("path/to/bundle")
```

Output, per text: a list of dicts with keys `entity_group` (type), `score` (mean word probability), `word`
(the entity text), `start`, `end` (end-exclusive character offsets: `text[start:end] == word`) and `layer`,
sorted by (start, -end, layer). Long texts are split into overlapping windows; nothing is truncated. Pass a
list (or any iterator) to batch texts; `quantize="int8"` runs int8 ONNX graphs with ONNX Runtime on CPU (`onnx/`
when the repo carries them, else exported on first use; needs `pip install onnxruntime onnx onnxscript`).
"""


def spacy_section(repo_id: str | None) -> str:
    model = repo_id or "<repo_id>"
    return f"""## Use it in spaCy

With the project installed with its `spacy` extra (`pip install -e ".[spacy]"` in its repository), spaCy finds the
`radiology_ner` component by itself; it runs this pipeline on `doc.text` (batched through `nlp.pipe`):

```python
import spacy

nlp = spacy.blank("es")  # or any Spanish pipeline
nlp.add_pipe("radiology_ner", config={{"model": "{model}", "revision": "<commit sha>"}})
doc = nlp("{EXAMPLE}")
for span in doc.spans["radiology_ner"]:  # a SpanGroup: overlapping and nested spans
    print(span.label_, span.text, span._.layer, span._.score, span._.exact_start, span._.exact_end)
spacy.displacy.render(doc, style="span", options={{"spans_key": "radiology_ner"}})
```

A span covers whole spaCy tokens: an entity with a boundary inside a token is widened to it
(`doc.char_span(start, end, alignment_mode="expand")`), and its exact offsets stay in `span._.exact_start` and
`span._.exact_end`. `config={{"set_ents": True}}` also puts the outermost entities in `doc.ents`; `spans_key` names
another `doc.spans` key.
"""


def endpoint_section() -> str:
    return f"""## Deploy on Inference Endpoints

This repo carries `{HANDLER_FILE}`, a custom handler (`EndpointHandler`): create an Inference Endpoint from the repo
and it serves the `radiology-ner` pipeline (on the GPU when the instance has one). Send one text or a list:

```bash
curl "$ENDPOINT_URL" -H "Authorization: Bearer $HF_TOKEN" -H "Content-Type: application/json" \\
  -d '{{"inputs": "{EXAMPLE}", "parameters": {{"layers": [1, 2]}}}}'
```

The answer is the pipeline's output (a list of entities per text). `parameters` may hold `layers`, `max_length`,
`stride` and `batch_size`; any other is refused with a message naming these. `quantize` is chosen when the endpoint
starts: the environment variable `RADIOLOGY_NER_QUANTIZE=int8` runs int8 ONNX graphs with ONNX Runtime on a CPU
instance (add `onnxruntime` to a `requirements.txt` in the repo, and `onnx`, `onnxscript` when the repo has no
`onnx/` graphs).
"""


def training_section(training: dict | None) -> str:
    if not training:
        return ""
    rows = "\n".join(f"| `{key}` | {value} |" for key, value in training.items())
    return f"""## Training

| setting | value |
| --- | --- |
{rows}
"""


def results_section(results: dict | None) -> str:
    if not results:
        return ""
    parts = [
        "## Results\n\nScored with the SpRadIE scorer: per document and type, the one-to-one matching of gold"
        " and predicted entities that maximises the Jaccard similarity of their characters; *exact* counts"
        " identical fragments only, *lenient* counts the Jaccard similarity. Micro-averaged. *nested*: the entities"
        " that share a character with another entity of their side (gold or predicted), scored against each other;"
        " *flat*: the others.\n"
    ]
    for split, scores in results.items():
        parts.append(split_results(split, scores))
    return "\n".join(parts)


def split_results(split: str, scores: dict[str, Any]) -> str:
    rows = [score_row("**all**", scores)]
    rows += [score_row(f"*{subset}*", scores[subset]) for subset in ("nested", "flat") if subset in scores]
    rows += [score_row(entity_type, per_type) for entity_type, per_type in scores.get("per_type", {}).items()]
    oracle = scores.get("oracle")
    ceiling = (
        f"\nOracle (gold tags decoded back to entities: the ceiling of the scheme on this split): "
        f"exact F1 {oracle['exact_f1']:.4f}, lenient F1 {oracle['lenient_f1']:.4f}.\n"
        if oracle
        else ""
    )
    return f"""### {split}

| type | exact P | exact R | exact F1 | lenient P | lenient R | lenient F1 | gold | predicted |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
{ceiling}"""


def score_row(name: str, scores: dict[str, Any]) -> str:
    exact, lenient = scores["exact"], scores["lenient"]
    cells = [exact["precision"], exact["recall"], exact["f1"], lenient["precision"], lenient["recall"], lenient["f1"]]
    numbers = " | ".join(f"{value:.4f}" for value in cells)
    return f"| {name} | {numbers} | {scores.get('gold', '')} | {scores.get('predicted', '')} |"


def limitations(base_model: str | None, scheme: str = "depth") -> str:
    tiny = (
        "\n- These weights come from the `tiny` preset, trained on a small synthetic sample: they show the"
        " mechanics only and are not useful for real reports.\n"
        if base_model is None
        else ""
    )
    depth = {
        "type": "Entities of one type that overlap need a sub-layer each; the training data decided how many",
        "span": "Entities longer than the longest span scored (`ner_span_max_words` words) are never returned",
    }.get(scheme, "At most three nesting layers are learned: deeper nesting is not represented")
    return f"""## Limitations

- For research only. Not a medical device: do not use it for clinical decisions.
- Trained on one corpus (see above); reports from other hospitals, modalities or writing styles will score lower.
- {depth}; discontinuous entities are predicted as their hull (first start to last end).{tiny}
"""
