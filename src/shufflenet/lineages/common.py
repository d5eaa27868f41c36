"""What every lineage converter shares: reading source files, renaming and placing their entries,
and saving a verified checkpoint."""
from __future__ import annotations

import math
import os
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import mindspore as ms
import numpy as np

from ..models import ModelDescription, build_network, recognise
from ..models.description import UNSAFE_CHARS, parse_json, printable
from ..utils.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from ..utils.checkpoint_schema import META_KEY
from ..utils.optional import import_torch

#: name -> float32 array: a source file's tensors, whatever framework wrote it.
StateDict = dict[str, np.ndarray]
#: (state, source file, network option overrides) -> (our parameters, description).
Converter = Callable[[StateDict, str, dict], tuple[StateDict, ModelDescription]]
#: What torch.load raises on a damaged file or one that needs pickled code (KeyError, IndexError,
#: struct.error come from the weights-only unpickler reading garbage).
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
               KeyError, IndexError, TypeError, struct.error)
#: Origins whose files are PyTorch checkpoints; the others are MindSpore checkpoints.
TORCH_ORIGINS = ("megvii", "torchvision", "timm")
#: PyTorch BatchNorm entry -> MindSpore's.
BN_FIELDS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}


@dataclass(frozen=True)
class Lineage:
    """One publisher's weights of one network family."""

    family: str
    origin: str
    #: Entry names whose presence identifies the lineage's state dicts.
    signature: tuple[str, ...]
    convert: Converter
    #: Import path of a `torch.nn.Module` builder `(description) -> module` with the publisher's
    #: exact state-dict names, for comparing outputs (None: the publisher's network is ours).
    torch_reference: Optional[str] = None
    #: Entry names whose presence rules the lineage out (mindcv's `convs.{k}` files have our
    #: names but no classifier bias, which is what tells them from the zoo's).
    absent: tuple[str, ...] = ()
    #: Whether its files need renaming to load here (False: they already use our names, so
    #: every command loads them as they are and only `shufflenet convert` adds a description).
    renames: bool = True

    def matches(self, state: dict) -> bool:
        return all(key in state for key in self.signature) and not any(key in state for key in self.absent)


def load_source(path: Path, origin: str) -> StateDict:
    """The tensors of a source file: PyTorch for PyTorch publishers, MindSpore otherwise."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass the published weights file")
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path)
    if origin in TORCH_ORIGINS:
        return read_torch_checkpoint(path)
    params = read_checkpoint(path)
    state = {key: value.asnumpy() for key, value in params.items() if hasattr(value, "asnumpy")}
    if META_KEY in params:
        state[META_KEY] = params[META_KEY]
    return state


def read_torch_checkpoint(path: str | os.PathLike) -> StateDict:
    """A PyTorch checkpoint's tensors by name, without `module.` prefixes, as float32 arrays.

    Accepts `{'state_dict': {...}}` (Megvii's release) or a bare state dict. Loading uses
    `weights_only=True`: a file that needs arbitrary pickled objects is refused, not run, and
    the refusal names the callable it wanted.
    """
    torch = import_torch("reading PyTorch checkpoints")

    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): its download or copy failed; fetch the publisher's "
                         "released file again")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        raise ValueError(_torch_refusal(path, err)) from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state dict; expected {{'state_dict': {{'module.…': tensor}}}}")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    _check_names(path, tensors)
    return {_strip_module(key): value.detach().cpu().numpy().astype(np.float32)
            for key, value in tensors.items()}


def _torch_refusal(path: Path, err: BaseException) -> str:
    """Why torch.load refused `path`, in one line: the callable its pickle wanted to run (torch
    names it `GLOBAL module.name`), a file cut short, or torch's own first line."""
    blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
    if blocked:
        return (f"{path}: shufflenet refuses to run pickled code: {blocked.group(1)} (PyTorch files are "
                "read with weights_only=True, tensors and plain containers only); pass the publisher's "
                "released weights file")
    if isinstance(err, EOFError):
        return f"{path} ends early ({path.stat().st_size} bytes): it is cut short; fetch it again"
    detail = re.search(r"Unsupported[^\n]*", str(err))  # the weights-only unpickler's reason
    first_line = detail.group() if detail else (str(err).strip().splitlines() or [""])[0]
    return (f"{path} is not a PyTorch checkpoint that loads with weights_only=True "
            f"({type(err).__name__}: {printable(first_line, 200)}); pass the publisher's released file")


def _check_names(path: Path, state: dict) -> None:
    """Entry names are printed in later messages: strings, short, without control characters."""
    for name in state:
        if not isinstance(name, str) or len(name) > MAX_ENTRY_NAME or UNSAFE_CHARS.search(name):
            raise ValueError(f"{path}: the entry name {printable(repr(name), 80)} is not a short printable "
                             "string; pass the publisher's released file")


#: safetensors dtype -> numpy's (little-endian); bfloat16 is widened by hand (numpy has none).
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
#: Largest safetensors header read (bytes): the format's own limit, as its reference reader sets.
MAX_SAFETENSORS_HEADER = 100_000_000
#: Most dimensions of a tensor (the networks here use 4), and the longest entry name.
MAX_TENSOR_DIMS, MAX_ENTRY_NAME = 8, 256


def read_safetensors(path: str | os.PathLike) -> StateDict:
    """The floating-point tensors of a `.safetensors` file (Hugging Face's format, which timm's
    releases use) as float32 arrays, read with numpy alone: a little-endian u64 header length, a
    JSON header of {name: dtype, shape, data_offsets}, then the raw data. Integer entries
    (`num_batches_tracked`) are left out.

    The header is bounded (length within the file and `MAX_SAFETENSORS_HEADER`, a JSON object
    nested at most `MAX_JSON_DEPTH` deep, every entry's shape matching its byte range) before
    any tensor is touched, and the data is memory-mapped: only the tensors used are read.
    """
    path = Path(path)
    header, start, size = _safetensors_header(path)
    entries = {name: _tensor_entry(path, name, info, size) for name, info in header.items()
               if name != "__metadata__"}
    _check_names(path, entries)
    body = np.memmap(path, np.uint8, "r", offset=start, shape=(size,)) if size else np.zeros(0, np.uint8)
    state = {}
    for name, (dtype, shape, (first, last)) in entries.items():
        if dtype not in _SAFETENSORS_DTYPES:
            continue
        raw = body[first:last].view(_SAFETENSORS_DTYPES[dtype])
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        state[_strip_module(name)] = raw.astype(np.float32).reshape(shape)
    return state


def _safetensors_header(path: Path) -> tuple[dict, int, int]:
    """The parsed header, where the data starts and how many bytes it has; the length is checked
    against the limit and the file's size before the header is read."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
        if length is None or length > min(MAX_SAFETENSORS_HEADER, size - 8):
            why = ("it is empty (0 bytes)" if size == 0 else
                   "it has fewer than the 8 bytes of a header length" if length is None else
                   f"its header claims {length} bytes, more than the file's {size - 8} or the "
                   f"{MAX_SAFETENSORS_HEADER} a header may have")
            raise ValueError(f"{path} is not a readable safetensors file: {why}; pass the publisher's "
                             "released file")
        raw = handle.read(length)
    header = parse_json(raw, str(path), "safetensors header")
    if not isinstance(header, dict):
        raise ValueError(f"{path}: its safetensors header is not a JSON object; pass the publisher's "
                         "released file")
    return header, 8 + length, size - 8 - length


def _tensor_entry(path: Path, name: str, info: Any, size: int) -> tuple[str, list, tuple[int, int]]:
    """(dtype, shape, byte range) of one header entry, refused unless the range lies in the data
    and, for the float types read, holds exactly the shape's elements."""
    entry = info if isinstance(info, dict) else {}
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    problem = None
    if not (isinstance(dtype, str) and isinstance(shape, list) and len(shape) <= MAX_TENSOR_DIMS
            and all(_count(d) for d in shape)):
        problem = f"needs a dtype and a shape of at most {MAX_TENSOR_DIMS} sizes"
    elif not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(v) for v in offsets)
              and offsets[0] <= offsets[1] <= size):
        problem = "lies outside the file"
    elif dtype in _SAFETENSORS_DTYPES and (offsets[1] - offsets[0]) != math.prod(shape) * (
            np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize):
        problem = f"has {offsets[1] - offsets[0]} bytes, not those of a {dtype} tensor of shape {shape}"
    if problem:
        raise ValueError(f"{path} is not a readable safetensors file: tensor {printable(name, 80)} "
                         f"{problem}; pass the publisher's released file")
    return dtype, shape, (offsets[0], offsets[1])


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def save_converted(params: StateDict, description: ModelDescription, dst: str | os.PathLike,
                   source: str) -> Path:
    """Load `params` strictly into the described network and save it with the description."""
    net = build_network(description)
    tensors = {key: ms.Parameter(ms.Tensor(value), name=key) for key, value in params.items()}
    try:
        load_weights(net, tensors, source=source)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    return save_checkpoint(net, dst, extra={META_KEY: description.to_json()})


def split_groups(prefix: str, weight: np.ndarray, groups: int) -> StateDict:
    """A grouped 1x1 conv weight (out, in/g, 1, 1) as `GroupConv`'s per-group `convs.{k}.weight`.

    Group k of a grouped convolution owns output channels [k * out/g, (k + 1) * out/g), so the
    split is along the output axis.
    """
    return {f"{prefix}.convs.{k}.weight": part for k, part in enumerate(np.split(weight, groups, axis=0))}


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def bn_field(name: str) -> str:
    """PyTorch BatchNorm entry -> MindSpore's (`running_var` -> `moving_variance`, ...)."""
    return BN_FIELDS[name]


def network_entries(state: StateDict, roots: tuple[str, ...]) -> StateDict:
    """The network's tensors of a MindSpore training checkpoint: the entries under its top-level
    cells `roots`. What a training network saves besides (optimizer slots `adam_m.*`,
    `moments.*`, EMA copies `ema.*`, step counters, learning rate, loss scale) is dropped."""
    return {key: value for key, value in state.items()
            if key.split(".")[0] in roots and hasattr(value, "shape")}


def as_is_converter(roots: tuple[str, ...], defaults: dict, preprocessing: str, network: str) -> Converter:
    """The converter of a publisher whose files hold our names (mindcv's): its network entries
    under `roots` as they are, without its training state, described with its `defaults`."""

    def convert(state: StateDict, source: str, options: dict) -> tuple[StateDict, ModelDescription]:
        entries = network_entries(state, roots)
        return convert_renamed(entries, {key: key for key in entries}, source, options, defaults,
                               preprocessing, network)

    return convert


def torch_entry_names(state: StateDict,
                      module_name: Callable[[str], Optional[str]]) -> dict[str, Optional[str]]:
    """Our name for each entry of a PyTorch state dict (None: no module of ours holds it).

    `module_name` renames a module path (`conv1.1` -> `first_conv.1`); the fields of BatchNorms,
    known by their running statistics, become MindSpore's. `num_batches_tracked` is left out:
    MindSpore's BatchNorm has no counter.
    """
    batchnorms = {key[:-len(".running_mean")] for key in state if key.endswith(".running_mean")}
    names: dict[str, Optional[str]] = {}
    for key in state:
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        ours = module_name(module)
        if module in batchnorms:
            field = BN_FIELDS.get(field)
        names[key] = f"{ours}.{field}" if ours and field else None
    return names


def convert_renamed(state: StateDict, names: dict[str, Optional[str]], source: str, options: dict,
                    defaults: dict, preprocessing: str, network: str) -> tuple[StateDict, ModelDescription]:
    """Entries renamed by `names` (source key -> our name), as the network they describe.

    The model, class count and what options the shapes tell come from the renamed shapes (the
    registry's recognisers, as for files with our names); the publisher's `defaults` options,
    then `options`, override those, and its `preprocessing` completes the description. Every
    entry must land on a parameter of that network, else a ValueError names those that do not
    (a weight silently left out would give a checkpoint that loads but is not the publisher's
    network).
    """
    shapes = {name: tuple(state[key].shape) for key, name in names.items() if name}
    recognised = recognise(shapes, source)
    description = recognised.replace(options={**recognised.options, **defaults, **options},
                                     preprocessing=preprocessing)
    expected = {param.name for param in build_network(description).get_parameters()}
    unplaced = [key for key, name in names.items() if name not in expected]
    if unplaced:
        raise ValueError(f"{source}: entries of no layer of {network}: {', '.join(unplaced[:8])}")
    return {name: state[key] for key, name in names.items()}, description
