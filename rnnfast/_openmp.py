"""The OpenMP runtime's wait policy, chosen before the kernels load it.

By default GNU OpenMP threads spin for a while at the end of every parallel region.
The kernels open few regions (a batch block runs its whole time loop inside one), so
spinning saves almost nothing there, and on a busy machine it costs a great deal: a
spinning thread takes the core its partner needs, and a short call can slow down
thirty-fold. So rnnfast loads its OpenMP runtime with ``OMP_WAIT_POLICY=PASSIVE``
(threads sleep when they wait) unless the user chose a policy (``OMP_WAIT_POLICY``
or ``GOMP_SPINCOUNT`` set). The setting is read once, when the runtime loads, and the
environment is restored right after, so child processes do not see it. A library that
loads a runtime of the same name later in the process (PyTorch ships its own
``libgomp.so.1``) shares the one already loaded, policy included: where PyTorch's
multi-threaded speed matters in the same process, import it before rnnfast or set
``GOMP_SPINCOUNT=300000`` (GNU OpenMP's default: threads spin a few milliseconds;
``OMP_WAIT_POLICY=ACTIVE`` spins for minutes after every region, taking a core from
any other thread pool in the process).
"""

import contextlib
import os

WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@contextlib.contextmanager
def passive_wait_while_loading():
    """Within the block, ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is set already."""
    if any(name in os.environ for name in WAIT_POLICY_VARIABLES):
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        del os.environ["OMP_WAIT_POLICY"]
