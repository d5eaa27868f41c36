"""`shufflenet <command>` (also `python -m shufflenet <command>`)."""
from __future__ import annotations

import importlib
import sys

#: Subcommand -> (module under shufflenet.cli, one-line help).
COMMANDS = {
    "summary": ("summary", "print every registered model with parameters and MFLOPs"),
    "benchmark": ("benchmark", "training and inference images/s against PyTorch eager, side by side"),
    "train": ("train", "train a model (no arguments: the CPU demo on the bundled digits)"),
    "eval": ("eval", "top-1, top-5 and loss of a .ckpt or .mindir on a validation set"),
    "data-benchmark": ("data_benchmark", "images/s of the input pipelines at 224 and 32"),
    "export": ("export", "export a checkpoint to MINDIR, AIR or ONNX, verified, with a sidecar JSON"),
    "predict": ("predict", "top-5 classes of image files with a .mindir, .onnx or .ckpt"),
    "weights": ("weights", "list every publisher's weights by name, download them, chart top-1 vs MFLOPs"),
    "convert": ("convert", "import a publisher's weights ({origins})"),
    "average-checkpoints": ("average", "average a run's last epoch checkpoints (or any of one model)"),
    "build-kernels": ("build_kernels", "build the C++ CPU kernels into a cache, or fill a shared one"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<15} {text}" for name, (_, text) in COMMANDS.items()]
        lines = [line.replace("{origins}", ", ".join(_origins())) for line in lines]
        print("usage: shufflenet <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    module = importlib.import_module(f"shufflenet.cli.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:])


def _origins() -> tuple[str, ...]:
    """The publishers `convert` reads, from the lineage table (imported only for the help)."""
    from ..lineages import ORIGINS

    return ORIGINS


if __name__ == "__main__":
    sys.exit(main())
