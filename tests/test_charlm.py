"""Character-level language modelling through the Python API: text files, the
vocabulary, the demo corpus, truncated-BPTT batches, and ``CharLM`` training,
evaluation, generation, checkpoints and exact resumption."""

import math
import signal
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from conftest import assert_close

import rnnfast
from rnnfast.models import CharLM
from rnnfast.models.charlm import describe_evaluation
from rnnfast.text import TokenStreams, Vocabulary, builtin_corpus, read_text, split_text

TEXT = ("The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
        "Every good boy does fine. ") * 12
SMALL = {"hidden_size": 16, "num_layers": 1, "seed": 0}
RUN = {"seq_len": 8, "batch_size": 4, "lr": 1e-2, "quiet": True}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: on a busy machine, waking threads would cost more than the work."""
    with threadpool_limits(1):
        yield


def same_parameters(a, b):
    return all(np.array_equal(module_a.params[name], module_b.params[name])
               for module_a, module_b in ((a.rnn, b.rnn), (a.head, b.head))
               for name in module_a.params)


# ----------------------------------------------------------------------------- files

def test_read_text_concatenates_files_and_normalises_newlines(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    second.write_bytes("caf\u00e9\n".encode("utf-8"))
    assert read_text([first, second]) == "line one\nline two\ncaf\u00e9\n"
    assert read_text(str(second)) == "caf\u00e9\n"


def test_read_text_names_the_bad_file(tmp_path):
    empty, latin1 = tmp_path / "empty.txt", tmp_path / "latin1.txt"
    empty.write_bytes(b"")
    latin1.write_bytes("ok caf\u00e9".encode("latin-1"))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"empty\.txt.* is empty"):
        read_text(empty)
    with pytest.raises(ValueError, match=r"latin1\.txt.* not UTF-8 text: invalid byte 0xe9 "
                                         r"at offset 6"):
        read_text(latin1)
    with pytest.raises(ValueError, match="at least one file"):
        read_text([])


# ----------------------------------------------------------------------------- vocabulary

def test_vocabulary_encodes_and_decodes():
    vocabulary = Vocabulary.from_text("hello, w\u00f6rld")
    assert vocabulary.characters == "".join(sorted(set("hello, w\u00f6rld")))
    for text in ("hello", "w\u00f6rld, hello"):               # ASCII and non-ASCII paths
        ids = vocabulary.encode(text)
        assert ids.dtype == np.int32 and ids.shape == (len(text),)
        assert vocabulary.decode(ids) == text
    assert vocabulary.encode("lo").tolist() == [vocabulary.characters.index("l"),
                                                vocabulary.characters.index("o")]


def test_vocabulary_refuses_unknown_characters():
    vocabulary = Vocabulary.from_text("abc")
    with pytest.raises(ValueError, match=r"prime holds 2 character\(s\) outside the vocabulary "
                                         r"of 3: 'x' \(U\+0078\), '\u00e9' \(U\+00E9\)"):
        vocabulary.encode("ab\u00e9x", "prime")
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary("aba")
    with pytest.raises(ValueError, match="at least one character"):
        Vocabulary.from_text("")


# ----------------------------------------------------------------------------- corpus

def test_builtin_corpus_is_python_documentation_read_at_run_time():
    corpus = builtin_corpus()
    assert len(corpus.text) > 100_000
    assert "pydoc_data.topics" in corpus.source or "docstrings" in corpus.source
    assert corpus == builtin_corpus()
    assert "the" in corpus.text and "def" in corpus.text


def test_builtin_corpus_falls_back_to_docstrings_without_pydoc_data(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)      # import fails
    corpus = builtin_corpus()
    assert "docstrings" in corpus.source and "pydoc_data is not installed" in corpus.source
    assert len(corpus.text) > 20_000 and "Return" in corpus.text


def test_split_text_keeps_the_end_for_validation():
    assert split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")
    assert split_text("abcdefghij", 0.0) == ("abcdefghij", "")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1"):
        split_text("abc", 1)


# ----------------------------------------------------------------------------- batches

def test_token_streams_cut_the_text_into_contiguous_streams():
    ids = np.arange(23)
    streams = TokenStreams(ids, batch_size=3)                 # S = (23 - 1) // 3 = 7
    assert streams.inputs.shape == streams.targets.shape == (7, 3)
    assert streams.inputs[:, 1].tolist() == list(range(7, 14))          # stream 1
    np.testing.assert_array_equal(streams.targets, streams.inputs + 1)  # next character
    assert streams.batch_count(3) == 3
    shapes = [streams.batch(i, 3)[0].shape for i in range(3)]
    assert shapes == [(3, 3), (3, 3), (1, 3)]                           # the last is short
    inputs, targets = streams.batch(1, 3)
    assert inputs[:, 2].tolist() == [17, 18, 19] and targets[:, 2].tolist() == [18, 19, 20]
    with pytest.raises(ValueError, match="too short for batch_size 30"):
        TokenStreams(ids, 30)


# ----------------------------------------------------------------------------- training

def test_fit_lowers_bits_per_character():
    model = CharLM(TEXT, **SMALL)
    before = model.evaluate(TEXT).bits_per_character
    history = model.fit(TEXT, epochs=3, **RUN)
    after = model.evaluate(TEXT)
    assert after.bits_per_character < before - 1.0
    assert after.bits_per_character == pytest.approx(after.loss / math.log(2))
    assert [record["epoch"] for record in history.evaluations] == [1.0, 2.0, 3.0]
    val_bpc = [record["val_bpc"] for record in history.evaluations]
    assert val_bpc[-1] < val_bpc[0]
    assert history.stop_reason == "epochs" and model.history is history
    assert len(history.step_loss) == history.evaluations[-1]["step"]
    assert "bits/char" in describe_evaluation(history.evaluations[-1])


def test_fit_stops_at_the_first_limit_reached():
    model = CharLM(TEXT, **SMALL)
    history = model.fit(TEXT, epochs=5, max_steps=7, **RUN)
    assert history.stop_reason == "max_steps" and len(history.step_loss) == 7
    final = history.evaluations[-1]
    assert final["step"] == 7 and 0 < final["epoch"] < 1
    assert not math.isnan(final["val_loss"])
    history = CharLM(TEXT, **SMALL).fit(TEXT, val_fraction=0, max_steps=2, **RUN)
    assert math.isnan(history.evaluations[-1]["val_loss"])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_seed_reproduces_a_run_bit_for_bit(cell):
    def run(seed):
        model = CharLM(TEXT, cell=cell, hidden_size=12, num_layers=2, dropout=0.25, seed=seed)
        history = model.fit(TEXT, max_steps=12, **RUN)
        return model, history

    (a, history_a), (b, history_b), (c, _) = run(5), run(5), run(6)
    assert same_parameters(a, b) and history_a.step_loss == history_b.step_loss
    assert not same_parameters(a, c)


@pytest.mark.parametrize("cell,dropout,first", [("lstm", 0.3, 9), ("gru", 0.0, 30)])
def test_resuming_a_checkpoint_continues_bit_for_bit(tmp_path, cell, dropout, first):
    """k steps, save, load into a new object, go on to N: as N steps in one go (mid-epoch
    with a carried state and dropout; and across an epoch boundary)."""
    config = {"cell": cell, "hidden_size": 12, "num_layers": 2, "dropout": dropout,
              "seed": 1}
    total = 40                                    # one epoch is 34 steps here
    straight = CharLM(TEXT, **config)
    straight.fit(TEXT, max_steps=total, **RUN)
    interrupted = CharLM(TEXT, **config)
    interrupted.fit(TEXT, max_steps=first, **RUN)
    interrupted.save(tmp_path / "run.npz")
    resumed = CharLM.load(tmp_path / "run.npz")
    history = resumed.fit(TEXT, max_steps=total, resume=True, quiet=True)
    assert same_parameters(straight, resumed)
    assert history.step_loss == straight.history.step_loss
    assert np.array_equal(straight.rnn._rng.random(4), resumed.rnn._rng.random(4))


def test_checkpoint_round_trip(tmp_path):
    model = CharLM(TEXT, cell="gru", hidden_size=16, num_layers=2, dropout=0.1, seed=3)
    model.fit(TEXT, max_steps=5, **RUN)
    model.save(tmp_path / "model.npz")
    loaded = CharLM.load(tmp_path / "model.npz")
    assert loaded.config() == model.config()
    assert same_parameters(model, loaded)
    assert loaded.run_settings == model.run_settings
    assert loaded.history == model.history
    assert loaded.evaluate(TEXT) == model.evaluate(TEXT)
    assert loaded.generate("The ", 40, seed=2) == model.generate("The ", 40, seed=2)
    untrained = CharLM(TEXT, **SMALL)
    untrained.save(tmp_path / "untrained.npz")
    assert CharLM.load(tmp_path / "untrained.npz").history is None


def test_ctrl_c_stops_after_the_step_and_writes_the_checkpoint(tmp_path, monkeypatch):
    """SIGINT during step 4 ends fit after that step, with the checkpoint written; the
    checkpoint resumes to the same weights as a run never interrupted."""
    train_step = CharLM._train_step

    def interrupted_step(self, run, inputs, targets):
        if run.step == 3:
            signal.raise_signal(signal.SIGINT)
        return train_step(self, run, inputs, targets)

    straight = CharLM(TEXT, **SMALL)
    straight.fit(TEXT, max_steps=10, **RUN)
    monkeypatch.setattr(CharLM, "_train_step", interrupted_step)
    model = CharLM(TEXT, **SMALL)
    history = model.fit(TEXT, max_steps=10, checkpoint=tmp_path / "stop.npz", **RUN)
    monkeypatch.undo()
    assert history.stop_reason == "interrupted" and len(history.step_loss) == 4
    resumed = CharLM.load(tmp_path / "stop.npz")
    assert resumed.history.stop_reason == "interrupted"
    resumed.fit(TEXT, resume=True, quiet=True)            # the run's own limit: 10 steps
    assert same_parameters(straight, resumed)


def test_fit_refuses_what_cannot_resume_exactly():
    model = CharLM(TEXT, **SMALL)
    with pytest.raises(ValueError, match="resume=True needs a run"):
        model.fit(TEXT, resume=True)
    model.fit(TEXT, max_steps=2, **RUN)
    with pytest.raises(ValueError, match=r"settings; got seq_len=9 \(the run has 8\)"):
        model.fit(TEXT, resume=True, seq_len=9)
    with pytest.raises(ValueError, match="text differs from the text the run was trained on"):
        model.fit(TEXT[:-1], resume=True)
    assert model.run_settings["seq_len"] == 8 and len(model.history.step_loss) == 2


@pytest.mark.parametrize("arguments,error,message", [
    ({"batch_size": 2000}, ValueError, "too short for batch_size 2000"),
    ({"val_fraction": 0.001}, ValueError, "leaves 1 character"),
    ({"val_fraction": 1.0}, ValueError, r"val_fraction must be in \[0, 1\)"),
    ({"lr": 0}, ValueError, "lr must be a finite number > 0"),
    ({"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({"time_budget": -1.0}, ValueError, "time_budget must be a finite number > 0"),
    ({"seq_len": 2.5}, TypeError, "seq_len must be an integer"),
])
def test_fit_validates_its_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        CharLM(TEXT, **SMALL).fit(TEXT, **arguments)


def test_fit_refuses_characters_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"text holds 1 character\(s\) outside"):
        CharLM("abc ", **SMALL).fit("abc " * 20 + "abd", max_steps=1)   # in validation


@pytest.mark.parametrize("arguments,error,message", [
    ({"cell": "lsmt"}, ValueError, "cell must be one of 'lstm', 'gru', 'rnn'"),
    ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1"),
    ({"dropout": 0.5, "num_layers": 1}, ValueError, "needs num_layers >= 2"),
    ({"dropout": 1.0, "num_layers": 2}, ValueError, r"dropout must be in \[0, 1\)"),
    ({"seed": -1}, ValueError, "seed must be None or a non-negative integer"),
])
def test_the_model_validates_its_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        CharLM(TEXT, **{**SMALL, **arguments})


# ----------------------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def trained():
    with threadpool_limits(1):
        model = CharLM(TEXT, hidden_size=24, num_layers=1, seed=0)
        model.fit(TEXT, epochs=4, **RUN)
    return model


def test_generate_is_seeded_and_respects_length(trained):
    sample = trained.generate("The quick ", 60, seed=7)
    assert len(sample) == 60 and set(sample) <= set(trained.vocabulary.characters)
    assert trained.generate("The quick ", 60, seed=7) == sample
    assert trained.generate("The quick ", 60, seed=8) != sample
    assert trained.generate(length=0) == ""
    assert len(trained.generate(length=5, seed=1)) == 5          # no prime


def test_generate_continues_the_prime(trained):
    """A low temperature, or top_k=1 (greedy, the same for every seed), continues a
    memorised sentence."""
    greedy = trained.generate("The quick brown ", 12, top_k=1, seed=1)
    assert greedy == trained.generate("The quick brown ", 12, top_k=1, seed=2)
    assert greedy != trained.generate("A stitch in ", 12, top_k=1, seed=1)
    assert trained.generate("The quick brown ", 12, temperature=0.01, seed=3) == greedy


def test_generate_with_a_non_finite_input_weight_fails_as_the_one_hot_product_does(trained):
    """The first layer reads characters as columns of W_ih only where W_ih is finite:
    a NaN in a column never read still makes the one-hot products, and so the
    logits, NaN."""
    weight = trained.rnn.params["weight_ih_l0"]
    saved = weight.copy()
    try:
        weight[:, trained.vocabulary.encode("z")[0]] = np.nan
        with pytest.raises(ValueError, match="logits must not hold NaN"):
            trained.generate("The ", 5, seed=1)
    finally:
        weight[...] = saved


def numpy_draw(logits, temperature, top_k, u):
    """The draw of rnnfast._sampling.sample_softmax in NumPy: softmax(logits / T) over
    the top_k largest logits (ties at the k-th value: the smaller ids), first id whose
    running sum exceeds u * total."""
    z = np.asarray(logits, np.float64) / temperature
    if top_k and top_k < len(z):
        kept = np.lexsort((np.arange(len(z)), -np.asarray(logits, np.float64)))[:top_k]
        restricted = np.full_like(z, -np.inf)
        restricted[kept] = z[kept]
        z = restricted
    cumulative = np.cumsum(np.exp(z - z.max()))
    return min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")), len(z) - 1)


def test_generate_is_the_stream_head_and_softmax_draw_step_by_step(trained):
    """generate() as its definition in NumPy: the stream's h, the head's logits, one
    draw from softmax(logits / temperature) per character with the seeded generator's
    next number."""
    def reference(prime, length, temperature, top_k, seed):
        rng = np.random.default_rng(seed)
        stream = trained.rnn.stream(1)
        for character in trained.vocabulary.encode(prime):
            h = stream(np.eye(len(trained.vocabulary), dtype=np.float32)[character][None])
        ids = []
        for _ in range(length):
            ids.append(numpy_draw(trained.head(h)[0], temperature, top_k, rng.random()))
            h = stream(np.eye(len(trained.vocabulary), dtype=np.float32)[ids[-1]][None])
        return trained.vocabulary.decode(ids)

    for temperature, top_k in ((1.0, None), (0.6, None), (1.5, 3), (0.9, 1)):
        assert (trained.generate("The ", 200, temperature, top_k, seed=5)
                == reference("The ", 200, temperature, top_k, seed=5))


# (V, temperature, top_k); logits with ties come from few integers
SAMPLING_CASES = [(37, 1.0, 0), (37, 0.5, 5), (37, 2.0, 36), (37, 1.0, 1), (5, 1.0, 0),
                  (1, 1.0, 1), (200, 0.8, 17)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("V,temperature,top_k", SAMPLING_CASES)
def test_sample_softmax_draws_each_id_with_its_probability(V, temperature, top_k, dtype):
    """Over a grid of N uniform numbers each id is drawn N p_i times (+-1), p the
    softmax of logits / temperature over the top_k largest; the draw is NumPy's at
    every point of the grid."""
    from rnnfast import _sampling
    rng = np.random.default_rng(V + top_k)
    for logits in (rng.standard_normal(V) * 3, rng.integers(-2, 3, V).astype(float)):
        logits = logits.astype(dtype)
        grid = (np.arange(4000) + 0.5) / 4000
        drawn = np.array([_sampling.sample_softmax(logits, temperature, top_k, u)
                          for u in grid])
        expected = np.array([numpy_draw(logits, temperature, top_k, u) for u in grid])
        np.testing.assert_array_equal(drawn, expected)
        k = top_k or V
        kept = np.lexsort((np.arange(V), -logits.astype(np.float64)))[:k]
        weights = np.zeros(V)
        weights[kept] = np.exp(logits[kept] / temperature - (logits[kept] / temperature).max())
        counts = np.bincount(drawn, minlength=V)
        assert np.all(np.abs(counts - len(grid) * weights / weights.sum()) <= 1.0 + 1e-9)
        assert set(drawn) <= set(kept)


def test_sample_softmax_edges():
    from rnnfast import _sampling
    draw = _sampling.sample_softmax
    ties = np.array([1.0, 2.0, 2.0, 2.0, 0.0])
    assert {draw(ties, 1.0, 2, u) for u in np.linspace(0, 0.999, 50)} == {1, 2}
    infinite = np.array([0.0, np.inf, 3.0, np.inf])        # the softmax's limit
    assert [draw(infinite, 1.0, 0, u) for u in (0.0, 0.49, 0.5, 0.99)] == [1, 1, 3, 3]
    assert draw(np.array([0.0, 0.0, -np.inf]), 1.0, 0, 1.0) == 1   # never a weight of 0
    assert draw(np.array([-np.inf, 5.0]), 1.0, 0, 0.0) == 1
    with pytest.raises(ValueError, match="logits must not hold NaN, got NaN at 2"):
        draw(np.array([0.0, 1.0, np.nan]), 1.0, 0, 0.5)
    with pytest.raises(ValueError, match="every logit kept is -inf"):
        draw(np.full(3, -np.inf), 1.0, 0, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        draw(np.zeros(0), 1.0, 0, 0.5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_head_sampler_draws_from_the_logits_of_the_bound_state(dtype, bias):
    """HeadSampler.draw(u): the head's logits h W^T + b of the h in the bound array at
    the call, then sample_softmax's draw from them."""
    from rnnfast import _sampling
    rng = np.random.default_rng(3)
    V, H = 37, 24
    weight = rng.standard_normal((V, H)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    hidden = np.empty((1, H), dtype)
    for temperature, top_k in ((1.0, 0), (0.7, 5), (1.3, V), (1.0, 1)):
        sampler = _sampling.HeadSampler(weight, b, hidden, temperature, top_k)
        for u in np.linspace(0, 0.999, 9):
            hidden[...] = rng.standard_normal((1, H))       # the stream writes h here
            drawn = sampler.draw(u)
            expected_logits = hidden[0] @ weight.T + (0 if b is None else b)
            assert_close(sampler.logits, expected_logits, dtype, "logits")
            assert drawn == _sampling.sample_softmax(sampler.logits, temperature, top_k, u)
    assert not sampler.logits.flags.writeable


def test_head_sampler_refuses_what_it_cannot_read():
    from rnnfast import _sampling
    weight, bias, hidden = np.zeros((5, 3), np.float32), np.zeros(5, np.float32), np.zeros(
        (1, 3), np.float32)
    sampler = _sampling.HeadSampler
    for arguments, error, message in [
        ((weight.astype(np.float16), bias, hidden, 1.0, 0), TypeError,
         "weight must be a float32 or float64 ndarray, got float16"),
        (([[1.0]], None, hidden, 1.0, 0), TypeError, "weight must be .* got list"),
        ((np.zeros((0, 3), np.float32), None, hidden, 1.0, 0), ValueError,
         r"aligned, C-contiguous \(V, H\) array with V >= 1, got shape \(0, 3\)"),
        ((np.zeros((3, 5), np.float32).T, None, hidden, 1.0, 0), ValueError,
         r"weight must be an aligned, C-contiguous"),
        ((weight, bias.astype(np.float64), hidden, 1.0, 0), TypeError,
         "bias must be an ndarray of the weight's dtype float32, got float64"),
        ((weight, bias[:4], hidden, 1.0, 0), ValueError,
         r"bias must be an aligned, C-contiguous array of shape \(5,\), got shape \(4,\)"),
        ((weight, bias, np.zeros(3, np.float32), 1.0, 0), ValueError,
         r"hidden must be an aligned, C-contiguous array of shape \(1, 3\), got shape \(3,\)"),
        ((weight, bias, np.zeros((1, 6), np.float32)[:, ::2], 1.0, 0), ValueError,
         "hidden must be an aligned, C-contiguous"),
        ((weight, bias, np.zeros(13, np.uint8)[1:].view(np.float32).reshape(1, 3), 1.0, 0),
         ValueError, "hidden must be an aligned"),
        ((weight, bias, [[0.0, 0.0, 0.0]], 1.0, 0), TypeError, "hidden must be an ndarray"),
        ((weight, bias, hidden, 0.0, 0), ValueError, "temperature must be > 0, got 0.0"),
        ((weight, bias, hidden, np.nan, 0), ValueError, "temperature must be > 0, got nan"),
        ((weight, bias, hidden, 1.0, 6), ValueError, r"top_k must be in \[0, 5\]"),
        ((weight, bias, hidden, 1.0, -1), ValueError, r"top_k must be in \[0, 5\]"),
    ]:
        with pytest.raises(error, match=message):
            sampler(*arguments)
    with pytest.raises(ValueError, match="not initialised"):
        sampler.__new__(sampler).draw(0.5)
    nan_weight = weight.copy()
    nan_weight[2, 1] = np.nan
    with pytest.raises(ValueError, match="logits must not hold NaN, got NaN at 2"):
        sampler(nan_weight, bias, hidden, 1.0, 0).draw(0.5)


@pytest.mark.parametrize("arguments,error,message", [
    ({"temperature": 0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
    ({"temperature": "hot"}, TypeError, "temperature must be a number"),
    ({"top_k": 0}, ValueError, "top_k must be >= 1, got 0"),
    ({"length": -1}, ValueError, "length must be an integer >= 0"),
    ({"prime": "The \u00e9"}, ValueError, r"prime holds 1 character\(s\) outside"),
])
def test_generate_validates_its_arguments(trained, arguments, error, message):
    with pytest.raises(error, match=message):
        trained.generate(**arguments)


# ----------------------------------------------------------------------------- checkpoints

def test_load_refuses_other_checkpoints(tmp_path):
    rnnfast.save(tmp_path / "lstm.npz", rnnfast.LSTM(3, 4))
    with pytest.raises(rnnfast.CheckpointError, match=r"lstm\.npz.*not a CharLM checkpoint"):
        CharLM.load(tmp_path / "lstm.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(rnnfast.CheckpointError, match=r"junk\.npz"):
        CharLM.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        CharLM.load(tmp_path / "missing.npz")

