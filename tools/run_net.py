#!/usr/bin/env python
"""Train (TRAIN.ENABLE) and then run the multi-view test (TEST.ENABLE).

    python tools/run_net.py --cfg configs/minikinetics/R101_CGNL8.yaml [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/run_net.py --cfg ... [KEY VALUE ...]

See docs/TRAINING.md.
"""

import sys

from cgnl_video.engine.launch import main

if __name__ == "__main__":
    sys.exit(main())
