"""Official trees -> the prepared layout: finding and reading the official files, one converter per dataset, the `emanet prepare` stage."""
