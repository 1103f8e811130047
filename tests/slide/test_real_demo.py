"""`python -m napari_cytosyn` writes a sample slide and prints its pyramid."""

from __future__ import annotations

from napari_cytosyn.__main__ import main


def test_demo_writes_sample_slide_and_prints_its_pyramid(tmp_path, capsys):
    out = tmp_path / "demo.tif"
    assert main(["--out", str(out), "--size", "1024", "1536"]) == 0
    assert out.exists()
    text = capsys.readouterr().out
    assert "openslide:generic-tiff, 0.5 um/px" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [r[:3] for r in rows] == [
        ["0", "1024", "1536"],
        ["1", "512", "768"],
        ["2", "256", "384"],
        ["3", "128", "192"],
    ]


def test_demo_prints_an_existing_slide(generic_tiff_slide, capsys):
    assert main([str(generic_tiff_slide)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("generic: openslide:generic-tiff")
    assert "6.000" in text  # the non-power-of-two level
