"""Leaving a ``torchrun`` job cleanly.

Authors
 * speechbrain-unipet contributors 2026
"""

import logging
import os
import sys

import torch


def finish_distributed():
    """Ends a distributed process: every process waits for the others,
    closes the process group and exits with status 0 at once.

    Why not a plain return: with torch 2.11 and gloo, a process whose work
    was done and whose group was destroyed still aborted now and then while
    the interpreter shut down ("terminate called without an active
    exception", exit -6; one run in ten on a loaded 2-core machine, measured
    with debug prints after ``destroy_process_group``): a C++ thread of the
    launcher's store outlives Python, and torchrun then reports the finished
    run as failed. Logs and streams are flushed first; nothing else runs
    after this. Outside ``torchrun`` it does nothing.

    Example
    -------
    >>> finish_distributed()  # not distributed: returns
    """
    if not (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    ):
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
