"""The page's pure functions, imported as ES modules in Chromium: where a JSON path sits in
the editor's text, which input.json entries name which dataset systems, axis ticks."""

from __future__ import annotations

from typing import Any

import pytest
from pagekit import Page

pytestmark = pytest.mark.browser


def run(browser: Page, module: str, body: str) -> Any:
    browser.goto()
    return browser.page.evaluate(f"async () => {{ const m = await import('/static/js/{module}'); {body} }}")


def test_json_locations(browser: Page) -> None:
    text = '{\n  "model": {\n    "sel": [46, "x"],\n    "type_map": ["O", "H"]\n  },\n  "training": {}\n}'
    got = run(browser, "jsonloc.js", f"""
        const t = {text!r};
        const at = p => {{ const l = m.locate(t, p); return [t.slice(l.start, l.end), l.line, l.exact, l.found]; }};
        return {{
          key: at('model.type_map'), item: at('model.sel[1]'), missing: at('training.numb_steps'),
          deep: at('model.descriptor.neuron[0]'), doc: at('(document)'),
          syntax: m.syntaxErrorPosition('{{\\n  "a": ,\\n}}', new SyntaxError('no position given')),
          strict: m.firstErrorOffset('{{"a": [1, 2,]}}'), valid: m.firstErrorOffset('{{"a": [1, 2]}}'),
          split: m.splitPath('a.b[2].c'),
        }};""")
    assert got["key"] == ['"type_map"', 4, True, "model.type_map"]
    assert got["item"] == ['"x"', 3, True, "model.sel[1]"]
    assert got["missing"] == ['"training"', 6, False, "training"]  # a missing key: the object that should hold it
    assert got["deep"] == ['"model"', 2, False, "model"]
    assert got["doc"][1:3] == [1, True]
    assert got["syntax"] == {"line": 2, "column": 8}  # found by the strict scan when the message has none
    assert (got["strict"], got["valid"]) == (12, -1)
    assert got["split"] == ["a", "b", 2, "c"]


MATCHES = [  # (input.json systems entry, dataset system path, does it name it?)
    ("./training_data_reformat/atomic_system", "training_data_reformat/atomic_system", True),
    ("training_data_reformat/atomic_system/", "training_data_reformat/atomic_system", True),
    ("./training_data_reformat", "training_data_reformat/global_system", True),  # a folder of systems
    ("./training_data_reformat/atomic_system", "water/training_data_reformat/atomic_system", True),  # extra top folder
    ("/home/me/data/training_data_reformat/atomic_system", "training_data_reformat/atomic_system", True),
    ("./training_data_reformat/atomic_system", "validation_data_reformat/atomic_system", False),
    ("./training_data_reformat/atomic", "training_data_reformat/atomic_system", False),  # not a name's prefix
    ("dataset:ds-1/training_data_reformat", "training_data_reformat/atomic_system", True),
    ("dataset:ds-1", "anything/below", True),
    ("dataset:ds-2/training_data_reformat", "training_data_reformat/atomic_system", False),  # another dataset
    ("./x", ".", False),
]


def test_entry_matches_system(browser: Page) -> None:
    cases = [[entry, system] for entry, system, _ in MATCHES]
    got = run(browser, "views/train-systems.js", f"return {cases!r}.map(([e, s]) => m.entryMatches(e, 'ds-1', s));")
    assert got == [matches for _, _, matches in MATCHES]


def test_ticks(browser: Page) -> None:
    got = run(browser, "ticks.js", """
        const labels = t => t.map(x => x.label);
        return {
          lin: labels(m.linearTicks(0, 4000)), small: labels(m.linearTicks(0.001, 0.0035)),
          decades: labels(m.logTicks(1e-3, 10).major), few: labels(m.logTicks(0.2, 1.1).major),
          narrow: labels(m.logTicks(0.5, 0.9).major), minors: m.logTicks(1e-3, 10).minor.length,
        };""")
    assert got["lin"] == ["0", "500", "1000", "1500", "2000", "2500", "3000", "3500", "4000"]
    assert got["small"][0] == "0.0010" and got["small"][-1] == "0.0035"
    assert got["decades"] == ["10⁻³", "10⁻²", "10⁻¹", "10⁰", "10¹"]
    assert got["few"] == ["0.2", "0.5", "1"]
    assert got["narrow"] == ["0.5", "0.6", "0.7", "0.8", "0.9"]
    assert got["minors"] == 32
