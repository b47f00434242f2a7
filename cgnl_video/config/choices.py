"""The allowed values of the configuration's enumerated keys, in one torch-free place.

``validate`` checks the config against them, and the modules that take these
values as arguments (e.g. ``cgnl_video.data.decode``) import them from here.
"""

LR_POLICIES = ("steps_with_relative_lrs", "cosine")  # SOLVER.LR_POLICY
AMP_DTYPES = ("bf16", "fp16")  # TRAIN.AMP_DTYPE
DECODING_BACKENDS = ("decord", "pyav", "torchcodec")  # DATA.DECODING_BACKEND
JPEG_DECODERS = ("auto", "torchvision", "pil")  # DATA.JPEG_DECODER
DECODE_ON = ("worker", "device")  # DATA.DECODE_ON
TEST_SPATIAL_CROPS = (1, 3)  # TEST.NUM_SPATIAL_CROPS
DIST_BACKENDS = ("auto", "nccl", "gloo")  # DIST.BACKEND
