"""Getting archives: the catalog of official files, resumable checksummed transfers, the `emanet download` stage."""
