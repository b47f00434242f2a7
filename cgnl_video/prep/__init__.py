"""data_prep's library: frame extraction (``extract``, ``index``), manifests for UCF-101,
Kinetics-400, Mini-Kinetics and your own lists (``manifests`` and the per-dataset
modules), and the synthetic demo set (``synthetic``); docs/DATA_PREP.md."""
