"""The positioned YAML loader, `extends:` composition and `--set` overrides."""

from __future__ import annotations

from specc.diagnostics.check import check_file
from specc.spec.loader import deep_merge, parse_yaml
from specc.spec.overrides import apply_overrides

TINY = "specs/tiny.yaml"


def test_positions_of_keys_and_values():
    loaded = parse_yaml("name: a\nmodel:\n  num_layers: 2\n  list: [1, 2]\n", "x.yaml")
    source_map = loaded.source_map
    assert str(source_map.key_at(("model", "num_layers"))) == "x.yaml:3:3"
    assert str(source_map.value_at(("model", "num_layers"))) == "x.yaml:3:15"
    assert str(source_map.value_at(("model", "list", 1))) == "x.yaml:4:13"
    assert str(source_map.value_at(("model", "missing", "deeper"))) == "x.yaml:3:3"


def test_duplicate_keys_are_errors_not_last_wins():
    loaded = parse_yaml("a: 1\na: 2\n", "x.yaml")
    assert [d.code for d in loaded.diagnostics] == ["Y002"]
    assert loaded.data == {"a": 1}


def test_merge_keys_and_anchors_are_supported():
    loaded = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "x.yaml")
    assert loaded.data["other"] == {"x": 1, "y": 3}
    assert not loaded.diagnostics


def test_deep_merge_replaces_lists_and_merges_mappings():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}


def test_extends_child_wins_and_positions_point_to_the_right_file(tmp_path):
    (tmp_path / "base.yaml").write_text(open(TINY).read())
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nmodel:\n  num_layers: 0\n")
    result = check_file(tmp_path / "child.yaml")
    assert [d.code for d in result.errors] == ["S006"]
    error = result.errors[0]
    assert error.position.file.endswith("child.yaml") and error.position.line == 4
    result = check_file(tmp_path / "child.yaml", ["model.num_layers=4"])
    assert result.valid
    assert result.spec.name == "child" and result.spec.model.num_layers == 4
    assert result.spec.model.hidden_size == 64  # inherited


def test_base_file_errors_point_into_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text(open(TINY).read().replace("norm: rmsnorm", "norm: rms"))
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\n")
    result = check_file(tmp_path / "child.yaml")
    assert [str(d.position).split("/")[-1] for d in result.errors] == ["base.yaml:53:9"]


def test_overrides_change_add_delete():
    loaded = parse_yaml("a:\n  b: 1\n  c: [1, 2]\n", "x.yaml")
    data, source_map = loaded.data, loaded.source_map
    problems = apply_overrides(data, source_map, ["a.b=2", "+a.d.e=[1, 2]", "~a.c", "a.b=4k", "++a.z=true"])
    assert problems == []
    assert data == {"a": {"b": "4k", "d": {"e": [1, 2]}, "z": True}}
    assert str(source_map.value_at(("a", "d", "e"))) == "<override #2>"


def test_override_errors_are_located():
    loaded = parse_yaml("a:\n  b: 1\n", "x.yaml")
    problems = apply_overrides(loaded.data, loaded.source_map, ["a.x=1", "+a.b=2", "~q", "nonsense", "a.b.c=1"])
    assert [(str(p.position), p.code) for p in problems] == [
        ("<override #1>", "O002"), ("<override #2>", "O003"), ("<override #3>", "O004"),
        ("<override #4>", "O001"), ("<override #5>", "O005")]


def test_override_reaches_list_items():
    result = check_file(TINY, ["filters.0.min_chars=10"])
    assert result.valid
    assert result.spec.filters[0].min_chars == 10


def test_missing_file_is_a_diagnostic_not_a_crash():
    result = check_file("does/not/exist.yaml")
    assert [d.code for d in result.errors] == ["Y007"]
