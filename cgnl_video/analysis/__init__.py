"""Analysis tools over trained models and runs: attention maps of NL / CGNL
blocks (paper Figs. 5 and 6), training curves, the model zoo table, pooled
features of videos (``features``, ``feature_extraction``) and the analysis of a
run's test predictions (``test_report``, ``confusion_figure``)."""
