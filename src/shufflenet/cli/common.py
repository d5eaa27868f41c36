"""What every command shares: flags generated from `Config` and the model registry, and one
error wrapper, so each key is declared once and every failure reads the same way."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Callable, get_type_hints

from ..engine.config import DEFAULT_RECIPE, OPTION_DEST, Config, base_type, list_recipes
from ..models import ModelDescription, option_table

#: Errors that are the user's to fix: printed as one line, exit status 1.
USER_ERRORS = (ValueError, FloatingPointError)


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_flag(parser: argparse.ArgumentParser, name: str, kind: type, help_text: str,
             choices: tuple | None = None, default=argparse.SUPPRESS, dest: str | None = None) -> None:
    """`--some-name` (and `--some_name`, as ModelArts passes job parameters); booleans also take
    `--no-some-name`. The metavar is the flag's own name, never its internal `dest`."""
    dest = dest or name
    flags = ["--" + name.replace("_", "-")] + (["--" + name] if "_" in name else [])
    if kind is bool:
        parser.add_argument(*flags, dest=dest, nargs="?", const=True, type=parse_bool, default=default,
                            metavar="BOOL", help=help_text)
        parser.add_argument("--no-" + name.replace("_", "-"), dest=dest, action="store_false",
                            default=default, help=argparse.SUPPRESS)
    elif kind is list:
        parser.add_argument(*flags, dest=dest, nargs="*", type=int, default=default, metavar="N",
                            help=help_text)
    else:
        parser.add_argument(*flags, dest=dest, type=kind, choices=choices, default=default, help=help_text,
                            metavar=None if choices else name.upper())


def add_config_flags(parser: argparse.ArgumentParser, names: list[str] | None = None,
                     layered: bool = True) -> None:
    """One flag per `Config` field (or the `names` given). `layered`: flags default to "not
    given", so a recipe's values survive (train); else to the field's default (eval)."""
    hints = get_type_hints(Config)
    for f in fields(Config):
        if (names is not None and f.name not in names) or not f.metadata.get("flag", True):
            continue
        default = argparse.SUPPRESS if layered else f.default
        add_flag(parser, f.name, base_type(hints[f.name]), f"{f.metadata['help']} (default {f.default})",
                 f.metadata.get("choices"), default)


def add_option_flags(parser: argparse.ArgumentParser, layered: bool = True) -> None:
    """One flag per network option of any family (`--pool-padding`, ...); default: the model's."""
    default = argparse.SUPPRESS if layered else None
    for name, option in option_table().items():
        add_flag(parser, name, option.kind, f"{option.help} (default: the model's)", option.choices,
                 default, dest=OPTION_DEST + name)


def build_train_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """`--config` plus one flag per Config field and network option, all defaulting to "not given"."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", default=DEFAULT_RECIPE,
                        help=f"packaged recipe ({', '.join(list_recipes())}) or YAML path")
    add_config_flags(parser)
    add_option_flags(parser)
    return parser


def add_model_flags(parser: argparse.ArgumentParser, class_names: bool = True) -> None:
    """Flags that override what a checkpoint records (shared by eval, export and predict)."""
    parser.add_argument("--model", help="registered model name (default: recorded, else recognised)")
    parser.add_argument("--num-classes", type=int, help="classifier outputs (default: recorded)")
    add_option_flags(parser, layered=False)
    if class_names:
        parser.add_argument("--class-names", help="text file with one class name per line")


def add_weights_table_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-table", metavar="FILE",
                        help="YAML file of your own weight entries, over the built-in table "
                             "(default: $SHUFFLENET_WEIGHTS_FILE)")


def add_weights_flags(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
                      table_parser: argparse.ArgumentParser) -> None:
    """`--weights TAG` (published weights by name, with --model) and `--weights-table FILE`."""
    parser.add_argument("--weights", metavar="TAG",
                        help="published weights of --model by tag (torchvision, timm, mindcv, zoo, megvii, "
                             "default, or your table's); see `shufflenet weights`")
    add_weights_table_flag(table_parser)


def weights_checkpoint(args: argparse.Namespace) -> str:
    """The cached checkpoint of `--weights TAG` for `--model` (fetched and converted if needed)."""
    from ..pretrained import fetch_weights

    return str(fetch_weights(args.model, args.weights, args.weights_table))


def given_options(args: argparse.Namespace) -> dict:
    """Network options given on the command line."""
    return {key[len(OPTION_DEST):]: value for key, value in vars(args).items()
            if key.startswith(OPTION_DEST) and value is not None}


def describe_overrides(description: ModelDescription, args: argparse.Namespace) -> ModelDescription:
    """`--preprocessing`, `--class-names` and `--image-size` over what the checkpoint records."""
    changes: dict = {}
    if getattr(args, "preprocessing", None):
        changes["preprocessing"] = args.preprocessing
    if getattr(args, "image_size", None):
        changes["image_size"] = args.image_size
    names = read_class_names(getattr(args, "class_names", None))
    if names is not None:
        if len(names) != description.num_classes:
            raise ValueError(f"--class-names has {len(names)} names for a "
                             f"{description.num_classes}-class model")
        changes["class_names"] = tuple(names)
    return description.replace(**changes) if changes else description


def read_class_names(path: str | None) -> list[str] | None:
    """Class names from a text file, one per line (blank lines ignored)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--class-names file {file} does not exist")
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@contextmanager
def console_may_close() -> Iterator[None]:
    """For a command whose reader may leave early (`train.py | head -1`): the command goes on
    (the training log stops its console output), and at its end a stdout whose reader has gone
    is pointed at /dev/null, so the flush at exit reports no BrokenPipeError. The command's own,
    explicit step: no library call changes the process's stdout."""
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; a user error or a file-system fault is one line
    `PROG: error: ...` on stderr, exit 1."""
    try:
        return body() or 0
    except USER_ERRORS as err:
        message = str(err)
    except OSError as err:  # read-only or full disk, missing folder, permissions: name the path
        where = f"{err.filename}: " if err.filename else ""
        message = f"{where}{err.strerror or err}; check the path, its permissions and free space"
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM where a command turns it into one
        print(f"{prog}: {err or 'interrupted'}", file=sys.stderr)
        return 130
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1
