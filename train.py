"""Train a ShuffleNetV1: `python train.py` runs the CPU demo; `--help` lists every option."""
import sys

from shufflenet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
