"""The `secumail` command as an operator pipes it: `secumail … | head` must not end in a
traceback when the reader goes away."""

from __future__ import annotations

import subprocess

from tests.e2e.world import SECUMAIL


def test_a_closed_pipe_ends_the_command_quietly(make_gateway) -> None:
    gw = make_gateway()  # initialised, not started: the CLI works on the data directory
    for _ in range(40):  # enough audit entries for more output than a pipe holds
        gw.cli("account", "create", f"Org {_:02d} " + "x" * 200)
    proc = subprocess.Popen(
        [SECUMAIL, "--config", str(gw.config), "audit", "list", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # as `head -c 10` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
