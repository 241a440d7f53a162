"""torchrun for `imgen train --nproc N`, and workers that die with it (Linux); imports no torch until it runs.

torch elastic starts each worker in a session of its own (start_new_session), so a kill -9 of the job's process
group reaches the agent but misses the workers, and a worker left behind waits in a collective for its dead peers
forever. A worker therefore asks the kernel to SIGKILL it when the agent, its parent, dies (prctl
PR_SET_PDEATHSIG). The agent can die before a worker gets to ask; `python -m imgen.torchrun` (what --nproc
launches) tells the workers its pid, so a worker whose parent is no longer that pid kills itself at once.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

AGENT_PID = "IMGEN_TORCHRUN_AGENT_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_agent() -> None:
    """In a torchrun worker on Linux: be SIGKILLed when the agent dies, or now if it already has. No-op elsewhere."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    agent = os.environ.get(AGENT_PID)
    parent = int(agent) if agent else os.getppid()  # a plain torchrun: the parent as we find it now
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the agent died before the call: nothing would signal us
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":  # python -m imgen.torchrun TORCHRUN_ARGS: torch.distributed.run, its pid in the env
    os.environ[AGENT_PID] = str(os.getpid())
    from torch.distributed.run import main

    main()
