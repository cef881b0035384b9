"""Checkpoints: ``save(path, obj)`` and ``load(path)`` for modules (RNN, LSTM, GRU,
Linear), NumPy arrays and plain values (strings, numbers, booleans, None), in lists and
dicts nested to any depth, in a plain ``.npz`` file, with no pickle anywhere.

Layout
------
A checkpoint is a zip archive of ``.npy`` entries, readable by ``np.load(path,
allow_pickle=False)``; every entry is stored uncompressed and holds a plain numeric
array (never an object array):

``__rnnfast__``
    A 1-D ``uint8`` array: the UTF-8 bytes of one JSON document, the header::

        {"format": "rnnfast-checkpoint",
         "version": 1,
         "modules": [
           {"class": "LSTM",
            "config": {"input_size": 8, "hidden_size": 16, ..., "dtype": "float32"},
            "params": {"weight_ih_l0": {"dtype": "<f4", "shape": [64, 8]}, ...}},
           {"class": "Linear", "config": {...}, "params": {...}}],
         "arrays": [{"dtype": "<f4", "shape": [64]}],
         "root": {"dict": {"model": {"list": [{"module": 0}, {"module": 1}]},
                           "mean": {"array": 0}, "vocabulary": {"value": "abc"},
                           "best_loss": {"float": "inf"}}}}

    ``modules[i]`` gives the registered class name, the constructor keyword
    arguments (``type(m)(**config)`` rebuilds the module) and the name, dtype and
    shape of every array of its ``state_dict()``. ``root`` is the saved structure:
    ``{"module": i}``, ``{"array": j}`` (the array declared by ``arrays[j]``),
    ``{"value": v}`` (a JSON string, number, boolean or null), ``{"float": "nan"}``
    (also ``"inf"``, ``"-inf"``, which JSON cannot hold), ``{"list": [node, ...]}``
    or ``{"dict": {"key": node, ...}}``, nested to any depth. A module listed twice
    is stored once and loads as one object; arrays are stored once per occurrence.
    ``arrays`` may be absent (no arrays outside modules).
``<i>/<name>``
    The array ``name`` of ``modules[i]``'s state dict, e.g. ``0/weight_ih_l0``,
    ``1/weight``, ``1/bias``.
``arrays/<j>``
    The array ``arrays[j]`` of the header, outside any module.

A file is accepted only when it is exactly this: ``format`` and ``version`` match,
every declared array is present with its declared dtype and shape, and nothing else
is in the archive. Anything else (a truncated or corrupt file, a foreign ``.npz``, a
zip of something else, a newer format version, an unknown class, a pickled object
array) raises :class:`CheckpointError`, a ``ValueError`` that names the file and
what is wrong, before any module is built; pickled data is never unpickled.

Saving is atomic: the checkpoint is written to a temporary file in the target's
directory (``.<name>.<random>.tmp``), flushed and ``fsync``-ed, renamed onto the
target with ``os.replace`` and the directory is ``fsync``-ed. A crash at any moment
leaves either the previous file or the new one at ``path``, never a partial one.

Not stored with a module: its gradients and train/eval mode. An optimizer's state is
saved as the plain structure ``optimizer.state_dict()`` returns. Tuples load as lists,
NumPy scalars as Python numbers.
"""

import errno
import importlib
import json
import math
import os
import re
import stat
import tempfile
import zipfile

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["save", "load", "CheckpointError", "register_module", "write_atomically",
           "MODULE_CLASSES", "FORMAT", "VERSION", "HEADER_KEY"]

FORMAT = "rnnfast-checkpoint"
VERSION = 1
HEADER_KEY = "__rnnfast__"

# Class name stored in the file -> the class, or "module:attribute" imported on first
# use (so this module imports before rnnfast.layers / rnnfast.linear exist).
MODULE_CLASSES = {
    "RNN": "rnnfast.layers:RNN",
    "LSTM": "rnnfast.layers:LSTM",
    "GRU": "rnnfast.layers:GRU",
    "Linear": "rnnfast.linear:Linear",
}

_MAX_DEPTH = 64                      # nesting of lists and dicts
_MAX_HEADER_BYTES = 16 * 2**20       # the JSON header
_DTYPE_RE = re.compile(r"^[<>|][biufc][0-9]{1,2}$")   # plain numeric dtypes only


class CheckpointError(ValueError):
    """A file that is not a valid rnnfast checkpoint (truncated, corrupt, foreign or
    of an unsupported version). The message names the file and the problem."""


def register_module(cls, name=None):
    """Let ``save``/``load`` store instances of ``cls`` under ``name`` (default: the
    class name). Returns ``cls``, so it works as a decorator."""
    name = cls.__name__ if name is None else name
    current = MODULE_CLASSES.get(name)
    if current is not None and current is not cls and current != _spec(cls):
        raise ValueError(f"module class name {name!r} is already registered to {current!r}")
    MODULE_CLASSES[name] = cls
    return cls


def _spec(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


def _registered_name(cls):
    """The name ``cls`` is registered under, or None."""
    for name, entry in MODULE_CLASSES.items():
        if entry is cls or (isinstance(entry, str) and entry == _spec(cls)):
            return name
    return None


def _resolve(name):
    """The class registered as ``name`` (importing its module if needed)."""
    entry = MODULE_CLASSES[name]
    if not isinstance(entry, str):
        return entry
    module_name, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


# ---------------------------------------------------------------------------- saving

def _is_module(obj):
    return all(callable(getattr(obj, method, None))
               for method in ("config", "state_dict", "load_state_dict"))


def _describe(obj, where, modules, arrays, memo, depth):
    """The header node for ``obj``; appends new modules and their arrays."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"rnnfast.save: {where} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(obj, (list, tuple)):
        return {"list": [_describe(item, f"{where}[{i}]", modules, arrays, memo, depth + 1)
                         for i, item in enumerate(obj)]}
    if isinstance(obj, dict):
        node = {}
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"rnnfast.save: dict keys must be strings, got "
                                f"{type(key).__name__} key {key!r} in {where}")
            node[key] = _describe(item, f"{where}[{key!r}]", modules, arrays, memo, depth + 1)
        return {"dict": node}
    if obj is None or isinstance(obj, (str, bool, int, float, np.bool_, np.integer,
                                       np.floating)):
        return _describe_value(obj)
    if isinstance(obj, np.ndarray):
        index = len(arrays["declared"])
        arrays["declared"].append(_array_spec(obj, where))
        arrays["data"][f"arrays/{index}"] = np.asarray(obj, order="C")
        return {"array": index}
    if not _is_module(obj):
        raise TypeError(f"rnnfast.save stores modules (RNN, LSTM, GRU, Linear), NumPy "
                        f"arrays, strings, numbers, booleans and None, in lists and dicts; "
                        f"{where} has type {type(obj).__name__}")
    if id(obj) in memo:
        return {"module": memo[id(obj)]}

    cls = type(obj)
    name = _registered_name(cls)
    if name is None:
        raise TypeError(f"rnnfast.save: {where} has type {cls.__qualname__}, which is not a "
                        f"registered module class (registered: {', '.join(MODULE_CLASSES)}); "
                        f"register it with rnnfast.io.register_module")
    config = obj.config()
    if not isinstance(config, dict):
        raise TypeError(f"rnnfast.save: {where}.config() must return a dict, "
                        f"got {type(config).__name__}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"rnnfast.save: {where}.config() is not JSON-serialisable: "
                        f"{exc}") from None

    index = len(modules)
    params = {}
    for key, value in obj.state_dict().items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"rnnfast.save: {where}.state_dict() has a key {key!r}; "
                            f"names must be non-empty strings")
        array = np.asarray(value, order="C")
        params[key] = _array_spec(array, f"{where}.state_dict()[{key!r}]")
        arrays["data"][f"{index}/{key}"] = array
    modules.append({"class": name, "config": config, "params": params})
    memo[id(obj)] = index
    return {"module": index}


def _describe_value(value):
    """The header node of a plain value: ``{"value": v}``, or ``{"float": "nan"}`` for
    the non-finite floats JSON cannot hold."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}      # 'nan', 'inf' or '-inf'
    return {"value": value}


def _array_spec(array, where):
    """{"dtype", "shape"} of a numeric array; TypeError for any other dtype."""
    if array.dtype.kind not in "biufc" or array.dtype.fields is not None:
        raise TypeError(f"rnnfast.save: {where} must be a numeric array, "
                        f"got dtype {array.dtype}")
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def _write_npz(file, header_bytes, arrays):
    """Write the archive: the header entry first, then the arrays, all uncompressed."""
    entries = [(HEADER_KEY, np.frombuffer(header_bytes, dtype=np.uint8))]
    entries += list(arrays.items())
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, array in entries:
            info = zipfile.ZipInfo(key + ".npy")   # fixed timestamp: reproducible bytes
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with archive.open(info, mode="w", force_zip64=True) as entry:
                npy_format.write_array(entry, array, allow_pickle=False)


def _umask():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename durable. Not possible on Windows, nor on some file systems."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def save(path, obj):
    """Write ``obj`` (a module, array or plain value, or a list or dict of them, nested
    to any depth) to ``path`` atomically, in the ``.npz`` layout of this module's
    docstring.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file, written exactly there (no suffix is added). An existing
        file is replaced only once the new one is complete and on disk.
    obj : module, ndarray, str, int, float, bool, None, or a list or dict (string
        keys) of these
        Modules are instances of a registered class (RNN, LSTM, GRU, Linear) with
        ``config()`` and ``state_dict()``; arrays must be numeric (bool, integer,
        float or complex).

    Raises ``TypeError`` for anything it cannot store, before any file is touched.
    """
    path = os.fsdecode(os.fspath(path))
    modules, arrays = [], {"declared": [], "data": {}}
    root = _describe(obj, "obj", modules, arrays, {}, 0)
    header = {"format": FORMAT, "version": VERSION, "modules": modules, "root": root}
    if arrays["declared"]:
        header["arrays"] = arrays["declared"]
    header_bytes = json.dumps(header, allow_nan=False).encode("utf-8")
    write_atomically(path, lambda file: _write_npz(file, header_bytes, arrays["data"]))


def write_atomically(path, write):
    """Create or replace the file ``path`` with what ``write(file)`` writes to a binary
    file object, atomically: into a temporary file in the same directory
    (``.<name>.<random>.tmp``), flushed and ``fsync``-ed, then renamed onto ``path``
    and the directory ``fsync``-ed. A crash or an exception at any moment leaves the
    previous file (or none) at ``path``, never a partial one, and no temporary file.
    A replaced file keeps its permissions; a new one gets the umask's."""
    path = os.fsdecode(os.fspath(path))
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)   # keep the old file's permissions
    except OSError:
        mode = 0o666 & ~_umask()
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                     dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), mode)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# ---------------------------------------------------------------------------- loading

class _Refused(Exception):
    """Internal: what is wrong with the file; ``load`` adds the path."""


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_header(archive, info, key):
    """(shape, dtype) from the .npy header of one entry, checked against the entry's
    size, without reading (or allocating) the data."""
    try:
        with archive.open(info) as entry:
            version = npy_format.read_magic(entry)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(entry)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npy_format.read_array_header_2_0(entry)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            header_length = entry.tell()
    except MemoryError:
        raise
    except Exception as exc:
        raise _Refused(f"entry {key!r} is corrupt or not a .npy array "
                       f"({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise _Refused(f"entry {key!r} holds Python objects (a pickled object array); "
                       f"checkpoints hold numeric arrays only and pickled data is never loaded")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.file_size != header_length + nbytes:
        raise _Refused(f"entry {key!r} is {info.file_size} bytes, but its .npy header "
                       f"declares dtype {dtype} and shape {shape}: "
                       f"{header_length} + {nbytes} bytes")
    return shape, dtype


def _read_entry(npz, key):
    try:
        array = npz[key]
    except MemoryError:
        raise
    except Exception as exc:
        raise _Refused(f"entry {key!r} is corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray):
        raise _Refused(f"entry {key!r} is not a .npy array")
    return array


def _read_header(npz, infos):
    if HEADER_KEY not in infos:
        names = sorted(infos)
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise _Refused(f"not an rnnfast checkpoint: no {HEADER_KEY!r} entry "
                       f"(the archive holds {len(names)} entries: {shown or 'none'})")
    shape, dtype = _entry_header(npz.zip, infos[HEADER_KEY], HEADER_KEY)
    if dtype != np.uint8 or len(shape) != 1:
        raise _Refused(f"the {HEADER_KEY!r} entry must be a 1-D uint8 array (UTF-8 JSON), "
                       f"got dtype {dtype} and shape {shape}")
    if shape[0] > _MAX_HEADER_BYTES:
        raise _Refused(f"the {HEADER_KEY!r} entry is {shape[0]} bytes, more than "
                       f"{_MAX_HEADER_BYTES} bytes")
    raw = _read_entry(npz, HEADER_KEY)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"), object_pairs_hook=_unique_keys,
                            parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, UnicodeDecodeError
        raise _Refused(f"the {HEADER_KEY!r} entry is not valid UTF-8 JSON "
                       f"({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise _Refused(f"the {HEADER_KEY!r} header must be a JSON object, "
                       f"got {type(header).__name__}")
    if header.get("format") != FORMAT:
        raise _Refused(f"not an rnnfast checkpoint: header format is "
                       f"{header.get('format')!r}, expected {FORMAT!r}")
    version = header.get("version")
    if not _is_int(version) or version < 1:
        raise _Refused(f"invalid checkpoint version {version!r}")
    if version > VERSION:
        raise _Refused(f"checkpoint format version {version} is newer than this rnnfast "
                       f"reads (version {VERSION}); upgrade rnnfast")
    return header


def _check_modules(header):
    """Validate ``header["modules"]``: [(class name, config, {param: (shape, dtype)})]."""
    modules = header.get("modules")
    if not isinstance(modules, list):
        raise _Refused("header 'modules' must be a list")
    checked = []
    for i, module in enumerate(modules):
        if not isinstance(module, dict) or set(module) != {"class", "config", "params"}:
            raise _Refused(f"header modules[{i}] must be an object with keys "
                           f"'class', 'config' and 'params'")
        name, config, params = module["class"], module["config"], module["params"]
        if not isinstance(name, str) or not isinstance(config, dict) \
                or not isinstance(params, dict):
            raise _Refused(f"header modules[{i}]: 'class' must be a string, 'config' and "
                           f"'params' objects")
        if name not in MODULE_CLASSES:
            raise _Refused(f"module {i} has unknown class {name!r} (known: "
                           f"{', '.join(sorted(MODULE_CLASSES))})")
        declared = {}
        for key, spec in params.items():
            if not key:
                raise _Refused(f"header modules[{i}] has a param with an empty name")
            declared[key] = _declared_array(spec, f"modules[{i}] param {key!r}")
        checked.append((name, config, declared))
    return checked


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _check_root(node, counts, used, depth=0):
    """Validate the node tree; ``counts`` and ``used`` are keyed "module" and "array"
    (how many are declared, which indices the tree refers to)."""
    if depth > _MAX_DEPTH:
        raise _Refused(f"header 'root' is nested more than {_MAX_DEPTH} levels deep")
    if not isinstance(node, dict) or len(node) != 1:
        raise _Refused(f"header 'root': every node must be an object with one key, "
                       f"'module', 'array', 'value', 'float', 'list' or 'dict'; "
                       f"got {node!r:.80}")
    (kind, value), = node.items()
    if kind in ("module", "array"):
        if not _is_int(value) or not 0 <= value < counts[kind]:
            raise _Refused(f"header 'root' refers to {kind} {value!r}, but there are "
                           f"{counts[kind]} {kind}s")
        used[kind].add(value)
    elif kind == "value" and (value is None or isinstance(value, (str, bool, int, float))):
        pass
    elif kind == "float" and value in _NON_FINITE:
        pass
    elif kind == "list" and isinstance(value, list):
        for item in value:
            _check_root(item, counts, used, depth + 1)
    elif kind == "dict" and isinstance(value, dict):
        for item in value.values():
            _check_root(item, counts, used, depth + 1)
    else:
        raise _Refused(f"header 'root': unknown node {kind!r} (or wrong value type)")


def _build(node, modules, arrays):
    (kind, value), = node.items()
    if kind == "module":
        return modules[value]
    if kind == "array":
        return arrays[value]
    if kind == "value":
        return value
    if kind == "float":
        return _NON_FINITE[value]
    if kind == "list":
        return [_build(item, modules, arrays) for item in value]
    return {key: _build(item, modules, arrays) for key, item in value.items()}


def _check_arrays(header):
    """Validate ``header["arrays"]`` (optional): [(shape, dtype)]."""
    declared = header.get("arrays", [])
    if not isinstance(declared, list):
        raise _Refused("header 'arrays' must be a list")
    return [_declared_array(spec, f"arrays[{j}]") for j, spec in enumerate(declared)]


def _declared_array(spec, where):
    """(shape, dtype) of one ``{"dtype": ..., "shape": [...]}`` declaration."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
        raise _Refused(f"header {where} must be declared as {{'dtype': ..., 'shape': [...]}}")
    dtype, shape = spec["dtype"], spec["shape"]
    if not isinstance(dtype, str) or not _DTYPE_RE.match(dtype):
        raise _Refused(f"header {where} has dtype {dtype!r}; only plain numeric dtypes "
                       f"are allowed")
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise _Refused(f"header {where} has shape {shape!r}; expected a list of "
                       f"non-negative integers")
    try:
        return tuple(shape), np.dtype(dtype)
    except TypeError as exc:
        raise _Refused(f"header {where}: {exc}") from None


def _read_declared(npz, infos, entry, shape, dtype):
    """The array of ``entry``, checked against its declared shape and dtype."""
    got_shape, got_dtype = _entry_header(npz.zip, infos[entry], entry)
    if got_shape != shape or got_dtype != dtype:
        raise _Refused(f"array {entry!r} has dtype {got_dtype} and shape {got_shape}, "
                       f"but the header declares dtype {dtype} and shape {shape}")
    array = _read_entry(npz, entry)
    if array.shape != shape or array.dtype != dtype:
        raise _Refused(f"array {entry!r} does not match its header")
    return array


def _archive_entries(npz, file_size):
    """{key: ZipInfo} of the archive, after checking each entry is a stored .npy
    whose bytes lie within the file."""
    infos = {}
    for info in npz.zip.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise _Refused(f"not an rnnfast checkpoint: the archive holds {name!r}, "
                           f"which is not a .npy array")
        key = name[:-len(".npy")]
        if key in infos:
            raise _Refused(f"entry {name!r} appears twice in the archive")
        if info.flag_bits & 0x1:
            raise _Refused(f"entry {name!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Refused(f"entry {name!r} uses zip compression method "
                           f"{info.compress_type}; checkpoints store arrays uncompressed")
        if info.compress_size != info.file_size:
            raise _Refused(f"entry {name!r} is corrupt: its stored size "
                           f"{info.compress_size} differs from its size {info.file_size}")
        if info.header_offset + info.compress_size > file_size:
            raise _Refused(f"entry {name!r} declares {info.file_size} bytes at offset "
                           f"{info.header_offset}, beyond the file's {file_size} bytes "
                           f"(truncated or corrupt)")
        infos[key] = info
    return infos


def load(path):
    """Read a checkpoint written by :func:`save`: the same structure of modules (rebuilt
    from their config, parameters bit-identical), arrays and plain values.

    Raises
    ------
    CheckpointError (a ValueError)
        the file is truncated, corrupt, not an rnnfast checkpoint, of a newer format
        version, names an unknown class, or its arrays do not match its header.
    OSError
        the file cannot be opened (e.g. FileNotFoundError).
    """
    path = os.fsdecode(os.fspath(path))
    try:
        return _load(path)
    except _Refused as exc:
        raise CheckpointError(f"cannot load checkpoint {path!r}: {exc}") from None


def _load(path):
    with open(path, "rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        start = file.read(8)
        file.seek(0)
        if not start:
            raise _Refused("the file is empty")
        if start.startswith(npy_format.MAGIC_PREFIX):
            raise _Refused("not an rnnfast checkpoint: it is a single .npy array, "
                           "not an .npz archive")
        if not start.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise _Refused(f"not an rnnfast checkpoint: not a zip/.npz archive "
                           f"(it starts with {start!r})")
        try:
            npz = np.load(file, allow_pickle=False)
        except MemoryError:
            raise
        except Exception as exc:   # BadZipFile, EOFError, struct.error, ...
            raise _Refused(f"the file is truncated or corrupt: its zip structure is "
                           f"unreadable ({type(exc).__name__}: {exc})") from None
        try:
            return _load_archive(path, npz, file_size)
        finally:
            npz.close()


def _load_archive(path, npz, file_size):
    infos = _archive_entries(npz, file_size)
    header = _read_header(npz, infos)
    declared = _check_modules(header)
    declared_arrays = _check_arrays(header)
    if "root" not in header:
        raise _Refused("header has no 'root'")
    counts = {"module": len(declared), "array": len(declared_arrays)}
    used = {"module": set(), "array": set()}
    _check_root(header["root"], counts, used)
    for kind, count in counts.items():
        if used[kind] != set(range(count)):
            unused = sorted(set(range(count)) - used[kind])
            raise _Refused(f"header declares {kind}s {unused} that 'root' never uses")

    expected = {HEADER_KEY}
    for i, (name, _, params) in enumerate(declared):
        for key in params:
            if f"{i}/{key}" not in infos:
                raise _Refused(f"array '{i}/{key}' of module {i} ({name}) is missing")
            expected.add(f"{i}/{key}")
    for j in range(len(declared_arrays)):
        if f"arrays/{j}" not in infos:
            raise _Refused(f"array 'arrays/{j}' is missing")
        expected.add(f"arrays/{j}")
    unexpected = sorted(set(infos) - expected)
    if unexpected:
        raise _Refused(f"unexpected entries not declared by the header: {unexpected[:8]}")

    classes = []
    for i, (name, _, _) in enumerate(declared):
        try:
            classes.append(_resolve(name))
        except (ImportError, AttributeError) as exc:
            raise ImportError(f"cannot load checkpoint {path!r}: module {i} is a {name}, "
                              f"registered as {MODULE_CLASSES[name]!r}, which cannot be "
                              f"imported ({exc})") from exc

    state_dicts = []
    for i, (name, _, params) in enumerate(declared):
        state_dicts.append({key: _read_declared(npz, infos, f"{i}/{key}", shape, dtype)
                            for key, (shape, dtype) in params.items()})
    arrays = [_read_declared(npz, infos, f"arrays/{j}", shape, dtype)
              for j, (shape, dtype) in enumerate(declared_arrays)]

    modules = []
    for i, ((name, config, _), cls, state) in enumerate(zip(declared, classes, state_dicts)):
        try:
            module = cls(**config)
        except MemoryError:
            raise
        except Exception as exc:
            raise _Refused(f"module {i} ({name}) cannot be built from its config {config}: "
                           f"{type(exc).__name__}: {exc}") from None
        try:
            module.load_state_dict(state)
        except (ValueError, TypeError, KeyError) as exc:
            raise _Refused(f"module {i} ({name}) refuses its arrays: "
                           f"{type(exc).__name__}: {exc}") from None
        modules.append(module)
    return _build(header["root"], modules, arrays)
