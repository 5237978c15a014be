"""Run folders: what a run is (its identities), where its files lie, and whether it is still current."""
