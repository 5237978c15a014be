"""Converting, the `emanet prepare` stage: official trees -> the prepared layout (:mod:`emanet.data.layout`).

``sources.py`` finds the official trees (extracting archives once), ``labels.py`` reads each label format
into train ids, ``voc.py``, ``context.py`` and ``cocostuff.py`` each turn one dataset into a
``Conversion`` (``conversion.py``: samples and splits), and ``prepare.py`` writes it, asserting counts.
``matv5.py`` refuses MATLAB files that would crash scipy before they are read.
"""
