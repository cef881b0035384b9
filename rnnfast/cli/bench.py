"""``rnnfast bench``: the kernel benchmark table (``rnnfast.benchmark``), short by
default."""

from .. import benchmark


def register(subparsers):
    parser = subparsers.add_parser(
        "bench", help="time the kernels against PyTorch, JAX and ONNX Runtime",
        description=benchmark.DESCRIPTION + " A short run by default; --full for the "
                                            "complete table.")
    benchmark.add_arguments(parser, short_by_default=True)
    parser.set_defaults(handler=lambda args: benchmark.run_from_arguments(args, rerun=True))
