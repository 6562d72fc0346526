"""The ``reference`` fixture: skips with the reason on a user's machine without the kit, fails under CI's
``SRNAS_REQUIRE_REFERENCE=1``, and finds the kit wherever ``SRNAS_REFERENCE_DIR`` points."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).with_name("conftest.py")
USES_KIT = "def test_kit(reference):\n    assert (reference / 'marker').is_file()\n"


@pytest.fixture
def kit_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_kit=USES_KIT)
    monkeypatch.setenv("SRNAS_REFERENCE_DIR", str(pytester.path / "no_kit_here"))
    monkeypatch.delenv("SRNAS_REQUIRE_REFERENCE", raising=False)
    return pytester


def test_missing_kit_skips_with_the_reason(kit_test):
    result = kit_test.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*reference kit ../shared/reference not present (set SRNAS_REFERENCE_DIR)*"])


@pytest.mark.parametrize("value", ["1", "yes"])
def test_missing_kit_fails_when_ci_requires_it(kit_test, monkeypatch, value):
    monkeypatch.setenv("SRNAS_REQUIRE_REFERENCE", value)
    result = kit_test.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*SRNAS_REQUIRE_REFERENCE is set: CI must run the kit tests*"])


@pytest.mark.parametrize("require", ["0", "1"])
def test_a_present_kit_is_used(kit_test, monkeypatch, require):
    kit = kit_test.path / "kit"
    kit.mkdir()
    (kit / "marker").write_text("x")
    monkeypatch.setenv("SRNAS_REFERENCE_DIR", str(kit))
    monkeypatch.setenv("SRNAS_REQUIRE_REFERENCE", require)
    kit_test.runpytest().assert_outcomes(passed=1)


def test_ci_script_requires_the_kit():
    script = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "export SRNAS_REQUIRE_REFERENCE=1" in script
    assert script.index("SRNAS_REQUIRE_REFERENCE") < script.index("scripts/test.sh")
