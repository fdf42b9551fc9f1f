"""The tests' stand-ins for the audit trail have its whole interface (TrailPort): a fake
without ``record_durable`` made a durably written event (a deletion) vanish in a unit test
instead of failing it (AuditEvents logs and goes on). mypy checks tests/audittrails.py
against the Protocol too (pyproject ``[tool.mypy] files``)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from audittrails import RecordingTrail
from securepacs.services.audit_events import TrailPort

TESTS = Path(__file__).resolve().parents[2]


def _members() -> dict[str, list[str]]:
    return {name: list(inspect.signature(value).parameters)
            for name, value in vars(TrailPort).items()
            if callable(value) and not name.startswith("_")}


def test_the_recording_trail_has_every_member_with_the_same_parameters() -> None:
    members = _members()
    assert {"record", "record_durable", "check_writable"} <= set(members)
    for name, parameters in members.items():
        assert list(inspect.signature(getattr(RecordingTrail, name)).parameters) == \
            parameters, name


def test_no_test_fakes_a_trail_with_part_of_the_interface() -> None:
    """A class in the tests that defines one of TrailPort's distinctive members
    (check_writable, record_durable) defines them all, or uses RecordingTrail."""
    members = set(_members())
    partial = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            defined = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            if defined & {"check_writable", "record_durable"} and not members <= defined:
                partial.append(f"{path.relative_to(TESTS)}:{node.lineno} {node.name} lacks "
                               f"{sorted(members - defined)}")
    assert not partial, partial
