"""Train any registered model (ShuffleNet V1/V2/V2+, MobileNet V1/V2, SqueezeNet, Xception):
`python train.py` runs the CPU demo; `--help` lists every option."""
import sys

from shufflenet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
