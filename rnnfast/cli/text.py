"""Character-level text subcommands: ``demo``, ``train-text`` and ``generate``.

``demo`` trains a small LSTM on the Python documentation that ships with Python and
shows what it writes; ``train-text`` trains a :class:`rnnfast.models.CharLM` on text
files, with checkpoints that resume exactly; ``generate`` samples from a checkpoint.
"""

import math
import shlex
import sys

from ..models.charlm import CELLS, RUN_DEFAULTS, CharLM, describe_evaluation
from ..plot import plot_losses, plot_path_or_none
from ..text import builtin_corpus, read_text
from .._argtypes import fraction, non_negative_float, non_negative_int, positive_float, positive_int
from ._errors import CLIError

# The demo's model and training: sized so that a minute on two cores turns the Python
# documentation into English-looking text (words, punctuation, spacing).
# Measured on such a machine: 2.00-2.03 bits per character on the validation text after
# 60 s (57,000 characters/s, 8.8-9.0 epochs; OMP_NUM_THREADS=1: 32,000/s, 5 epochs, 2.05).
# One layer of 192 units without dropout ran 130,000 characters/s but learned the
# training text by heart after 7 epochs: 2.10 on the validation text then, 2.24 at 60 s.
DEMO_MODEL = {"cell": "lstm", "hidden_size": 192, "num_layers": 2, "dropout": 0.2}
DEMO_RUN = {"seq_len": 50, "batch_size": 32, "lr": 8e-3, "clip": 5.0, "val_fraction": 0.1}
DEMO_TEMPERATURES = (0.5, 0.8, 1.0)
DEMO_PRIME = "The "
DEMO_SAMPLE_LENGTH = 300

# train-text's model options when it starts a new model; with --resume they come from
# the checkpoint.
MODEL_DEFAULTS = {"cell": "lstm", "hidden": 256, "layers": 2, "dropout": 0.0, "seed": 0}
# option -> CharLM.config() key
MODEL_OPTIONS = {"cell": "cell", "hidden": "hidden_size", "layers": "num_layers",
                 "dropout": "dropout", "seed": "seed"}
# option -> CharLM.fit setting
RUN_OPTIONS = {"seq_len": "seq_len", "batch_size": "batch_size", "lr": "lr", "clip": "clip",
               "val_fraction": "val_fraction"}
INTERRUPTED_STATUS = 130


def register(subparsers):
    _add_demo(subparsers)
    _add_train_text(subparsers)
    _add_generate(subparsers)


# ----------------------------------------------------------------------------- parsers

def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo", help="train a character-level LSTM on Python's documentation for a minute "
                     "and show what it writes",
        description="Train a character-level LSTM on the Python documentation topics that "
                    "ship with Python (no download), then print its bits per character, "
                    "samples at a few temperatures and the command that generates more.",
        epilog="Ctrl-C ends the training early; the samples follow and the exit status "
               "is 0.")
    parser.add_argument("--time", type=positive_float, default=60.0, metavar="SECONDS",
                        help="training time (default: %(default)g)")
    parser.add_argument("--output", default="rnnfast-demo.npz", metavar="PATH",
                        help="where to write the checkpoint (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the weights, the training and the samples "
                             "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no per-epoch lines")
    parser.set_defaults(handler=run_demo)


def _add_train_text(subparsers):
    parser = subparsers.add_parser(
        "train-text", help="train a character-level language model on text files",
        description="Train a character-level language model (one-hot characters, "
                    "recurrent layers, softmax) on UTF-8 text files, concatenated. The "
                    "end of the text (--val-fraction) is kept for validation. Training "
                    "and validation loss and bits per character are printed at the end "
                    "of each epoch and at the end. The checkpoint (--output) is written "
                    "every --save-every seconds and at the end; --resume continues a run "
                    "bit for bit where it stopped.",
        epilog="Training stops at --epochs, --time or --steps, whichever comes first "
               "(counting the run's earlier parts when resuming); without any of them "
               "it trains one epoch, or a resumed run keeps its own limits. Ctrl-C stops "
               "after the current step, writes the checkpoint, says where it is and "
               "exits with status 130.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files")
    model = parser.add_argument_group(
        "model (a new model; with --resume the checkpoint's, and other values are refused)")
    model.add_argument("--cell", choices=sorted(CELLS),
                       help=f"recurrent cell (default: {MODEL_DEFAULTS['cell']})")
    model.add_argument("--hidden", type=positive_int, metavar="N",
                       help=f"hidden units per layer (default: {MODEL_DEFAULTS['hidden']})")
    model.add_argument("--layers", type=positive_int, metavar="N",
                       help=f"recurrent layers (default: {MODEL_DEFAULTS['layers']})")
    model.add_argument("--dropout", type=fraction, metavar="P",
                       help=f"dropout between recurrent layers, in [0, 1) "
                            f"(default: {MODEL_DEFAULTS['dropout']:g})")
    model.add_argument("--seed", type=non_negative_int,
                       help=f"seed of the weights and the dropout masks "
                            f"(default: {MODEL_DEFAULTS['seed']})")
    run = parser.add_argument_group(
        "training (a new run; with --resume the run's own, and other values are refused)")
    run.add_argument("--seq-len", type=positive_int, metavar="N",
                     help=f"steps per batch, backpropagated through "
                          f"(default: {RUN_DEFAULTS['seq_len']})")
    run.add_argument("--batch-size", type=positive_int, metavar="N",
                     help=f"parallel streams of the text "
                          f"(default: {RUN_DEFAULTS['batch_size']})")
    run.add_argument("--lr", type=positive_float,
                     help=f"Adam's learning rate (default: {RUN_DEFAULTS['lr']:g})")
    run.add_argument("--clip", type=non_negative_float, metavar="NORM",
                     help=f"maximal gradient norm, 0 for none "
                          f"(default: {RUN_DEFAULTS['clip']:g})")
    run.add_argument("--val-fraction", type=fraction, metavar="F",
                     help=f"share of the text kept for validation, in [0, 1) "
                          f"(default: {RUN_DEFAULTS['val_fraction']:g})")
    limits = parser.add_argument_group("how long")
    limits.add_argument("--epochs", type=positive_int, metavar="N", help="epochs in all")
    limits.add_argument("--time", type=positive_float, metavar="SECONDS",
                        help="wall-clock seconds of training in all")
    limits.add_argument("--steps", type=positive_int, metavar="N", help="steps in all")
    files = parser.add_argument_group("files and output")
    files.add_argument("--output", metavar="PATH",
                       help="checkpoint to write (default: the --resume checkpoint, else "
                            "charlm.npz)")
    files.add_argument("--resume", metavar="PATH",
                       help="continue the training run of this checkpoint, on the same files")
    files.add_argument("--save-every", type=positive_float, default=60.0, metavar="SECONDS",
                       help="seconds between checkpoints (default: %(default)g)")
    files.add_argument("--plot", metavar="PNG",
                       help="draw the loss curves to this PNG (needs matplotlib)")
    files.add_argument("--quiet", action="store_true",
                       help="no progress bar and no per-epoch lines")
    parser.set_defaults(handler=run_train_text)


def _add_generate(subparsers):
    parser = subparsers.add_parser(
        "generate", help="generate text from a trained character-level model",
        description="Print the prime followed by --length characters sampled from a "
                    "checkpoint of 'rnnfast demo' or 'rnnfast train-text'.")
    parser.add_argument("checkpoint", metavar="CKPT", help="the model's checkpoint (.npz)")
    parser.add_argument("--prime", default="",
                        help="text to start from, in the model's characters (default: none)")
    parser.add_argument("--length", type=non_negative_int, default=500, metavar="N",
                        help="characters to generate (default: %(default)s)")
    parser.add_argument("--temperature", type=positive_float, default=0.8, metavar="T",
                        help="> 0; lower is safer, higher is wilder (default: %(default)g)")
    parser.add_argument("--top-k", type=positive_int, metavar="K",
                        help="sample among the K most likely characters only")
    parser.add_argument("--seed", type=non_negative_int,
                        help="seed of the sample (default: a different sample each time)")
    parser.set_defaults(handler=run_generate)


# ----------------------------------------------------------------------------- demo

def run_demo(args):
    corpus = builtin_corpus()
    model = CharLM(corpus.text, seed=args.seed, **DEMO_MODEL)
    print(f"Training a character-level LSTM ({DEMO_MODEL['num_layers']} layers of "
          f"{DEMO_MODEL['hidden_size']} units, dropout {DEMO_MODEL['dropout']:g}) for "
          f"{args.time:g} s on {corpus.source}: {len(corpus.text):,} characters. "
          f"Ctrl-C ends the training early.", flush=True)
    history = model.fit(corpus.text, time_budget=args.time, checkpoint=args.output,
                        quiet=args.quiet, **DEMO_RUN)
    final = history.evaluations[-1]
    print(f"\nAfter {final['elapsed']:.0f} s ({final['step']} steps, {final['epoch']:.2f} "
          f"epochs): {final['train_bpc']:.3f} bits per character on the training text "
          f"(its latest steps), {final['val_bpc']:.3f} on the validation text.")
    for temperature in DEMO_TEMPERATURES:
        sample = model.generate(DEMO_PRIME, DEMO_SAMPLE_LENGTH, temperature=temperature,
                                seed=args.seed)
        print(f"\n--- sample at temperature {temperature:g} ---\n{DEMO_PRIME}{sample}")
    print(f"\nCheckpoint: {args.output}\nGenerate more: rnnfast generate "
          f"{shlex.quote(args.output)} --prime {shlex.quote(DEMO_PRIME)} --length 1000")
    return 0


# ----------------------------------------------------------------------------- train-text

def run_train_text(args):
    text = read_text(args.files)
    plot = plot_path_or_none(args.plot, "rnnfast train-text")
    if args.resume is not None:
        model = _resumed_model(args)
        output = args.resume if args.output is None else args.output
    else:
        model = _new_model(args, text)
        output = "charlm.npz" if args.output is None else args.output
    if not args.quiet:
        _describe_start(args, model, text)
    history = model.fit(text, resume=args.resume is not None, epochs=args.epochs,
                        time_budget=args.time, max_steps=args.steps, checkpoint=output,
                        checkpoint_every=args.save_every, quiet=args.quiet,
                        **{setting: getattr(args, option)
                           for option, setting in RUN_OPTIONS.items()})
    if history.evaluations:
        print(f"final: {describe_evaluation(history.evaluations[-1])}")
    if plot is not None:
        _plot_history(plot, history)
    if history.stop_reason == "interrupted":
        print(f"rnnfast train-text: interrupted; checkpoint written to {output} (continue "
              f"with --resume {shlex.quote(output)})", file=sys.stderr)
        return INTERRUPTED_STATUS
    print(f"checkpoint written to {output}")
    return 0


def _new_model(args, text):
    options = {option: MODEL_DEFAULTS[option] if getattr(args, option) is None
               else getattr(args, option) for option in MODEL_OPTIONS}
    if options["dropout"] > 0 and options["layers"] == 1:
        raise CLIError(f"--dropout {options['dropout']:g} needs --layers 2 or more: "
                       f"dropout applies between recurrent layers")
    return CharLM(text, **{MODEL_OPTIONS[option]: value for option, value in options.items()})


def _resumed_model(args):
    """The checkpoint's model, after refusing options that contradict it."""
    model = CharLM.load(args.resume)
    settings = model.run_settings
    if settings is None:
        raise CLIError(f"--resume: {args.resume} holds a model but no training run to "
                       f"continue")
    config = model.config()
    conflicts = [_conflict(option, getattr(args, option), config[key])
                 for option, key in MODEL_OPTIONS.items()]
    conflicts += [_conflict(option, getattr(args, option), settings[key])
                  for option, key in RUN_OPTIONS.items()]
    conflicts = [conflict for conflict in conflicts if conflict]
    if conflicts:
        raise CLIError(f"--resume continues the checkpoint's run with its own model and "
                       f"training options: {'; '.join(conflicts)} (leave them out)")
    return model


def _conflict(option, given, stored):
    if given is None or given == stored:
        return ""
    return f"--{option.replace('_', '-')} {given} differs from its {stored}"


def _describe_start(args, model, text):
    config = model.config()
    action = (f"Resuming {args.resume} at step {len(model.history.step_loss)}:"
              if args.resume is not None else "Training")
    print(f"{action} a {config['num_layers']}-layer {config['cell'].upper()} with "
          f"{config['hidden_size']} units on {len(args.files)} file(s), {len(text):,} "
          f"characters, {len(model.vocabulary)} distinct.", flush=True)


def _plot_history(path, history):
    ln2 = math.log(2.0)
    steps = range(1, len(history.step_loss) + 1)
    curves = {"train (each step)": (steps, [loss / ln2 for loss in history.step_loss])}
    evaluations = history.evaluations
    validated = [record for record in evaluations if not math.isnan(record["val_bpc"])]
    if validated:
        curves["validation"] = ([record["step"] for record in validated],
                                [record["val_bpc"] for record in validated])
    plot_losses(path, curves, xlabel="step", ylabel="bits per character",
                title="character-level language model")
    print(f"loss curves drawn to {path}")


# ----------------------------------------------------------------------------- generate

def run_generate(args):
    model = CharLM.load(args.checkpoint)
    text = model.generate(args.prime, args.length, temperature=args.temperature,
                          top_k=args.top_k, seed=args.seed)
    sys.stdout.write(f"{args.prime}{text}\n")
    return 0
