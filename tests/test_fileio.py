import json

import pytest

from mmue.fileio import append_jsonl, atomic_write, atomic_write_json, read_jsonl


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(p, broken)
    assert json.loads(p.read_text()) == {"v": 1} and not list(tmp_path.glob("*.tmp"))


def test_jsonl_reader_skips_a_torn_last_line_only(tmp_path):
    p = tmp_path / "r.jsonl"
    assert read_jsonl(p) == []
    append_jsonl(p, {"a": 1})
    append_jsonl(p, {"a": 2})
    with open(p, "a") as f:
        f.write('{"a": 3')                                      # a crash mid-write
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)
