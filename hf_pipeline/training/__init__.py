"""Training the layered classifiers, one step per module (``train.py`` is the entry point that runs them in order):

- ``arguments``: the options (data, model, TrainingArguments with this project's defaults), the tiny preset;
- ``data``: the layered dataset, reports cut into labelled windows, batches, the layered loss;
- ``base_models``: the encoder to start from (any family), or the tiny preset's BERT trained from scratch;
- ``crf``: the CRF head's loss and transitions (its decoder travels with the bundle: ``hf_pipeline.crf``);
- ``metrics``: validation figures, decoded as the pipeline decodes;
- ``trainer``: one Trainer run per model, its progress and record;
- ``evaluation``: the saved bundle scored on every split, and the results table.
"""
