"""Checkpoints that are written atomically, verified, and loaded strictly.

MindSpore's `load_param_into_net` only warns about missing keys and a file with flipped bytes
loads silently unless a CRC was written; these helpers turn both into errors that name the file
and the keys, and never leave a half-written file under the final name.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn

from .checkpoint_schema import FORMAT_KEY
from .files import atomic_path

#: How a checkpoint saved with a CRC ends: the tag, then the checksum (MindSpore 2.x layout).
_CRC_TAG = b"crc_num"
_CRC_TRAILER = len(_CRC_TAG) + 10


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not fit the network."""


def save_checkpoint(
    params: nn.Cell | list, path: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write `params` (a network or a list of parameters) with a CRC, verify it, then rename.

    The file is written under a temporary name in the same folder, read back with the CRC
    check, fsynced and only then moved to `path`, so a run killed at any moment leaves either
    the previous file or the new one, never a torn one. Its first entry, `FORMAT_KEY`, marks
    it as this project's: such a file without its CRC trailer has been cut short.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".ckpt":
        raise CheckpointError(f"checkpoint file names must end in .ckpt, got {path}")
    named = params.parameters_dict().items() if isinstance(params, nn.Cell) else ((p.name, p) for p in params)
    entries = [{"name": FORMAT_KEY, "data": ms.Tensor(np.array([1], np.int32))}]
    entries += [{"name": name, "data": param} for name, param in named]
    try:
        with atomic_path(path) as tmp:  # the temporary name keeps .ckpt: MindSpore appends it otherwise
            ms.save_checkpoint(entries, str(tmp), crc_check=True, append_dict=dict(extra or {}))
            read_checkpoint(tmp)
    except (OSError, RuntimeError) as err:  # a full or read-only disk, from Python or MindSpore
        cause = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [""])[-1][:200]
        raise CheckpointError(f"cannot write checkpoint {path}: {cause}; check the free space and "
                              "permissions there (nothing was left behind)") from None
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, ms.Parameter]:
    """Load a `.ckpt` into a name -> Parameter dict, checking its CRC when it has one.

    MindSpore asked for a CRC check on a file without one (every foreign checkpoint) logs "do
    not contain the crc code, please check the file" and loads it anyway; the check is asked
    for only when the file has a CRC, and one line says instead what was checked.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    crc = has_crc(path)
    try:
        params = ms.load_checkpoint(str(path), crc_check=crc)
    except (ValueError, RuntimeError, TypeError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a MindSpore checkpoint ({err}); "
            "use another checkpoint (for example the previous epoch's) or retrain"
        ) from None
    if not crc and FORMAT_KEY in params:
        raise CheckpointError(
            f"checkpoint {path} was written by this project but lacks its CRC trailer: it was cut "
            "short (a full disk or an interrupted copy); use another checkpoint (for example the "
            "previous epoch's) or copy it again")
    if not crc:
        print(f"note: {path} has no CRC (not written by this project): it parsed as a complete "
              "MindSpore checkpoint and its entries are checked by name and shape against the network, "
              "but flipped bytes inside a tensor would go unnoticed", file=sys.stderr, flush=True)
    return params


def has_crc(path: str | os.PathLike) -> bool:
    """Whether the file ends in the CRC that `ms.save_checkpoint(..., crc_check=True)` appends:
    the 7 bytes `crc_num` and a 10-byte checksum, which is what MindSpore's reader looks for."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < _CRC_TRAILER:
            return False
        handle.seek(size - _CRC_TRAILER)
        return handle.read(len(_CRC_TAG)) == _CRC_TAG


def load_weights(
    net: nn.Cell | list[ms.Parameter],
    params: dict[str, ms.Parameter] | str | os.PathLike,
    new_head: str | None = None,
    source: str | None = None,
) -> list[str]:
    """Load every parameter of `net` (a network or a list of parameters) from `params`;
    anything missing or misshapen is an error.

    Entries of the checkpoint that `net` does not have (optimizer state, epoch, step) are
    ignored. `new_head`: the classifier's name prefix (`models.head_prefix`); its entries whose
    shape differs are left at their initial values and their names returned (fine-tuning to
    new classes).
    """
    if not isinstance(params, dict):
        source = source or str(params)
        params = read_checkpoint(params)
    source = source or "the checkpoint"
    targets = list(net.get_parameters()) if isinstance(net, nn.Cell) else list(net)
    missing, mismatched, skipped = [], [], []
    for param in targets:
        if param.name not in params:
            missing.append(param.name)
            continue
        value = params[param.name]
        if tuple(value.shape) != tuple(param.shape):
            if new_head and param.name.startswith(new_head):
                skipped.append(param.name)
                continue
            mismatched.append(
                f"{param.name}: checkpoint {tuple(value.shape)} vs network {tuple(param.shape)}"
            )
            continue
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_preview(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the network: " + "; ".join(problems)
            + ". Check the model name, its options and the class count"
        )
    for param in targets:
        if param.name not in skipped:
            param.set_data(ms.Tensor(params[param.name].asnumpy(), param.dtype))
    return skipped


def scalar(params: dict[str, Any], key: str, default: int | float | None = None):
    """Read a scalar stored with `save_checkpoint(extra=...)`, such as the epoch."""
    if key not in params:
        return default
    value = params[key]
    value = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
    return value.item()


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
