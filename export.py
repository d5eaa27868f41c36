"""Export a checkpoint to MINDIR, AIR or ONNX (see `python export.py --help`)."""
import sys

from shufflenet.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
