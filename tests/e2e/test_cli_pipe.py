"""The `secumail` command as an operator pipes it: `secumail … | head` must not end in a
traceback when the reader goes away."""

from __future__ import annotations

import fcntl
import os
import subprocess

from tests.e2e.world import SECUMAIL


def test_a_closed_pipe_ends_the_command_quietly(make_gateway) -> None:
    gw = make_gateway()  # initialised, not started: the CLI works on the data directory
    for _ in range(25):  # audit entries: more output than the one-page pipe below holds
        gw.cli("account", "create", f"Org {_:02d} " + "x" * 200)
    read_end, write_end = os.pipe()
    # A one-page pipe: the command cannot finish writing before the reader goes away.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [SECUMAIL, "--config", str(gw.config), "audit", "list", "--json"],
        stdout=write_end, stderr=subprocess.PIPE,
    )
    os.close(write_end)
    assert proc.stderr is not None
    os.read(read_end, 10)
    os.close(read_end)  # as `head -c 10` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
