"""Train any registered model (`shufflenet summary` lists them; --model picks one). With no
arguments: the CPU demo on scikit-learn's bundled digits."""
from __future__ import annotations

import signal

from ..engine.config import resolve_config
from ..engine.context import setup_context
from ..engine.modelarts import modelarts_session
from ..engine.trainer import train
from .common import build_train_parser, console_may_close, run_command

PROG = "train.py"


def main(argv: list[str] | None = None) -> int:
    args = build_train_parser(PROG, __doc__).parse_args(argv)

    def body() -> None:
        config = resolve_config(args)
        ranks = setup_context(config.device_target, config.distributed)
        with modelarts_session(config, ranks.rank, ranks.local) as local_config:
            train(local_config, ranks, default_folder="output_dir" not in vars(args))

    previous = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop, as Ctrl-C
    try:
        with console_may_close():
            return run_command(PROG, body)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
