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
