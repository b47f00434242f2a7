"""Every consistency rule of the config rejects its bad value with an error naming the
key, and accepts the nearest good value (so the rejection is that rule's, not another's)."""

import re
from typing import Dict, List, Optional, Tuple

import pytest

from cgnl_video.config import ConfigError, load_config

# name: (key, bad value, good value, the error must match (default: the key), other overrides)
# the good value differs from the bad one in that key only, so the rejection is this rule's
RULES: Dict[str, Tuple[str, str, str, Optional[str], List[str]]] = {
    'repeated block index': ('NONLOCAL.LOCATION', '[[], [1, 3, 1], [], []]', '[[], [1, 3], [], []]',
        r'NONLOCAL\.LOCATION\[1\]', ['NONLOCAL.TYPE', 'cgnl']),
    'repeated block index, no block type': ('NONLOCAL.LOCATION', '[[], [], [2, 2], []]', '[[], [], [2], []]',
        r'NONLOCAL\.LOCATION\[2\]', []),
    # res2 of R-50 has blocks 0..2
    'block index past the stage': ('NONLOCAL.LOCATION', '[[3], [], [], []]', '[[2], [], [], []]',
        r'NONLOCAL\.LOCATION\[0\]', []),
    'full frame with three crops': ('TEST.NUM_SPATIAL_CROPS', '3', '1',
        r'TEST\.FULL_FRAME', ['TEST.FULL_FRAME', 'True']),
    'steps decreasing': ('SOLVER.STEPS', '[0, 70, 40]', '[0, 40, 70]',
        r'SOLVER\.STEPS.*increasing', ['SOLVER.LRS', '[1.0, 0.1, 0.01]']),
    'steps repeated': ('SOLVER.STEPS', '[0, 40, 40]', '[0, 40, 41]',
        r'SOLVER\.STEPS.*increasing', ['SOLVER.LRS', '[1.0, 0.1, 0.01]']),
    'steps not starting at 0': ('SOLVER.STEPS', '[5, 40, 70]', '[0, 40, 70]',
        r'SOLVER\.STEPS.*epoch 0', ['SOLVER.LRS', '[1.0, 0.1, 0.01]']),
    'steps and lrs of different length': ('SOLVER.LRS', '[1.0, 0.1, 0.01]', '[1.0, 0.1]',
        r'SOLVER\.STEPS.*SOLVER\.LRS', ['SOLVER.STEPS', '[0, 40]']),
    'inner ratio zero': ('NONLOCAL.DIM_INNER_RATIO', '0.0', '0.125', None, []),
    'inner ratio above one': ('NONLOCAL.DIM_INNER_RATIO', '1.5', '1.0', None, []),
    'std zero': ('DATA.STD', '[0.229, 0.0, 0.225]', '[0.229, 0.001, 0.225]', None, []),
    'std negative': ('DATA.STD', '[0.229, 0.224, -0.225]', '[0.229, 0.224, 0.225]', None, []),
    'std of two channels': ('DATA.STD', '[0.229, 0.224]', '[0.229, 0.224, 0.5]', None, []),
    'cgnl groups not dividing the inner channels': ('CGNL.GROUPS', '3', '4', None, [
        'NONLOCAL.TYPE', 'cgnl', 'NONLOCAL.LOCATION', '[[], [], [1], []]']),
    'taylor order zero': ('CGNL.ORDER', '0', '1', None, []),
    # 12 / 2 / 2 / 2 = 1.5 frames at res3
    'frames that do not survive the temporal strides': ('DATA.NUM_FRAMES', '12', '16', None, []),
    # 1024 channels, 384 inner
    'cgnl groups dividing the stage but not the inner channels': ('CGNL.GROUPS', '256', '128', None, [
        'NONLOCAL.TYPE', 'cgnl', 'NONLOCAL.LOCATION', '[[], [], [1], []]', 'NONLOCAL.DIM_INNER_RATIO', '0.375']),
    'jitter scales starting at 0': ('DATA.TRAIN_JITTER_SCALES_RELATIVE', '[0.0, 1.0]', '[0.01, 1.0]', None, []),
    'dropout rate 1': ('MODEL.DROPOUT_RATE', '1.0', '0.99', None, []),
    'val crop larger than the resized frame': ('DATA.VAL_SHORT_SIDE', '200', '224',
        r'DATA\.VAL_CROP_SIZE', ['DATA.VAL_CROP_SIZE', '224']),
    # the eval-mode head pools the training window: views at least as large as training crops
    'test crop smaller than the training crop': ('DATA.TEST_CROP_SIZE', '223', '224', None, []),
    'val crop smaller than the training crop': ('DATA.VAL_CROP_SIZE', '200', '224', None, []),
    'pool1 padding past half its kernel': ('RESNET.STEM_POOL_PADDING', '[0, 2, 1]', '[0, 1, 1]', None, []),
    'negative pool1 padding': ('RESNET.STEM_POOL_PADDING', '[0, -1, 0]', '[0, 0, 0]', None, []),
    # 32 pixels (the network's spatial stride) is the smallest crop
    'crop below the network stride': ('DATA.TRAIN_CROP_SIZE', '31', '32', None, []),
    'momentum 1': ('SOLVER.MOMENTUM', '1.0', '0.99', None, []),
    # 0 = no validation during training
    'negative eval period': ('TRAIN.EVAL_PERIOD', '-1', '0', None, []),
    'mean of four channels': ('DATA.MEAN', '[0.45, 0.45, 0.45, 0.45]', '[0.45, 0.45, 0.45]', None, []),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_rejects_naming_the_key_and_accepts_the_good_value(rule):
    key, bad, good, pattern, others = RULES[rule]
    with pytest.raises(ConfigError, match=pattern or re.escape(key)):
        load_config(None, [*others, key, bad])
    load_config(None, [*others, key, good])
