"""Training, evaluation and checkpointing: the job behind ``tools/run_net.py``.

- ``launch``: ``run(cfg)``, the job: checks, train, then the multi-view test
- ``trainer``: ``fit``, the epoch loop (resume, train, validate, checkpoint)
- ``train_loop``: ``train_epoch``, one epoch; ``NonFiniteLossError``
- ``validation``: ``run_validation``, single-clip validation during training
- ``multiview``: the multi-view test (``run_test``, ``multi_view_test``)
- ``resume``: the training state in a checkpoint; where a run starts (resume, fine-tune, ImageNet)
- ``checkpoint``: checkpoint files (epoch and mid-epoch): atomic save, keep-K, last complete
- ``preemption``: SIGTERM / SIGUSR1 -> checkpoint -> ``RunInterrupted`` (exit status 75);
  ``cluster``: the same job on SLURM through submitit (``tools/submit.py``)
- ``metrics``: top-k errors, the epoch meter, peak memory; ``inputs``: a batch as the model's input
- ``precision``: mixed precision (autocast, loss scaler); ``optim``: SGD parameter
  groups and the LR schedule ``lr_at(cfg, epoch)``; ``preflight``: data and config
  checks before any work starts; ``demo_data``: the built-in demo's synthetic data set
"""
