"""The fault table's rows name tests that exist, and its verdicts follow the test outcomes."""

from __future__ import annotations

import ast
from pathlib import Path

from benchmarks.faults import FAULTS, REPO, Fault, _outcomes, result_of


def test_every_row_names_existing_tests() -> None:
    missing = []
    for fault in FAULTS:
        assert fault.tests and fault.expect in ("pass", "xfail"), fault.item
        for node in fault.tests:
            path, name = node.split("::")
            tree = ast.parse((REPO / path).read_text())
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            if name not in names:
                missing.append(node)
    assert not missing
    items = [f.item for f in FAULTS]
    assert len(items) == len(set(items))
    for n in range(1, 13):  # every numbered failure of issue 11 has a row
        assert any(i == str(n) or (i[:-1] == str(n) and i[-1].isalpha()) for i in items), n


def test_verdicts(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok[x]"/>'
        '<testcase classname="tests.test_a" name="test_ok[y]"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_a" name="test_open">'
        '<skipped type="pytest.xfail" message="known"/></testcase>'
        "</testsuite></testsuites>"
    )
    outcomes = _outcomes(junit)
    ok = Fault("1", "f", "n", ("tests/test_a.py::test_ok",))
    bad = Fault("2", "f", "n", ("tests/test_a.py::test_ok", "tests/test_a.py::test_bad"))
    gone = Fault("3", "f", "n", ("tests/test_a.py::test_gone",))
    known = Fault(
        "8", "f", "n", ("tests/test_a.py::test_open", "tests/test_a.py::test_ok"), "xfail"
    )
    fixed = Fault("8", "f", "n", ("tests/test_a.py::test_ok",), "xfail")
    assert result_of(ok, outcomes) == ("pass (2 tests)", True)
    assert result_of(bad, outcomes)[1] is False and "1/3" in result_of(bad, outcomes)[0]
    assert result_of(gone, outcomes)[1] is False
    assert result_of(known, outcomes) == ("open (known; probe xfails as expected)", True)
    assert result_of(fixed, outcomes)[0].startswith("XPASS")
