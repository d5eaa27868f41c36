"""Packaging for the `shufflenet` package (src layout)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version: dict = {}
exec((ROOT / "src" / "shufflenet" / "version.py").read_text(), version)

setup(
    name="shufflenet-mindspore",
    version=version["__version__"],
    description=("ShuffleNetV1/V2/V2+, MobileNetV1/V2, SqueezeNet and Xception for MindSpore on Ascend, "
                 "GPU and CPU, with published weights importable"),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"shufflenet": ["configs/*.yaml", "kernels/*.cc", "kernels/*.h"]},
    install_requires=[
        "mindspore==2.10.0",
        # MindSpore 2.10 breaks under numpy 2 (PyNative ops and GeneratorDataset).
        "numpy>=1.23,<2",
        "pyyaml>=6",
        # The newest Pillow each Python can have: older releases have published advisories
        # (Pillow 13 needs Python 3.11; 11.3 is the last for 3.9).
        "pillow>=13.0.0; python_version >= '3.11'",
        "pillow>=11.3.0; python_version < '3.11'",
        "scikit-learn>=1.2",
        "matplotlib>=3.6",
        # The lock a training run holds on its folder; 4.3 opens the lock file without
        # following a link (O_NOFOLLOW, O_EXCL) and never truncates it.
        "filelock>=4.3",
        # Reads the C++ kernels' exported symbols from their bytes, never by loading them.
        "pyelftools>=0.29",
        # Published weights by name: HTTP with resumable ranges, and a progress bar.
        "requests>=2.31",
        "tqdm>=4.66",
    ],
    extras_require={
        # OpenCV is the reference of the Megvii preprocessing test (4.12 on needs numpy 2).
        # safetensors writes the timm-style test files our own reader must read.
        # mindcv 0.3.0 is the reference network of its checkpoints (tests/test_mindcv*.py); it
        # needs only numpy, PyYAML and tqdm, so it installs beside the pinned stack.
        # import-linter checks the layer contract in tests/importlinter.ini (`lint-imports` in .ci/run).
        "test": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.5", "import-linter>=2.16", "torch==2.13.0",
                 "onnx", "onnxruntime", "safetensors", "opencv-python-headless>=4.8,<4.12",
                 "mindcv==0.3.0"],
        "torch": ["torch==2.13.0"],
        "onnx": ["onnx", "onnxruntime"],
    },
    entry_points={"console_scripts": ["shufflenet=shufflenet.cli.main:main"]},
)
