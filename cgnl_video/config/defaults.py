"""The configuration keys of cgnl_video, with their defaults and one-line comments.

The keys of a backbone or an inserted block live with its registration (the
same call a user's block goes through, see ``config/registry.py``): RESNET in
``config/backbones.py``, NL and CGNL in ``config/blocks.py``. ``get_cfg()``
returns all of them together.

Key names follow PySlowFast where the concept is the same. Experiment files in
``configs/`` override these defaults (with ``_BASE_`` inheritance) and the
command line overrides the file with ``KEY VALUE`` pairs.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# ----------------------------------------------------------------------------- top level
_C.RNG_SEED = 0  # seed of every random number generator (python, numpy, torch)
_C.OUTPUT_DIR = "./output"  # logs, checkpoints, config dump and test metrics go here
_C.LOG_PERIOD = 10  # iterations between two progress lines in the log
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms + cudnn.deterministic
_C.NUM_THREADS = 0  # torch CPU threads per process (0 = torch's default; the demo uses 1)
# User modules imported before the config is read (a block / backbone registered on import): dotted
# names or .py paths, a relative path from the YAML file naming it (command line: the current directory)
_C.IMPORTS = []  # see cgnl_video/config/imports.py and docs/ARCHITECTURE.md "How to add a block"

# ----------------------------------------------------------------------------- data
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""  # folder with train.txt, val.txt, test.txt and classes.txt
_C.DATA.PATH_PREFIX = ""  # root that the manifest paths are relative to
_C.DATA.NUM_FRAMES = 32  # frames per clip fed to the network
_C.DATA.SAMPLING_RATE = 2  # keep every k-th frame: a clip spans NUM_FRAMES * SAMPLING_RATE frames
_C.DATA.TRAIN_CROP_SIZE = 224  # side of the square training crop
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.25]  # crop area as a fraction of the frame area
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]  # crop aspect ratio (w / h) range
_C.DATA.RANDOM_FLIP = True  # random horizontal flip of training clips
_C.DATA.VAL_SHORT_SIDE = 256  # val clips: short side resized to this ...
_C.DATA.VAL_CROP_SIZE = 224  # ... then a centre crop of this side
_C.DATA.TEST_CROP_SIZE = 256  # test views: short side resized to this, square crops of this side
_C.DATA.MEAN = [0.485, 0.456, 0.406]  # per-channel mean of 0-1 RGB (ImageNet)
_C.DATA.STD = [0.229, 0.224, 0.225]  # per-channel std of 0-1 RGB (ImageNet)
_C.DATA.DECODING_BACKEND = "decord"  # video files: "decord" or "torchcodec" (both with PyAV fallback), or "pyav"
_C.DATA.JPEG_DECODER = "auto"  # frame folders: "auto", "torchvision" or "pil"
# Where frame-folder JPEGs are decoded: "worker" (the loader's worker processes decode, crop, resize
# and normalise) or "device" (workers only read the JPEG bytes; the training process decodes them in
# batches on the model's device, nvJPEG on CUDA, and crops / resizes there; docs/DATA_PIPELINE.md)
_C.DATA.DECODE_ON = "worker"
_C.DATA.MAX_CONSECUTIVE_FAILURES = 20  # unreadable training samples in a row before the job stops
# demo: first make the synthetic set in PATH_TO_DATA_DIR (data_prep scripts; skips what exists)
_C.DATA.PREPARE_SYNTHETIC = False

# ----------------------------------------------------------------------------- data loader
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8  # worker processes per training process
_C.DATA_LOADER.PIN_MEMORY = True  # pin host memory (only takes effect on GPU)

# ----------------------------------------------------------------------------- model
_C.MODEL = CfgNode()
_C.MODEL.ARCH = "c2d"  # a registered backbone; the package ships "c2d" (RESNET keys)
_C.MODEL.NUM_CLASSES = 200  # classes of the final fc
_C.MODEL.DROPOUT_RATE = 0.5  # dropout before the fc
_C.MODEL.CHANNELS_LAST = False  # run the model in channels_last_3d memory format
_C.MODEL.COMPILE = False  # wrap the model with torch.compile

# ----------------------------------------------------------------------------- inserted blocks
# Where extra blocks go: for each stage res2..res5, the indices of the residual
# blocks after which one block of NONLOCAL.TYPE is inserted. Presets for the
# paper's "1 block" and "5 blocks" are in cgnl_video.models.placement_preset.
_C.NONLOCAL = CfgNode()
_C.NONLOCAL.TYPE = "none"  # "none" or a registered block: "nl", "cgnl", "residual" (the simple block of Table 3)
_C.NONLOCAL.LOCATION = [[], [], [], []]  # per stage res2..res5: block indices to insert after
_C.NONLOCAL.DIM_INNER_RATIO = 0.5  # inner channels = ratio * stage channels (theta/phi/g width)

# ----------------------------------------------------------------------------- batch norm
_C.BN = CfgNode()
_C.BN.WEIGHT_DECAY = 0.0  # weight decay of norm weights and biases (see SOLVER.ZERO_WD_1D_PARAM)

# ----------------------------------------------------------------------------- solver
_C.SOLVER = CfgNode()
_C.SOLVER.BASE_LR = 0.01  # learning rate for the global TRAIN.BATCH_SIZE
_C.SOLVER.LR_POLICY = "steps_with_relative_lrs"  # "steps_with_relative_lrs" or "cosine"
_C.SOLVER.STEPS = [0, 40, 70]  # epochs where each step of LRS starts (first must be 0)
_C.SOLVER.LRS = [1.0, 0.1, 0.01]  # LR multipliers of the steps
_C.SOLVER.COSINE_END_LR = 0.0  # final LR of the cosine schedule
_C.SOLVER.MAX_EPOCH = 80  # training epochs
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # Nesterov momentum
_C.SOLVER.WEIGHT_DECAY = 1e-4  # L2 weight decay
_C.SOLVER.ZERO_WD_1D_PARAM = True  # no weight decay on norm parameters and biases
_C.SOLVER.WARMUP_EPOCHS = 10.0  # linear warmup length in epochs (0 = none)
_C.SOLVER.WARMUP_START_LR = 0.001  # LR at the start of the warmup

# ----------------------------------------------------------------------------- training
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True  # train the model
_C.TRAIN.BATCH_SIZE = 64  # global clips per step, split over processes
_C.TRAIN.EVAL_PERIOD = 1  # epochs between two validations (0 = never)
_C.TRAIN.CHECKPOINT_PERIOD = 1  # epochs between two checkpoints
_C.TRAIN.CHECKPOINT_KEEP = 3  # how many recent checkpoints to keep (epoch and mid-epoch ones alike)
# also a mid-epoch checkpoint every that many iterations of the run (0 = off; docs/TRAINING.md, section 6)
_C.TRAIN.CHECKPOINT_ITERS = 0
_C.TRAIN.AUTO_RESUME = True  # continue from the last complete checkpoint in OUTPUT_DIR
_C.TRAIN.CHECKPOINT_FILE_PATH = ""  # initialise from this checkpoint when not resuming
# classes.txt of the rows of its classifier, for a file that stores none (official Caffe2
# models: the 400 Kinetics names sorted); this run's classes among them take their rows by name
_C.TRAIN.CHECKPOINT_CLASSES = ""
_C.TRAIN.MIXED_PRECISION = False  # autocast (CUDA or CPU) to TRAIN.AMP_DTYPE
_C.TRAIN.AMP_DTYPE = "bf16"  # "bf16" or "fp16" (grad scaler; also replaces bf16 on GPUs without native bf16)

# ----------------------------------------------------------------------------- testing
_C.TEST = CfgNode()
_C.TEST.ENABLE = True  # multi-view test after training (or alone)
_C.TEST.BATCH_SIZE = 8  # global videos per test step (all their views); per process max(1, this // processes)
_C.TEST.NUM_ENSEMBLE_VIEWS = 10  # clips per video, starts spread uniformly
_C.TEST.NUM_SPATIAL_CROPS = 3  # crops per clip covering the longer side (1 = centre)
_C.TEST.FULL_FRAME = False  # keep the whole resized frame instead of square crops
_C.TEST.VIEWS_PER_FORWARD = 6  # views per forward pass (bounds memory)
_C.TEST.CHECKPOINT_FILE_PATH = ""  # weights to test ("" = the last training checkpoint)

# ----------------------------------------------------------------------------- tensorboard
# Scalars of the run for TensorBoard, written by rank 0 (cgnl_video/utils/tensorboard.py,
# docs/TRAINING.md section 9); needs the optional extra: pip install -e ".[tensorboard]".
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False  # write train (per epoch and every LOG_PERIOD iterations), val and test scalars
_C.TENSORBOARD.LOG_DIR = ""  # event files go here ("" = OUTPUT_DIR/tensorboard)

# ----------------------------------------------------------------------------- distributed
_C.DIST = CfgNode()
_C.DIST.BACKEND = "auto"  # "auto" (GPU: "cpu:gloo,cuda:nccl", CPU: gloo), "nccl" (the same) or "gloo"


def base_cfg() -> CfgNode:
    """A fresh copy of the keys above, without those of registered backbones and
    blocks (``get_cfg`` in ``config/registry.py`` adds them)."""
    return _C.clone()
