"""cgnl_video: Compact Generalized Non-local (CGNL) networks for video action recognition."""

import warnings

__version__ = "0.1.0"

# fvcore.nn (imported by PyTorchVideo and by our model summary) calls torch.jit.script
# at import time, which torch >= 2.10 flags as deprecated on every run of every tool.
# Silence exactly that message; nothing in cgnl_video uses torch.jit.script.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
