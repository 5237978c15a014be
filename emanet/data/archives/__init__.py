"""Getting archives, the `emanet download` stage: params -> verified official files in ``sources.raw_dir``.

``catalog.py`` lists every remote file (URLs, checksums, ImageNet and official checkpoints),
``transfer.py`` fetches one file (resumable, mirrors first, checksummed or pinned) and extracts archives
safely, ``download.py`` fetches everything a download name needs (a manifest can replace the checksums).
"""
