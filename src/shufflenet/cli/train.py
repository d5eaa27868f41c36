"""Train a ShuffleNetV1. With no arguments: the CPU demo on scikit-learn's bundled digits."""
from __future__ import annotations

import sys

from ..engine.config import build_parser, resolve_config
from ..engine.context import setup_context
from ..engine.modelarts import modelarts_session
from ..engine.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("train.py", __doc__)
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args)
        ranks = setup_context(config.device_target, config.distributed)
        with modelarts_session(config, ranks.rank, ranks.local) as local_config:
            train(local_config, ranks)
    except (ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
