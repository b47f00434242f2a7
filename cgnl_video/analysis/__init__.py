"""Analysis tools over trained models and runs: attention maps of NL / CGNL
blocks (paper Figs. 5 and 6), training curves, the model zoo table."""
