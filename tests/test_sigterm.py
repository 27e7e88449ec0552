"""SIGTERM in any phase of a CLI run: exit 130, no output, no temporary file, no traceback.

Each case runs the real CLI in a child process. A phase is made to last (a patched function
sleeps) and a timer sends the child SIGTERM while it is in that phase, as ``kill`` would. The
'swallowed' case is a library that catches the KeyboardInterrupt the signal raises and goes on
writing: the run must still end with 130 and publish nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

DRIVER = textwrap.dedent(r"""
    import os, signal, sys, threading, time
    phase = sys.argv[1]

    def kill_soon(delay=0.5):
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM)).start()

    def stall():
        kill_soon()
        time.sleep(60)  # the SIGTERM handler raises here
        raise SystemExit("the signal never arrived")

    import anndata
    import histosge.encode
    import histosge.read
    import histosge.tasks

    if phase == "reading":
        histosge.read.read_section = lambda *a, **k: stall()
    elif phase == "encoding":
        histosge.encode.extract = lambda *a, **k: stall()
    elif phase == "training":
        import histosge.methods.histosge

        histosge.methods.histosge.fit_network = lambda *a, **k: stall()  # the network's training loop
    elif phase in ("writing", "swallowed"):
        original = anndata.AnnData.write_h5ad

        def write(self, path, *a, **k):
            original(self, path, *a, **k)  # half of the work is on disk under the temporary name
            try:
                stall()
            except KeyboardInterrupt:
                if phase == "writing":
                    raise
                # a library that catches the interrupt and carries on

        anndata.AnnData.write_h5ad = write
    sys.argv = ["histosge", *sys.argv[2:]]
    from histosge.cli import main
    main()
""")


@pytest.mark.parametrize("phase", ["reading", "encoding", "training", "writing", "swallowed"])
def test_sigterm_in_each_phase(make_spaceranger, tmp_path, phase):
    section = make_spaceranger(n_rows=10, n_cols=12)
    out = tmp_path / "out.h5ad"
    cmd = [sys.executable, "-c", DRIVER, phase, "recover", str(section), "-o", str(out), "--epochs", "2",
           "--quiet", "--cache-dir", str(tmp_path / "cache")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 130, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert "the signal never arrived" not in res.stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".*.part")) and not list(tmp_path.glob("*.part"))


def test_sigterm_after_the_output_is_published_keeps_it(make_spaceranger, tmp_path):
    """The rename is the commit point: a signal arriving after it keeps the complete output."""
    driver = textwrap.dedent(r"""
        import os, signal, sys
        import histosge._atomic as atomic
        original = atomic._publish

        def publish(tmp, path):
            original(tmp, path)
            os.kill(os.getpid(), signal.SIGTERM)

        atomic._publish = publish
        sys.argv = ["histosge", *sys.argv[1:]]
        from histosge.cli import main
        main()
    """)
    section = make_spaceranger(n_rows=10, n_cols=12)
    out = tmp_path / "out.h5ad"
    res = subprocess.run([sys.executable, "-c", driver, "recover", str(section), "-o", str(out), "--epochs", "2",
                          "--quiet", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 130, res.stderr[-2000:]
    assert "completely written" in res.stderr and "Traceback" not in res.stderr
    import anndata as ad

    assert ad.read_h5ad(out).n_obs > 0
