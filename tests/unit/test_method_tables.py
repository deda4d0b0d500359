"""``docs/methods.md`` shows what ``python -m speechbrain_unipet.pet`` prints
for the built-in methods (the tables are generated from the registry)."""

import pathlib
import runpy

from speechbrain_unipet.pet import PET_METHODS

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_docs_method_tables_are_the_registry(capsys):
    """Run as ``python -m`` runs it, on the built-in registry: one method
    per recipe yaml, none registered by a test (``test_components.py``
    registers its test method for its own module only)."""
    methods_doc = REPO / "docs" / "methods.md"
    text = methods_doc.read_text(encoding="utf-8")
    begin = "<!-- begin: python -m speechbrain_unipet.pet -->\n"
    end = "<!-- end: python -m speechbrain_unipet.pet -->"
    shown = text[text.index(begin) + len(begin) : text.index(end)]
    yamls = (REPO / "recipes/VoxCeleb/SpeakerRec/hparams").glob("*.yaml")
    assert set(PET_METHODS) == {p.stem for p in yamls} - {"verification"}
    capsys.readouterr()
    runpy.run_module("speechbrain_unipet.pet", run_name="__main__")
    generated = capsys.readouterr().out
    assert shown.strip() == generated.strip()
