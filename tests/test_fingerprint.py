"""Input files are identified by content: a copy or a remount keeps finished stages, an edit does not."""
import os
import shutil

from selftaught import io
from selftaught.config import DataConfig
from selftaught.stages import load


def test_same_content_same_fingerprint_edit_changes_it(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"instruction": "Name a colour."}\n')
    before = load.fingerprint(DataConfig(path=str(a)))
    # A remount or a copy back in place: a new mtime, the same bytes.
    b = tmp_path / "b.jsonl"
    shutil.copy(a, b)
    os.replace(b, a)
    os.utime(a, ns=(1, 1))
    assert load.fingerprint(DataConfig(path=str(a))) == before
    assert io.file_fingerprint(str(a)) == [str(a), before[0]["blake2b"]]
    a.write_text('{"instruction": "Name a flower."}\n')
    os.utime(a, ns=(1, 1))  # the same size and mtime as before: only the content tells
    assert load.fingerprint(DataConfig(path=str(a))) != before
