"""Datasets, grouped by stage in the order the data flows; knows nothing of models.

params -> ``archives/`` (stage `emanet download`: the official files, fetched and verified) ->
``convert/`` (stage `emanet prepare`: official trees -> the prepared layout) -> ``loading/`` (the
training and evaluation stages: the prepared layout -> tensors) -> runs -> metrics -> tables.
``synthetic/`` (stage `emanet synth`) writes stand-in archives for the first stage.

Shared by the stages, importing none of them: ``files.py`` (the low-level readers and DataError),
``layout.py`` (the prepared layout's contract: file names, meta.json) and ``classes.py`` (class lists,
label mappings, the VOC palette). The stages never import each other sideways: loading imports neither
archives nor convert, convert imports nothing from loading, archives nothing from convert or loading
(tests/test_data_stages.py checks it on the source).
"""
