"""Synthetic archives, the `emanet synth` stage: small archives in the exact official formats and a
manifest, standing in for the downloaded ones in the tiny profile and the tests (``archives.py`` writes
each dataset's archives, ``scenes.py`` draws the images and labels)."""
