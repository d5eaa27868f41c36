"""Checkpoints that are written atomically, verified, and loaded strictly.

MindSpore's `load_param_into_net` only warns about missing keys and a file with flipped bytes
loads silently unless a CRC was written; these helpers turn both into errors that name the file
and the keys, and never leave a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn

#: Keys a classifier may have; `load_weights(..., skip_classifier_mismatch=True)` ignores them
#: when their shape differs (fine-tuning on a new label set).
CLASSIFIER_PREFIX = "classifier."


#: Checkpoint entry holding a JSON description of the model (see `model_description`).
META_KEY = "shufflenet_meta"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not fit the network."""


def save_checkpoint(
    params: nn.Cell | list, path: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write `params` (a network or a list of parameters) with a CRC, verify it, then rename.

    The file is written under a temporary name in the same folder, read back with the CRC
    check, fsynced and only then moved to `path`, so a run killed at any moment leaves either
    the previous file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".ckpt":
        raise CheckpointError(f"checkpoint file names must end in .ckpt, got {path}")
    # MindSpore appends ".ckpt" to any other name, so the temporary name keeps the suffix.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(params, str(tmp), crc_check=True, append_dict=dict(extra or {}))
        read_checkpoint(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, ms.Parameter]:
    """Load a `.ckpt` into a name -> Parameter dict, checking its CRC when it has one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, TypeError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a MindSpore checkpoint ({err}); "
            "use another checkpoint (for example the previous epoch's) or retrain"
        ) from None


def load_weights(
    net: nn.Cell | list[ms.Parameter],
    params: dict[str, ms.Parameter] | str | os.PathLike,
    skip_classifier_mismatch: bool = False,
    source: str | None = None,
) -> list[str]:
    """Load every parameter of `net` (a network or a list of parameters) from `params`;
    anything missing or misshapen is an error.

    Entries of the checkpoint that `net` does not have (optimizer state, epoch, step) are
    ignored. With `skip_classifier_mismatch`, classifier entries whose shape differs are left at
    their initial values and their names returned (fine-tuning to new classes).
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
            if skip_classifier_mismatch and param.name.startswith(CLASSIFIER_PREFIX):
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
            + ". Check the model name and its options (pool_padding, classifier_bias, num_classes)"
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


def model_description(
    model: str,
    num_classes: int,
    options: dict[str, Any] | None = None,
    preprocessing: str = "imagenet",
    class_names: list[str] | None = None,
    image_size: int = 224,
) -> dict[str, Any]:
    """What a checkpoint needs to be rebuilt, exported and used without further flags.

    Stored as JSON under `META_KEY` by training (`save_checkpoint(extra={META_KEY: ...})`) and
    written as the sidecar of exported files. `preprocessing` names an entry of
    `shufflenet.data.presets.PRESETS`.
    """
    return {
        "model": model,
        "num_classes": int(num_classes),
        "options": dict(options or {}),
        "preprocessing": preprocessing,
        "class_names": list(class_names) if class_names else [str(i) for i in range(num_classes)],
        "image_size": int(image_size),
    }


def read_description(params: dict[str, Any]) -> dict[str, Any] | None:
    """The `model_description` stored in a checkpoint dict, or None (foreign checkpoints)."""
    raw = params.get(META_KEY)
    return json.loads(raw) if isinstance(raw, str) else None
