"""A publisher's file made a checkpoint of this project, compared with the publisher's network
before it takes its name: what `shufflenet convert` and the weights cache both do."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..inference.reference import compare_with_reference
from ..lineages import Lineage, convert_file
from ..models import ModelDescription
from ..utils.files import scratch_folder
from ..utils.optional import MissingDependency, import_torch

#: Largest relative logit difference from the publisher's network that a conversion may show.
MAX_RELATIVE_DIFF = 1e-4


def import_weights(src: Path, dst: Path, origin: str | None = None, model: str | None = None,
                   class_names: list[str] | None = None, options: dict | None = None,
                   preprocessing: str | None = None, check_size: int | None = None,
                   report: Callable[[str], None] = print) -> tuple[ModelDescription, Lineage]:
    """Convert `src` into `dst` (written in a scratch folder, renamed only once checked).

    Where the lineage has a PyTorch rebuild and PyTorch is installed, the logits of both at
    `check_size` (default: the model's input size; 0 skips it) must agree to
    `MAX_RELATIVE_DIFF`, else nothing is written."""
    with scratch_folder(dst.parent, dst.name) as scratch:
        tmp, description, lineage = convert_file(src, scratch / dst.name, origin, model, class_names,
                                                 options, preprocessing)
        size = description.image_size if check_size is None else check_size
        if lineage.torch_reference and size:
            _compare(tmp, src, dst, lineage, size, report)
        os.replace(tmp, dst)
    return description, lineage


def _compare(tmp: Path, src: Path, dst: Path, lineage: Lineage, size: int,
             report: Callable[[str], None]) -> None:
    try:
        import_torch("comparing with the publisher's network")
    except MissingDependency as err:  # optional: files that need no PyTorch convert unchecked
        report(f"not compared with the {lineage.origin} network: {err}")
        return
    diff = compare_with_reference(tmp, src, lineage, size)
    report(f"logits vs the {lineage.origin} network in PyTorch at {size}px: max |difference| "
           f"{diff['max_abs_diff']:.3g} (relative {diff['max_relative_diff']:.3g})")
    if diff["max_relative_diff"] > MAX_RELATIVE_DIFF:
        raise ValueError(f"the conversion of {src} differs from the PyTorch network beyond "
                         f"{MAX_RELATIVE_DIFF:g} relative, so {dst} was not written; the "
                         "conversion is wrong, please report it")
