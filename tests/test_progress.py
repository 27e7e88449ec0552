"""Progress: a tqdm bar on a terminal, a few plain lines in a log (never a redrawn bar)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

from histosge._progress import LogProgress, progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_writes_a_line_per_interval_and_a_final_one():
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress(total=1000, desc="encode he-stats", unit="spot", file=out, interval=10.0, clock=clock)
    for _ in range(1000):  # 1000 updates over 100 s
        clock.t += 0.1
        bar.update(1)
    bar.set_postfix(val="0.123")
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 11 and "\r" not in out.getvalue()
    assert lines[0].startswith("encode he-stats: ") and "spots (" in lines[0] and "left" in lines[0]
    assert lines[-1] == "encode he-stats: 1000 spots in 1 min 40 s (10 spot/s), val=0.123"


def test_log_progress_wraps_an_iterable_and_ends_on_break():
    out, clock = io.StringIO(), _Clock()
    seen = []
    for epoch in LogProgress(range(300), desc="training", unit="epoch", file=out, interval=5.0, clock=clock):
        clock.t += 1.0
        seen.append(epoch)
        if epoch == 18:
            break  # early stopping: the final line still comes
    assert len(seen) == 19
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("training: 19 epochs in 19 s") and len(lines) <= 5


def test_progress_picks_a_bar_only_for_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm.auto import tqdm

    assert isinstance(progress(total=3, file=Terminal()), tqdm)
    assert isinstance(progress(total=3, file=io.StringIO()), LogProgress)
    assert isinstance(progress(total=3, file=io.StringIO(), disable=True), tqdm)  # silent either way


def test_extraction_in_a_log_writes_few_lines(tmp_path):
    """A run whose stderr is a pipe (a log): hundreds of batches, a handful of lines."""
    script = tmp_path / "extract.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from histosge import encode
        from histosge.read.image import ImageSource
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (600, 600, 3), dtype=np.uint8)
        xy = rng.uniform(20, 580, (800, 2))
        feats = encode.extract(ImageSource(img), xy, 1.0, 10.0, encoder="he-stats", batch_size=4, cache_dir=False)
        print(feats.shape)
    """))
    env = {**os.environ, "HISTOSGE_PROGRESS_INTERVAL": "1"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(800, 93)"
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("encode he-stats")]
    assert "\r" not in res.stderr
    assert 1 <= len(lines) <= 20, res.stderr  # 200 batches; at most one line a second plus the last
    assert lines[-1].startswith("encode he-stats: 800 spots in ")


def test_rates_below_one_per_second_are_shown_per_item():
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress(total=10, desc="cohort", unit="slide", file=out, interval=5.0, clock=clock)
    for _ in range(3):
        clock.t += 4.1
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "4.1 s/slide" in text and "0 slide/s" not in text and "0.24 slide/s" not in text


def test_training_time_left_knows_about_early_stopping():
    from histosge._progress import early_stop

    out, clock = io.StringIO(), _Clock()
    bar = LogProgress(total=300, desc="training", unit="epoch", file=out, interval=0.0, clock=clock)
    clock.t += 16.6
    bar.update(1)  # no early stop in sight yet: all 299 epochs left
    early_stop(bar, 4)  # stops after 4 more epochs unless the validation loss improves
    clock.t += 16.6
    bar.update(1)
    first, second = out.getvalue().splitlines()[:2]
    assert "~1 h 22 min left" in first
    assert "~66 s left if it stops early" in second and "~1 h 22 min at most" in second


def test_training_loop_reports_when_early_stopping_will_end_it():
    from histosge.model.train import TrainConfig, _stop_within

    cfg = TrainConfig(epochs=300, patience=20, give_up=5)
    assert _stop_within(cfg, since_best=4, epochs_done=4, improved=False) == 1  # give_up at epoch 5
    assert _stop_within(cfg, since_best=3, epochs_done=40, improved=True) == 17
