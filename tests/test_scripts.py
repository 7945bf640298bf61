"""The Lua loader (jobline/scripts.py): every file in jobline/lua/ loads, includes and placeholders
expand, and a missing include or an unknown placeholder fails at import, not in Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobline import scripts
from jobline.models import DEFAULT_MAX_BACKOFF_MS
from jobline.scripts import LUA_DIR, ScriptError, load


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_every_lua_file_is_a_module_constant_with_its_header_and_nothing_left_to_expand() -> None:
    names = sorted(path.stem for path in LUA_DIR.glob("*.lua"))
    assert len(names) >= 15
    for name in names:
        source = getattr(scripts, name.upper())
        assert source == load(name)
        assert source.startswith("-- KEYS[1"), name  # the KEYS/ARGV header comes first
        assert "{{" not in source and "--@include" not in source, name


def test_includes_expand_once_each_and_nest(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "s.lua": "-- KEYS[1] x\n--@include b\n--@include a\nreturn 1\n",
        "includes/a.lua": "local A = 1\n",
        "includes/b.lua": "--@include a\nlocal B = A + 1\n",
    })  # fmt: skip
    source = load("s", root, {})
    assert source.count("local A = 1") == 1
    assert source.index("local A = 1") < source.index("local B = A + 1") < source.index("return 1")


def test_placeholders_take_the_python_constants() -> None:
    assert f"'MAXLEN', '~', {scripts.EVENTS_CAP}," in scripts.ENQUEUE
    assert f"tonumber(h.maxBackoffMs) or {DEFAULT_MAX_BACKOFF_MS}  --" in scripts.FAIL
    assert re.search(r"local DURATION_BUCKETS = \{0\.005, 0\.01, .*, 1800\}", scripts.ENQUEUE)
    assert "local API_FIELDS = {'id', 'name', " in scripts.UPDATE


def test_a_missing_include_raises(tmp_path: Path) -> None:
    root = write(tmp_path, {"s.lua": "--@include nowhere\nreturn 1\n"})
    with pytest.raises(ScriptError, match="nowhere"):
        load("s", root, {})


def test_an_unknown_or_malformed_placeholder_raises(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "s.lua": "return {{EVENTS_CAP}}\n",
        "t.lua": "--@include i\nreturn 1\n",
        "includes/i.lua": "local x = {{ EVENTS_CAP }}\n",
    })  # fmt: skip
    assert load("s", root, {"EVENTS_CAP": "7"}) == "return 7\n"
    with pytest.raises(ScriptError, match="EVENTS_CAP"):
        load("s", root, {})
    with pytest.raises(ScriptError, match="unexpanded"):
        load("t", root, {"EVENTS_CAP": "7"})


def test_an_include_not_at_the_start_of_a_line_raises(tmp_path: Path) -> None:
    root = write(tmp_path, {"s.lua": "  --@include a\nreturn 1\n", "includes/a.lua": "local A = 1\n"})
    with pytest.raises(ScriptError, match="unexpanded"):
        load("s", root, {})
