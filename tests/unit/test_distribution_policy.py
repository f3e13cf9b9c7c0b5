"""The distribution policy file: TOML and YAML, strict validation with clear errors that never
echo the file, reloading on change, and the last good policy kept after a bad edit."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from distribution.policy import DEFAULT_POLICY, DEFAULT_RULE, Policy, PolicyError, PolicySource, load_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "distribution" / "policy.example.toml"

TOML = """
grace_period_s = 60
default_task_class = "general"
prefer_owner = false

[[rules]]
name = "gi"
body_parts = ["Stomach", "colon"]
task_class = "gi"
"""

YAML = """
grace_period_s: 90
rules:
  - name: skin
    body_parts: [SKIN]
    task_class: derm
"""


def write(path: Path, text: str, *, bump: int = 0) -> Path:
    path.write_text(text)
    if bump:  # a distinct mtime even on coarse file-system clocks
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))
    return path


def test_toml_and_yaml_files_give_the_same_kind_of_policy(tmp_path: Path) -> None:
    toml = load_policy(write(tmp_path / "p.toml", TOML))
    assert toml.grace_period_s == 60 and not toml.prefer_owner
    assert toml.classify("stomach") == ("gi", "gi")
    assert toml.classify("  COLON ") == ("gi", "gi")  # case and surrounding blanks do not matter
    assert toml.classify("skin") == (DEFAULT_RULE, "general")
    assert toml.classify(None) == (DEFAULT_RULE, "general")
    yaml_policy = load_policy(write(tmp_path / "p.yml", YAML))
    assert yaml_policy.classify("skin") == ("skin", "derm") and yaml_policy.prefer_owner


def test_the_shipped_example_is_valid() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.classify("Colon")[1] == "gi"
    assert policy.classify("lung") == (DEFAULT_RULE, policy.default_task_class)


def test_first_matching_rule_wins() -> None:
    policy = Policy.model_validate({"rules": [{"name": "a", "body_parts": ["x"], "task_class": "one"},
                                              {"name": "b", "body_parts": ["X"], "task_class": "two"}]})
    assert policy.classify("x") == ("a", "one")


def test_the_built_in_policy_sends_everything_to_general() -> None:
    assert DEFAULT_POLICY.rules == []
    assert DEFAULT_POLICY.classify("anything") == (DEFAULT_RULE, "general")
    assert PolicySource(None).current() is DEFAULT_POLICY


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("unknown.toml", 'grace_period_s = 60\nsecret_patient = "Jane Doe 1970-01-01"\n', "secret_patient"),
    ("negative.toml", "grace_period_s = -5\n", "grace_period_s"),
    ("shorter than heartbeats.toml", "grace_period_s = 4\n", "grace_period_s"),
    ("class.toml", '[[rules]]\nname = "r"\nbody_parts = ["x"]\ntask_class = "Jane Doe"\n', "rules.0.task_class"),
    ("empty_parts.yaml", "rules:\n  - name: r\n    body_parts: []\n    task_class: gi\n", "rules.0.body_parts"),
    ("dupes.yaml", "rules:\n  - {name: r, body_parts: [a], task_class: gi}\n"
                   "  - {name: r, body_parts: [b], task_class: gi}\n", "distinct"),
    ("list.yaml", "- Jane Doe 1970-01-01\n", "top level"),
    ("broken.toml", 'grace_period_s = "Jane Doe\n', "not valid TOML"),
    ("broken.yaml", "rules: [Jane Doe 1970-01-01\n", "not valid YAML"),
    ("policy.json", "{}", "unknown format"),
])
def test_invalid_files_are_refused_naming_the_problem_not_the_content(tmp_path: Path, name: str, text: str,
                                                                      expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(write(tmp_path / name, text))
    message = str(caught.value)
    assert expected in message and name in message
    assert "Jane" not in message and "1970" not in message


def test_a_missing_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        PolicySource(tmp_path / "absent.toml")


def test_reload_on_change_keeps_the_last_good_policy_after_a_bad_edit(tmp_path: Path, capture: io.StringIO) -> None:
    path = write(tmp_path / "policy.toml", TOML)
    source = PolicySource(path)
    assert source.current().grace_period_s == 60

    write(path, "grace_period_s = 120\n", bump=1)
    assert source.current().grace_period_s == 120 and source.current().rules == []

    write(path, "grace_period_s = 'Jane Doe'\n", bump=2)
    assert source.current().grace_period_s == 120  # the bad edit is refused
    assert source.current().grace_period_s == 120
    assert source.last_error is not None and "grace_period_s" in source.last_error
    refusals = [line for line in capture.getvalue().splitlines() if "distribution.policy_refused" in line]
    assert len(refusals) == 1, "a bad version of the file is reported once, not on every call"
    assert "Jane" not in "".join(refusals)

    write(path, TOML, bump=3)
    assert source.current().classify("stomach") == ("gi", "gi")
    assert source.last_error is None

    path.unlink()
    assert source.current().classify("stomach") == ("gi", "gi")  # a vanished file: the last good one
