"""The report's captions render cleanly: every workflow/report/*.rst through docutils, as
Snakemake's report renders them, with no warning or error (an error shows as a red box)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from docutils.core import publish_parts

CAPTIONS = sorted((Path(__file__).resolve().parents[1] / "workflow" / "report").glob("*.rst"))


def render_warnings(text: str) -> str:
    warnings = io.StringIO()
    publish_parts(text, writer="html",
                  settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5})
    return warnings.getvalue()


def test_a_broken_caption_is_caught():
    assert "Undefined substitution" in render_warnings("the signal |G| shrinks")


@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda path: path.stem)
def test_caption_renders_without_warnings(caption):
    assert render_warnings(caption.read_text()) == ""


def test_a_studys_own_captions_render_whatever_its_values(tmp_path):
    """The captions the report takes from a study's manifest (analysis/steps.py): the study's
    axes and values are text, whatever markup characters they hold."""
    import json

    from analysis.steps import MANIFEST, figure_captions

    tricky = "This study varies optimizer (*lamb*, |G|, `x`, my_opt_, [1]); batch_size (8, 16)."
    (tmp_path / MANIFEST).write_text(json.dumps({"study": "s", "varies": tricky, "figures": [
        {"name": "throughput", "drawn": True, "why": "", "left_out": ["optimizer=|G|*: no cell reached the target"]},
        {"name": "holdout", "drawn": False, "why": "needs cells at 3+ worker counts", "left_out": []}]}))
    captions = figure_captions(tmp_path, CAPTIONS[0].parent)
    assert set(captions) == {"throughput"}  # only the drawn ones
    assert render_warnings(captions["throughput"]) == ""
    html = publish_parts(captions["throughput"], writer="html")["body"]
    assert "*lamb*, |G|, `x`, my_opt_, [1]" in html.replace("&lt;", "<")
    assert "Panels left out: optimizer=|G|*: no cell reached the target." in html
