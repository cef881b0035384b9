"""Checkpoints (rnnfast.io): round trips, the documented layout, refusal of truncated,
corrupt, foreign and hostile files, and atomic saving under a crash.

``Affine``, a module defined here and registered for these tests, keeps the tests
independent of the layers; the real RNN / LSTM / GRU / Linear round trips skip while
``rnnfast.layers`` / ``rnnfast.linear`` cannot be imported."""

import importlib
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

import rnnfast.io as rio
from rnnfast.io import CheckpointError, HEADER_KEY

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


class Affine:
    """A stand-in module with the module protocol: ``y = x W^T + b``."""

    def __init__(self, in_features, out_features, bias=True, dtype="float32", seed=None):
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.dtype, self.seed = np.dtype(dtype), seed
        rng = np.random.default_rng(seed)
        self.params = {"weight": rng.uniform(-1, 1, (out_features, in_features)).astype(dtype)}
        if bias:
            self.params["bias"] = rng.uniform(-1, 1, out_features).astype(dtype)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": self.dtype.name, "seed": self.seed}

    def state_dict(self):
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state):
        if set(state) != set(self.params):
            raise ValueError(f"state_dict keys {sorted(state)} != {sorted(self.params)}")
        for name, value in state.items():
            if np.shape(value) != self.params[name].shape:
                raise ValueError(f"{name} must have shape {self.params[name].shape}")
        self.params = {name: np.array(value, dtype=self.dtype) for name, value in state.items()}

    def __call__(self, x):
        y = x @ self.params["weight"].T
        return y + self.params["bias"] if self.bias else y


class Shifted(Affine):
    """A subclass that is not registered: save must refuse it."""


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(rio.MODULE_CLASSES, "Affine", Affine)


def perturbed(module, seed=0):
    """``module`` with parameters that its seed does not produce, so a round trip shows
    the stored arrays were loaded rather than re-initialised."""
    rng = np.random.default_rng(seed)
    module.load_state_dict({name: value + rng.standard_normal(value.shape).astype(value.dtype)
                            for name, value in module.state_dict().items()})
    return module


def flat_outputs(result):
    if isinstance(result, (tuple, list)):
        return [array for item in result for array in flat_outputs(item)]
    return [np.asarray(result)]


def run(module, x):
    if hasattr(module, "eval"):
        module.eval()
    return flat_outputs(module(x) if callable(module) else module.forward(x))


def assert_same_module(loaded, original, x=None):
    assert type(loaded) is type(original)
    assert loaded.config() == original.config()
    assert list(loaded.params) == list(original.params)
    for name, value in original.params.items():
        got = loaded.params[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert got.tobytes() == value.tobytes(), f"{name} is not bit-identical"
    if x is not None:
        for got, expected in zip(run(loaded, x), run(original, x)):
            assert got.dtype == expected.dtype
            assert np.array_equal(got, expected)


def header_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[HEADER_KEY].tobytes().decode("utf-8"))


def entries_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def write_npz(path, entries):
    """A plain np.savez archive (which pickles object arrays) at exactly ``path``."""
    with open(path, "wb") as file:
        np.savez(file, **entries)


def rewrite(path, edit_header=None, drop=(), add=None):
    entries = entries_of(path)
    if edit_header is not None:
        header = json.loads(entries[HEADER_KEY].tobytes())
        edit_header(header)
        entries[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    for key in drop:
        del entries[key]
    entries.update(add or {})
    write_npz(path, entries)


def assert_refused(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        rio.load(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def checkpoint(tmp_path):
    """A small valid checkpoint: (path, the saved list of two modules)."""
    modules = [perturbed(Affine(3, 2, seed=1)), perturbed(Affine(2, 4, bias=False, seed=2))]
    path = tmp_path / "model.npz"
    rio.save(path, modules)
    return path, modules


# -------------------------------------------------------------------------- round trips

def test_round_trip_arrays_and_plain_values(tmp_path):
    """Arrays and JSON values beside modules: a training state (optimizer moments,
    generator states with 128-bit integers, non-finite floats) comes back exactly."""
    module = perturbed(Affine(3, 2, seed=1))
    rng = np.random.default_rng(7)
    state = {"model": [module, module],
             "moments": [rng.standard_normal((2, 3)).astype(np.float32),
                         np.arange(6, dtype=np.int64).reshape(3, 2)[:, ::-1]],
             "mask": np.array([True, False]), "empty": np.zeros((0, 4)),
             "scalar": np.array(2.5), "generator": rng.bit_generator.state,
             "vocabulary": "ab\u00e9\n", "step": 12, "done": False, "nothing": None,
             "losses": [1.5, float("nan"), float("inf"), -float("inf")],
             "numpy_numbers": (np.float32(0.1), np.int64(3), np.bool_(True))}
    path = tmp_path / "state.npz"
    rio.save(path, state)
    loaded = rio.load(path)

    assert set(loaded) == set(state)
    assert loaded["model"][0] is loaded["model"][1]
    assert_same_module(loaded["model"][0], module)
    for got, expected in zip(loaded["moments"] + [loaded["mask"], loaded["empty"],
                                                   loaded["scalar"]],
                             state["moments"] + [state["mask"], state["empty"],
                                                 state["scalar"]]):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected)
    assert loaded["generator"] == state["generator"]
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["generator"]
    assert restored.random() == rng.random()
    assert (loaded["vocabulary"], loaded["step"], loaded["done"], loaded["nothing"]) == \
        ("ab\u00e9\n", 12, False, None)
    assert loaded["losses"][0] == 1.5 and np.isnan(loaded["losses"][1])
    assert loaded["losses"][2:] == [float("inf"), -float("inf")]
    assert loaded["numpy_numbers"] == [float(np.float32(0.1)), 3, True]
    assert all(type(v) in (float, int, bool) for v in loaded["numpy_numbers"])
    rio.save(path, "text")
    assert rio.load(path) == "text"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_module(tmp_path, dtype, bias):
    module = perturbed(Affine(5, 3, bias=bias, dtype=dtype, seed=3))
    path = tmp_path / "affine.npz"
    rio.save(path, module)
    x = np.random.default_rng(1).standard_normal((4, 2, 5)).astype(dtype)
    assert_same_module(rio.load(path), module, x)
    assert_same_module(rio.load(str(path)), module, x)


def test_round_trip_nested_structure(tmp_path):
    a, b, c = (perturbed(Affine(2, 3, seed=s), seed=s) for s in range(3))
    obj = {"encoder": [a, b], "head": c, "empty": [], "pair": (c, {"inner": [a]}), "none": {}}
    path = tmp_path / "nested.npz"
    rio.save(path, obj)
    loaded = rio.load(path)
    assert list(loaded) == list(obj)
    assert isinstance(loaded["encoder"], list) and len(loaded["encoder"]) == 2
    assert loaded["empty"] == [] and loaded["none"] == {}
    assert isinstance(loaded["pair"], list)  # tuples come back as lists
    x = np.ones((1, 2), np.float32)
    for got, expected in [(loaded["encoder"][0], a), (loaded["encoder"][1], b),
                          (loaded["head"], c), (loaded["pair"][1]["inner"][0], a)]:
        assert_same_module(got, expected, x)
    # a module listed several times is stored once and loads as one object
    assert loaded["pair"][0] is loaded["head"]
    assert loaded["pair"][1]["inner"][0] is loaded["encoder"][0]
    assert len(header_of(path)["modules"]) == 3


def test_documented_layout(checkpoint):
    path, (first, second) = checkpoint
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted([HEADER_KEY, "0/weight", "0/bias", "1/weight"])
        assert npz[HEADER_KEY].dtype == np.uint8 and npz[HEADER_KEY].ndim == 1
        assert np.array_equal(npz["0/weight"], first.params["weight"])
    header = header_of(path)
    assert header == {
        "format": "rnnfast-checkpoint", "version": 1,
        "modules": [
            {"class": "Affine", "config": first.config(),
             "params": {"weight": {"dtype": "<f4", "shape": [2, 3]},
                        "bias": {"dtype": "<f4", "shape": [2]}}},
            {"class": "Affine", "config": second.config(),
             "params": {"weight": {"dtype": "<f4", "shape": [4, 2]}}}],
        "root": {"list": [{"module": 0}, {"module": 1}]}}
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())


def test_save_is_reproducible_and_replaces(tmp_path):
    module = perturbed(Affine(3, 2, seed=1))
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    rio.save(first, module)
    rio.save(second, module)
    assert first.read_bytes() == second.read_bytes()
    other = perturbed(Affine(4, 4, seed=2))
    rio.save(first, other)  # replaces the existing file
    assert_same_module(rio.load(first), other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temp left


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_save_permissions(tmp_path):
    path = tmp_path / "m.npz"
    rio.save(path, Affine(2, 2))
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    path.chmod(0o640)
    rio.save(path, Affine(2, 2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "m.npz"
    rio.save(path, Affine(2, 2, seed=5))
    before = path.read_bytes()

    class Weird(Affine):
        def config(self):
            return {"dtype": np.float32}

    bad_param = Affine(2, 2)
    bad_param.state_dict = lambda: {"weight": np.array([object()], dtype=object)}
    cases = [(object(), "obj has type object"),
             ([Affine(2, 2), {1, 2}], "obj[1] has type set"),
             ({"mask": np.array(["a", "b"])}, "obj['mask'] must be a numeric array"),
             ({1: Affine(2, 2)}, "dict keys must be strings"),
             ({"a": Shifted(2, 2)}, "not a registered module class"),
             (bad_param, "must be a numeric array"),
             ]
    for obj, fragment in cases:
        with pytest.raises(TypeError, match=re.escape(fragment)):
            rio.save(path, obj)
    rio.register_module(Weird)
    try:
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            rio.save(path, Weird(2, 2))
    finally:
        del rio.MODULE_CLASSES["Weird"]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_register_module_refuses_to_rebind_a_name():
    with pytest.raises(ValueError, match="already registered"):
        rio.register_module(Shifted, "LSTM")
    assert rio.register_module(Affine) is Affine  # same class again: fine


# ----------------------------------------------------------------- real modules

def real_class(module_name, class_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.skip(f"{module_name} cannot be imported yet ({exc})")
    if not hasattr(module, class_name):
        pytest.skip(f"{module_name} has no {class_name} yet")
    return getattr(module, class_name)


REAL = {
    "rnn": ("rnnfast.layers", "RNN", dict(input_size=4, hidden_size=5, num_layers=2,
                                          nonlinearity="relu", bidirectional=True, seed=1), 4),
    "lstm": ("rnnfast.layers", "LSTM", dict(input_size=3, hidden_size=4, num_layers=2,
                                            dtype=np.float64, seed=2), 3),
    "gru": ("rnnfast.layers", "GRU", dict(input_size=3, hidden_size=6, bias=False,
                                          batch_first=True, seed=3), 3),
    "linear": ("rnnfast.linear", "Linear", dict(in_features=5, out_features=2, seed=4), 5),
}


def real_module(kind):
    """(a real module with perturbed parameters, an input for it); skips the test
    while its class is not available."""
    module_name, class_name, kwargs, in_size = REAL[kind]
    module = perturbed(real_class(module_name, class_name)(**kwargs), seed=len(kind))
    dtype = np.dtype(kwargs.get("dtype", np.float32))
    x = np.random.default_rng(7).standard_normal((3, 2, in_size)).astype(dtype)
    return module, x


@pytest.mark.parametrize("kind", sorted(REAL))
def test_round_trip_real_module(tmp_path, kind):
    module, x = real_module(kind)
    assert type(module)(**module.config()).config() == module.config()
    path = tmp_path / f"{kind}.npz"
    rio.save(path, module)
    assert_same_module(rio.load(path), module, x)


@pytest.mark.parametrize("kinds", [("lstm", "linear"), ("rnn", "gru", "linear")])
def test_round_trip_real_list_and_dict(tmp_path, kinds):
    modules = {kind: real_module(kind) for kind in kinds}
    rio.save(tmp_path / "list.npz", [module for module, _ in modules.values()])
    loaded = rio.load(tmp_path / "list.npz")
    assert isinstance(loaded, list) and len(loaded) == len(kinds)
    for got, (expected, x) in zip(loaded, modules.values()):
        assert_same_module(got, expected, x)

    rio.save(tmp_path / "dict.npz", {kind: module for kind, (module, _) in modules.items()})
    loaded = rio.load(tmp_path / "dict.npz")
    assert isinstance(loaded, dict) and list(loaded) == list(kinds)
    for kind, (expected, x) in modules.items():
        assert_same_module(loaded[kind], expected, x)


# -------------------------------------------------------------------- refusals

def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        rio.load(tmp_path / "absent.npz")


def test_truncated_files_are_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    data = path.read_bytes()
    cut_points = sorted({0, 1, 4, 8, 30, 64, 100, len(data) // 3, len(data) // 2,
                         len(data) - 100, len(data) - 23, len(data) - 22, len(data) - 1}
                        | set(range(0, len(data), 97)))
    cut = tmp_path / "cut.npz"
    for n in cut_points:
        cut.write_bytes(data[:n])
        message = assert_refused(cut)
        assert "truncated" in message or "empty" in message or "corrupt" in message, message


def test_flipped_bytes_are_refused_or_harmless(checkpoint, tmp_path):
    """Flip every byte in turn: the load either refuses the file or gives exactly the
    saved modules (bytes the zip format ignores, such as timestamps)."""
    path, modules = checkpoint
    data = path.read_bytes()
    bad = tmp_path / "flipped.npz"
    refused = 0
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0xFF
        bad.write_bytes(bytes(corrupt))
        try:
            loaded = rio.load(bad)
        except CheckpointError as exc:
            assert str(bad) in str(exc)
            refused += 1
            continue
        for got, expected in zip(loaded, modules):
            assert_same_module(got, expected)
    assert refused > 0.8 * len(data)
    # a flip inside a parameter's data is caught by the zip checksum
    weight = modules[0].params["weight"].tobytes()
    start = data.index(weight)
    corrupt = bytearray(data)
    corrupt[start + 5] ^= 0x01
    bad.write_bytes(bytes(corrupt))
    assert_refused(bad, "'0/weight'", "CRC")


def test_foreign_files_are_refused(tmp_path):
    path = tmp_path / "foreign.npz"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    assert_refused(path, "not an rnnfast checkpoint", "not a zip")
    path.write_bytes(b"")
    assert_refused(path, "empty")
    np.save(tmp_path / "array.npy", np.arange(3.0))
    assert_refused(tmp_path / "array.npy", "single .npy array")
    write_npz(path, {"weight": np.ones((2, 2)), "bias": np.zeros(2)})
    assert_refused(path, f"no {HEADER_KEY!r} entry", "'bias', 'weight'")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert_refused(path, "'notes.txt', which is not a .npy array")
    with zipfile.ZipFile(path, "w"):
        pass  # an empty zip archive
    assert_refused(path, f"no {HEADER_KEY!r} entry")


def test_compressed_archive_is_refused(checkpoint):
    path, _ = checkpoint
    entries = entries_of(path)
    with open(path, "wb") as file:
        np.savez_compressed(file, **entries)
    assert_refused(path, "compressed")


BAD_HEADERS = {
    "foreign format": (lambda h: h.update(format="something-else"),
                       ["not an rnnfast checkpoint", "'something-else'"]),
    "no format": (lambda h: h.pop("format"), ["not an rnnfast checkpoint"]),
    "newer version": (lambda h: h.update(version=2), ["version 2 is newer", "version 1"]),
    "version 0": (lambda h: h.update(version=0), ["invalid checkpoint version 0"]),
    "version string": (lambda h: h.update(version="1"), ["invalid checkpoint version '1'"]),
    "unknown class": (lambda h: h["modules"][0].update({"class": "Transformer"}),
                      ["unknown class 'Transformer'"]),
    "declared array missing": (
        lambda h: h["modules"][0]["params"].update(extra={"dtype": "<f4", "shape": [1]}),
        ["array '0/extra' of module 0 (Affine) is missing"]),
    "undeclared array": (lambda h: h["modules"][1]["params"].pop("weight"),
                         ["unexpected entries", "1/weight"]),
    "shape mismatch": (lambda h: h["modules"][0]["params"]["weight"].update(shape=[3, 2]),
                       ["'0/weight' has dtype float32 and shape (2, 3)",
                        "declares dtype float32 and shape (3, 2)"]),
    "object dtype": (lambda h: h["modules"][0]["params"]["weight"].update(dtype="|O"),
                     ["dtype '|O'"]),
    "bad config": (lambda h: h["modules"][0]["config"].update(colour="red"),
                   ["module 0 (Affine) cannot be built", "colour"]),
    "root out of range": (lambda h: h["root"].update(list=[{"module": 0}, {"module": 5}]),
                          ["module 5"]),
    "unused module": (lambda h: h["root"].update(list=[{"module": 0}]), ["never uses"]),
    "unknown node": (lambda h: h.update(root={"set": []}), ["unknown node 'set'"]),
    "no modules": (lambda h: h.pop("modules"), ["'modules' must be a list"]),
    "array out of range": (lambda h: h["root"]["list"].append({"array": 0}),
                           ["refers to array 0, but there are 0 arrays"]),
    "value holding a list": (lambda h: h["root"]["list"].append({"value": [1, 2]}),
                             ["unknown node 'value'"]),
    "unknown float": (lambda h: h["root"]["list"].append({"float": "1e999"}),
                      ["unknown node 'float'"]),
    "arrays not a list": (lambda h: h.update(arrays={}), ["'arrays' must be a list"]),
    "declared free array missing": (
        lambda h: (h.update(arrays=[{"dtype": "<f8", "shape": [2]}]),
                   h["root"]["list"].append({"array": 0})),
        ["array 'arrays/0' is missing"]),
    "unused free array": (lambda h: h.update(arrays=[{"dtype": "<f8", "shape": [2]}]),
                          ["declares arrays [0] that 'root' never uses"]),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_headers_are_refused(checkpoint, case):
    edit, fragments = BAD_HEADERS[case]
    path, _ = checkpoint
    rewrite(path, edit_header=edit)
    assert_refused(path, *fragments)


def test_missing_and_extra_arrays_are_refused(checkpoint):
    path, _ = checkpoint
    original = path.read_bytes()
    rewrite(path, drop=["0/bias"])
    assert_refused(path, "array '0/bias' of module 0 (Affine) is missing")
    path.write_bytes(original)
    rewrite(path, add={"0/extra": np.zeros(2, np.float32)})
    assert_refused(path, "unexpected entries", "0/extra")


def test_arrays_a_module_refuses_are_refused(checkpoint):
    path, _ = checkpoint
    rewrite(path, edit_header=lambda h: h["modules"][1]["params"].update(
        bias={"dtype": "<f4", "shape": [4]}), add={"1/bias": np.zeros(4, np.float32)})
    assert_refused(path, "module 1 (Affine) refuses its arrays")


def test_bad_header_entries_are_refused(checkpoint):
    path, _ = checkpoint
    original = path.read_bytes()
    cases = [(np.frombuffer(b"{not json", np.uint8), "not valid UTF-8 JSON"),
             (np.frombuffer(b"\xff\xfe", np.uint8), "not valid UTF-8 JSON"),
             (np.frombuffer(b"[1, 2]", np.uint8), "must be a JSON object"),
             (np.frombuffer(b'{"format": NaN}', np.uint8), "not valid UTF-8 JSON"),
             (np.frombuffer(b'{"version": 1, "version": 2}', np.uint8), "duplicate key"),
             (np.frombuffer(b"[" * 100000 + b"]" * 100000, np.uint8), "not valid UTF-8 JSON"),
             (np.arange(5), "must be a 1-D uint8 array")]
    for value, fragment in cases:
        path.write_bytes(original)
        rewrite(path, add={HEADER_KEY: value})
        assert_refused(path, fragment)


class Boom:
    """Unpickling this calls ``touch(marker)``: the file appears if anything unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (touch, (self.marker,))


def touch(marker):
    open(marker, "w").close()


def test_pickled_object_arrays_are_never_unpickled(checkpoint, tmp_path):
    path, _ = checkpoint
    original = path.read_bytes()
    marker = tmp_path / "unpickled"
    boom = np.array([Boom(str(marker))], dtype=object)
    # as a declared parameter
    rewrite(path, add={"0/bias": boom})
    assert_refused(path, "'0/bias' holds Python objects")
    # as the header itself
    path.write_bytes(original)
    rewrite(path, add={HEADER_KEY: boom})
    assert_refused(path, f"{HEADER_KEY!r} holds Python objects")
    # a bare pickle
    path.write_bytes(pickle.dumps(Boom(str(marker))))
    assert_refused(path, "not a zip")
    assert not marker.exists()


def test_lying_npy_header_is_refused_before_allocating(checkpoint):
    """An entry whose .npy header declares a huge shape over a few bytes of data is
    refused from the sizes alone (nothing of that size is allocated)."""
    path, _ = checkpoint
    entries = entries_of(path)
    header = json.loads(entries[HEADER_KEY].tobytes())
    header["modules"][0]["params"]["bias"]["shape"] = [10**12]
    entries[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in entries.items():
            with archive.open(key + ".npy", "w") as entry:
                if key == "0/bias":
                    big = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
                    rio.npy_format.write_array_header_1_0(entry, big)
                    entry.write(b"\0" * 8)
                else:
                    rio.npy_format.write_array(entry, value)
    assert_refused(path, "'0/bias' is", "declares dtype float32 and shape (1000000000000,)")


# ------------------------------------------------------------------- atomicity

def test_failed_save_leaves_previous_checkpoint_and_no_temp(checkpoint, monkeypatch):
    path, modules = checkpoint
    original = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        rio.save(path, Affine(50, 50))
    assert path.read_bytes() == original
    assert [p.name for p in path.parent.iterdir()] == [path.name]


CHILD = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import rnnfast.io as rio
from numpy.lib import format as npy_format
from test_io import Affine

rio.register_module(Affine)
big = Affine(2048, 2048, seed=9)          # 16 MiB of float32

def block(what):
    print(what, flush=True)
    time.sleep(60)                         # until the parent kills us
    sys.exit("not killed")

if sys.argv[3] == "fsync":                 # the whole temp file written, not yet renamed
    os.fsync = lambda fd: block("blocked in fsync")
else:                                      # half of the big array written
    write_array = npy_format.write_array
    def half_write(fp, array, **kwargs):
        if array.size < big.params["weight"].size:
            return write_array(fp, array, **kwargs)
        data = array.tobytes()
        fp.write(data[: len(data) // 2])
        block("blocked mid-write")
    npy_format.write_array = half_write
rio.save(sys.argv[2], big)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("phase", ["fsync", "write"])
def test_killed_save_leaves_previous_checkpoint(checkpoint, phase):
    """SIGKILL a process in the middle of saving a big checkpoint over an existing
    one: the previous checkpoint is intact and loadable, and the temporary file the
    dead process leaves behind can never be taken for it."""
    path, modules = checkpoint
    original = path.read_bytes()
    import rnnfast
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, TESTS_DIR, str(path), phase],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watchdog = threading.Timer(30, child.kill)  # never hang the test suite
    watchdog.start()
    try:
        line = child.stdout.readline().decode().strip()
        assert line.startswith("blocked"), (line, child.stderr.read().decode())
        temporaries = [p for p in path.parent.iterdir() if p != path]
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > 2**20
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        child.kill()
        child.stdout.close()
        child.stderr.close()
        child.wait()

    assert path.read_bytes() == original
    loaded = rio.load(path)
    for got, expected in zip(loaded, modules):
        assert_same_module(got, expected)
    temporary, = [p for p in path.parent.iterdir() if p != path]
    assert temporary.name.startswith(f".{path.name}.") and temporary.name.endswith(".tmp")
    assert sorted(p.name for p in path.parent.glob("*.npz")) == [path.name]
    if phase == "write":  # the half-written file is refused, never read as a checkpoint
        assert_refused(temporary, "truncated or corrupt")
