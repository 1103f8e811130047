"""The "synthetic" outline labels layer in a real viewer: a region synthetic everywhere gets an
outline at its border, the outline leaves the selection alone, and napari builds no
painting-tool visuals for it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn._napari import _layers


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(900, 700)
    return v


def _region(viewer):
    """A grey 40 x 60 px region at 0.5 um/px, its corner at (10, 20) um."""
    return viewer.add_image(
        np.full((40, 60, 3), 128, np.uint8), rgb=True, scale=(0.5, 0.5), translate=(10, 20)
    )


def _magenta_px(viewer) -> int:
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    return int(((shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] > 200)).sum())


def test_a_region_synthetic_everywhere_shows_its_outline(viewer, qtbot):
    region = _region(viewer)
    viewer.reset_view()
    assert _magenta_px(viewer) == 0
    labels = _layers.show_synthetic_mask(viewer, region, None)
    # ones over the region in a frame of zeros (napari draws no contour at an array's border),
    # placed one pixel up and left so that the ones cover the region exactly
    assert labels.data.shape == (42, 62)
    assert labels.data[1:-1, 1:-1].all()
    frame = np.ones((42, 62), bool)
    frame[1:-1, 1:-1] = False
    assert not labels.data[frame].any()
    np.testing.assert_allclose(labels.translate, (9.5, 19.5))
    np.testing.assert_allclose(labels.scale, region.scale)
    assert viewer.layers.index(labels) == viewer.layers.index(region) + 1
    # the selection stays on the region (private napari name checked here: fails loudly)
    assert viewer.layers.selection.active is region and labels not in viewer.layers.selection
    assert viewer.layers._activate_on_insert  # napari's default is back for later layers
    qtbot.waitUntil(lambda: _magenta_px(viewer) > 100, timeout=5000)


def test_the_outline_gets_no_painting_tool_visuals_until_made_editable(viewer):
    canvas = viewer.window._qt_viewer.canvas
    labels = _layers.show_synthetic_mask(viewer, _region(viewer), None)
    # private napari names, checked here so that a napari that renames them fails loudly
    assert set(_layers.PAINT_OVERLAYS) <= set(labels._overlays)
    paint = [labels._overlays[name] for name in _layers.PAINT_OVERLAYS]
    assert not labels.editable and not any(ov.visible for ov in paint)
    assert not set(paint) & set(canvas._layer_overlay_to_visual[labels])
    labels.editable = True  # a user may still paint on it: the tools come back
    assert all(ov.visible for ov in paint)
    assert set(paint) <= set(canvas._layer_overlay_to_visual[labels])


@pytest.mark.parametrize("contour", [1, 2, 3])
def test_the_outline_contour_is_napari_s_for_0_1_masks_and_other_labels(viewer, contour):
    from napari.layers import Labels

    rng = np.random.default_rng(contour)
    mask = np.zeros((120, 90), np.uint8)
    for y, x, r in rng.integers(0, 90, (12, 3)):  # blobs, touching the borders too
        mask[max(0, y - r // 3) : y + r // 3, max(0, x - r // 4) : x + r // 4] = 1
    region = _region(viewer)
    labels = _layers.show_synthetic_mask(viewer, region, None)
    labels.contour = contour
    assert labels._calculate_contour is not Labels._calculate_contour.__get__(labels)
    for data_slice in (
        (slice(0, 120), slice(0, 90)),  # all
        (slice(0, 37), slice(50, 90)),  # at two borders
        (slice(40, 80), slice(10, 60)),  # inside
    ):
        napari = Labels._calculate_contour(labels, mask, data_slice)
        ours = labels._calculate_contour(mask, data_slice)
        assert ours.dtype == napari.dtype
        np.testing.assert_array_equal(ours, napari)
    many = mask * rng.integers(1, 4, mask.shape).astype(np.uint8)  # labels 1-3: napari's own
    np.testing.assert_array_equal(
        labels._calculate_contour(many, (slice(0, 120), slice(0, 90))),
        Labels._calculate_contour(labels, many, (slice(0, 120), slice(0, 90))),
    )


def test_a_new_outline_is_inserted_hidden_and_shown_by_a_later_step(viewer, qtbot):
    from napari_cytosyn._napari._qt._controller import _outline_steps

    region = _region(viewer)
    viewer.reset_view()
    [add] = _outline_steps(viewer, region, None)
    make, visual, show = add()  # napari's insert in one turn of the event loop...
    labels = _layers.mask_layer_of(region)
    assert labels in viewer.layers and not labels.visible
    make()  # ...its visual in the next two...
    visual()
    assert labels in viewer.window._qt_viewer.canvas.layer_to_visual and not labels.visible
    show()  # ...its first slice, contour and draw in the next (controls: when selected)
    assert labels.visible
    qtbot.waitUntil(lambda: _magenta_px(viewer) > 100, timeout=5000)
    # an outline that exists already is refreshed in one step, adding none
    [refresh] = _outline_steps(viewer, region, None)
    assert refresh() == []


def test_an_outline_hidden_before_it_is_shown_stays_hidden(viewer, qtbot):
    from napari_cytosyn._napari._qt._controller import _outline_steps

    region = _region(viewer)
    viewer.reset_view()
    [add] = _outline_steps(viewer, region, None)
    make, visual, show = add()
    make()
    visual()
    labels = _layers.mask_layer_of(region)
    labels.visible = False  # the user (or a script) hides it before the plugin shows it
    show()
    assert not labels.visible
    qtbot.wait(300)
    assert _magenta_px(viewer) == 0


def test_later_lets_due_timers_run_between_its_steps(qtbot):
    import time
    from itertools import pairwise

    from qtpy.QtCore import QTimer

    from napari_cytosyn._napari._layers import later

    ticks, seen = [0], []
    ticker = QTimer()
    ticker.setInterval(1)
    ticker.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
    ticker.start()

    def step() -> None:
        seen.append(ticks[0])
        time.sleep(0.005)  # the ticker falls due meanwhile

    def step_with_more() -> list:  # the steps it returns run next, one per turn too
        step()
        return [step, step]

    later(step, step_with_more, *[step] * 3)
    qtbot.waitUntil(lambda: len(seen) == 7, timeout=5000)
    ticker.stop()
    # each step saw the ticker run since the step before: the event loop had a turn between
    assert all(b > a for a, b in pairwise(seen)), seen
