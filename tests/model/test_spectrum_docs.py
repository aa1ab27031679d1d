"""The docs the spectrum code and help cite exist and describe every option (issue 12 item 14)."""

from __future__ import annotations

import re
from pathlib import Path

from model.spectrum_options import OPTION_HELP, SpectrumOptions, normalise_spellings
from model.spectrum_pipeline import EXTRA_OPTIONS

REPO = Path(__file__).resolve().parents[2]


def test_docs_cited_by_the_code_exist() -> None:
    cited = set()
    for path in [*REPO.glob("model/*.py"), *REPO.glob("app/**/*.py"), *REPO.glob("worker/*.py")]:
        cited |= set(re.findall(r"docs/[a-z_]+\.md", path.read_text()))
    assert "docs/spectra.md" in cited
    assert [c for c in sorted(cited) if not (REPO / c).is_file()] == []


def test_every_option_is_in_the_schema_and_the_docs() -> None:
    fields = {f for f in SpectrumOptions.__dataclass_fields__ if f != "dt_fs"}
    assert set(OPTION_HELP) == fields | set(EXTRA_OPTIONS)
    text = (REPO / "docs" / "spectra.md").read_text()
    assert [k for k in OPTION_HELP if f"`{k}`" not in text] == []


def test_cli_spellings_are_accepted_as_json_values() -> None:
    out = normalise_spellings({"ionic_charges": "O=6,H=1", "lammps_type_symbols": "1=O,2=H", "bands": "1:2,3:4"})
    assert out == {"ionic_charges": {"O": 6.0, "H": 1.0}, "lammps_type_symbols": {"1": "O", "2": "H"},
                   "bands": [[1.0, 2.0], [3.0, 4.0]]}
