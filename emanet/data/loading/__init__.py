"""Loading, the stage that feeds training and evaluation: the prepared layout -> tensors.

``dataset.py`` reads a prepared split (:mod:`emanet.data.layout`, :mod:`emanet.data.files`),
``transforms.py`` holds the official augmentation and evaluation views, ``eval_loader.py`` shards
evaluation images over ranks. Nothing here imports the download or convert stages.
"""
