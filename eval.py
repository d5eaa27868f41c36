"""Evaluate a .ckpt or .mindir: top-1, top-5 and loss over every validation sample."""
import sys

from shufflenet.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
