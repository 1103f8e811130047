"""kill -9 of a process rendering a synthetic slide, then resuming without recomputing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide

SETTINGS = SamplerSettings(steps=8)
W, H, CHUNK = 256, 192, 64

RENDER = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    slide = SyntheticSlide.open(sys.argv[1], GRFModel(boundary="periodic"))
    def report(done, total):
        print(done, flush=True)
    slide.render_all(progress=report)
    """
)


def test_killed_render_leaves_no_torn_chunk_and_resumes_without_recomputing(tmp_path):
    path = tmp_path / "s.zarr"
    SyntheticSlide.create(
        path, GRFModel(boundary="periodic"), W, H, SETTINGS.replace(seed=3), chunk_px=CHUNK
    )
    script = tmp_path / "render.py"
    script.write_text(RENDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    )
    reported = 0
    for line in proc.stdout:
        reported = int(line)
        if reported >= 3:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-way through the next chunk
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    total = (H // CHUNK) * (W // CHUNK)
    resumed = SyntheticSlide.open(path, GRFModel(boundary="periodic"))
    done_before = resumed.store.completion(0).count()
    assert reported <= done_before < total
    # Every chunk marked done is complete and readable.
    for cy, cx in zip(*np.nonzero(resumed.store.completion(0).grid), strict=True):
        assert resumed.store.read_chunk(0, int(cy), int(cx)).shape == (CHUNK, CHUNK, 3)

    resumed.render_all()
    assert resumed.compute_count == total - done_before

    reference = SyntheticSlide.create(
        tmp_path / "ref.zarr",
        GRFModel(boundary="periodic"),
        W,
        H,
        SETTINGS.replace(seed=3),
        chunk_px=CHUNK,
    )
    reference.render_all()
    for k in range(resumed.store.n_levels):
        assert np.array_equal(resumed.levels[k].compute(), reference.levels[k].compute())
