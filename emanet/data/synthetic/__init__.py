"""Small archives in the exact official formats (`emanet synth`), for the tiny profile and the tests."""
