"""cgnl_video: Compact Generalized Non-local networks for video, on PyTorchVideo."""

from setuptools import find_packages, setup

# decord 0.6.0 (its last release) has wheels for Linux x86_64 and Windows x86_64 only
# (none for macOS on Apple silicon or Linux aarch64): it is installed there, and
# elsewhere PyAV decodes every video (cgnl_video/utils/decord_support.py).
DECORD = (
    "decord>=0.6.0; (sys_platform == 'linux' and platform_machine == 'x86_64')"
    " or (sys_platform == 'win32' and platform_machine == 'AMD64')"
)
# torchcodec (DATA.DECODING_BACKEND torchcodec, docs/DATA_PIPELINE.md) is built against torch's
# stable ABI from 0.12 on: one wheel serves torch >= 2.11 (torchcodec's compatibility table, which
# also sets Python >= 3.10). Tested with 0.12.0, 0.14.0 and 0.17.0 on torch 2.14.1. It loads FFmpeg's
# shared libraries from the system, which pip cannot install: apt-get install ffmpeg, conda install
# -c conda-forge ffmpeg or brew install ffmpeg (.ci/run installs them for the tests).
TORCHCODEC = ["torchcodec>=0.12,<0.18; python_version >= '3.10'", "torch>=2.11; python_version >= '3.10'"]
# tools/export.py --format onnx (docs/TOOLS.md): torch.onnx.export's default (dynamo) exporter needs
# onnxscript (torch 2.11+ imports its onnxscript._framework_apis.torch_2_11, which 0.6.2 has and 0.5.7
# lacks) and onnx; --verify runs the file with onnxruntime. The files are opset 20, IR version 10
# (onnx 1.16 and onnxruntime 1.18 are the first to read IR 10). Tested with onnx 1.23.2, onnxruntime
# 1.32.0 and onnxscript 0.7.2 (what pip picks) on torch 2.14.1.
EXPORT = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.6.2"]
# tools/submit.py (docs/TRAINING.md, "Clusters"): SLURM jobs and the local executor through submitit,
# whose SUBMITIT_PREEMPT_SIGNAL, JobEnvironment and requeueing signal handler cgnl_video/engine/cluster.py
# uses. Tested with submitit 1.5.4.
SLURM = ["submitit>=1.5"]

setup(
    name="cgnl_video",
    version="0.1.0",
    description="C2D ResNets with spacetime CGNL / NL blocks for video action recognition",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["cgnl_video", "cgnl_video.*"]),
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "pytorchvideo>=0.1.5",
        DECORD,
        "av>=11",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",  # checkpoint and weight URLs: downloaded once into its cache (utils/remote.py)
        "simplejson>=3.17",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # TENSORBOARD.ENABLE (docs/TRAINING.md section 9); the tests read the event files back with it
        "tensorboard": ["tensorboard"],
        # DATA.DECODING_BACKEND torchcodec; the tests compare it with PyAV
        "torchcodec": TORCHCODEC,
        # tools/export.py --format onnx; the tests export and run ONNX files
        "export": EXPORT,
        # tools/submit.py; the tests run jobs through submitit's local executor
        "slurm": SLURM,
        # the suite, plus the linters tests/repo/test_lint.py runs (settings in pyproject.toml)
        "test": ["pytest>=7", "pytest-timeout", "tensorboard", "ruff>=0.5", "import-linter>=2.0", *TORCHCODEC, *EXPORT,
                 *SLURM],
    },
)
