"""Tested dependency versions: setup.cfg pins and the import-time warning."""

import configparser
import importlib
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import speechbrain_unipet
from speechbrain_unipet import TESTED_VERSIONS, check_versions

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_pins_match_tested_versions():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = config["options"]["install_requires"].split()
    pins = {req.name: req.specifier for req in map(Requirement, lines)}
    for name, tested in TESTED_VERSIONS.items():
        assert pins[name] == SpecifierSet(tested), name
        # Both bounds: an open top would let CI resolve an untested release.
        operators = {spec.operator for spec in pins[name]}
        assert operators == {">=", "<"}, name


def test_installed_versions_are_tested():
    # The environment the tests run in is what the pins promise.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_versions() == []


def test_warns_on_untested_version(monkeypatch):
    real_version = metadata.version

    def fake_version(name):
        return "4.40.0" if name == "transformers" else real_version(name)

    monkeypatch.setattr(metadata, "version", fake_version)
    with pytest.warns(UserWarning, match="transformers 4.40.0") as record:
        messages = check_versions()
    assert len(messages) == len(record) == 1
    message = messages[0]
    assert TESTED_VERSIONS["transformers"] in message
    assert f"pip install 'transformers{TESTED_VERSIONS['transformers']}'" in (
        message
    )


def test_warns_at_import(monkeypatch):
    monkeypatch.setattr(metadata, "version", lambda name: "0.1")
    with pytest.warns(UserWarning) as record:
        importlib.reload(speechbrain_unipet)
    messages = [str(w.message) for w in record]
    assert len(messages) == len(TESTED_VERSIONS)
    for name in TESTED_VERSIONS:
        assert any(f"{name} 0.1 is installed" in m for m in messages), name


def test_no_warning_inside_range_and_missing_package_skipped(monkeypatch):
    assert check_versions({"transformers": "5.23.9rc1"}) == []

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert check_versions() == []
