"""Training, evaluation and checkpointing: the main job behind ``tools/run_net.py``.

- ``optim``: SGD parameter groups and the LR schedule ``lr_at(cfg, epoch)``
- ``checkpoint``: atomic save, keep-K, auto-resume, weights-only loading
- ``train``: the training loop, validation, the epoch loop with resume
- ``evaluate``: multi-view aggregation, metrics, the test loop
- ``preflight``: data and config checks before any work starts
- ``demo_data``: the synthetic data set of the built-in demo
- ``launch``: ``run(cfg)`` and the command-line ``main``
"""
