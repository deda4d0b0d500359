"""Tested dependency versions: setup.cfg's ranges, constraints.txt's pins
(the set CI installs) and the import-time warning."""

import configparser
import importlib
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import speechbrain_unipet
from speechbrain_unipet import TESTED_VERSIONS, check_versions, range_tested

ROOT = Path(__file__).resolve().parents[2]

# install_requires entries that must be ranges with both bounds (issue 28: no
# exact pins), each holding constraints.txt's pin.
RANGED = ("torch", "torchaudio", "transformers", "speechbrain")


def install_requires():
    """setup.cfg's install_requires, name (canonical) -> Requirement."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = config["options"]["install_requires"].splitlines()
    reqs = [
        Requirement(line.strip())
        for line in lines
        if line.strip() and not line.strip().startswith("#")
    ]
    return {canonicalize_name(req.name): req for req in reqs}


def constraint_pins():
    """constraints.txt, name (canonical) -> pinned version string."""
    pins = {}
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", line
        assert "*" not in specs[0].version, line
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} pinned twice"
        pins[name] = specs[0].version
    return pins


def test_install_requires_gives_ranges_not_pins():
    reqs = install_requires()
    for name in RANGED:
        operators = {spec.operator for spec in reqs[name].specifier}
        # A lower bound (the tested version) and an upper one (next major);
        # "!=" may exclude a known-broken release.
        assert {">=", "<"} <= operators <= {">=", "<", "!="}, name
    for name, req in reqs.items():
        assert all(spec.operator != "==" for spec in req.specifier), name


def test_constraints_lie_inside_install_requires():
    pins = constraint_pins()
    reqs = install_requires()
    for name, req in reqs.items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name]), (name, pins[name])
    # The lower bound of each range is a tested version: the pin itself.
    for name in RANGED:
        lower = [s.version for s in reqs[name].specifier if s.operator == ">="]
        assert Version(lower[0]) == Version(pins[name]), name


def test_constraints_equal_tested_versions():
    pins = constraint_pins()
    for name, tested in TESTED_VERSIONS.items():
        assert pins[canonicalize_name(name)] == tested, name
        # The range that does not warn starts at the tested version.
        assert SpecifierSet(range_tested(name)).contains(tested), name


def test_constraints_pin_the_dev_extra():
    # ruff's version decides what `ruff format --check` accepts in CI.
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    dev = config["options.extras_require"]["dev"].split()
    pins = constraint_pins()
    for line in dev:
        assert canonicalize_name(Requirement(line).name) in pins, line


def test_range_tested_is_the_minor_release():
    assert range_tested("transformers") == ">=5.23.0,<5.24"
    spec = SpecifierSet(range_tested("speechbrain"))
    assert spec.contains("1.1.2") and spec.contains("1.1.9")
    assert not spec.contains("1.1.1") and not spec.contains("1.2.0")


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
    tested = TESTED_VERSIONS["transformers"]
    assert f"tested with transformers {tested}," in message
    assert f"pip install 'transformers=={tested}'" in message


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
