"""Atomic writes are durable (file fsynced before the rename, folder after) and a full disk is
one line naming the path and the space left, with the destination as it was. The real full
filesystem is in tests/integration/test_disk_full.py; here the fsyncs are watched and the full
disk is a writer that raises what the OS or a library raises."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagekit import files
from stagekit.errors import DiskFullError, UserError
from stagekit.files import atomic_dir, atomic_path, write_json


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """("fsync", path) and ("replace", dest) in the order they happen."""
    seen: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def watched_fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def watched_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        replace(src, dst)
        seen.append(("replace", str(dst)))

    monkeypatch.setattr(files.os, "fsync", watched_fsync)
    monkeypatch.setattr(files.os, "replace", watched_replace)
    yield seen


def test_atomic_path_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, journal: list[tuple[str, str]]
) -> None:
    dest = tmp_path / "manifest.json"
    write_json(dest, {"a": 1})
    (synced_file, temp), renamed, synced_dir = journal
    assert synced_file == "fsync" and Path(temp).parent == tmp_path and temp != str(dest)
    assert renamed == ("replace", str(dest))
    assert synced_dir == ("fsync", str(tmp_path))


def test_atomic_dir_syncs_every_file_and_folder_in_it(
    tmp_path: Path, journal: list[tuple[str, str]]
) -> None:
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "a.safetensors").write_bytes(b"x")
        (tmp / "sub" / "b.json").write_bytes(b"y")
    first_rename = next(i for i, (what, _) in enumerate(journal) if what == "replace")
    before = {Path(p).name for what, p in journal[:first_rename]}
    assert {"a.safetensors", "b.json", "sub"} <= before  # files, then folders, all before
    assert any(Path(p).name.startswith(".out.") for _, p in journal[:first_rename])
    assert journal[-1] == ("fsync", str(tmp_path))  # the swap itself made durable


def test_durable_false_leaves_syncing_to_the_caller(
    tmp_path: Path, journal: list[tuple[str, str]]
) -> None:
    with atomic_path(tmp_path / "shard", durable=False) as tmp:
        tmp.write_bytes(b"x")
    assert [what for what, _ in journal] == ["replace"]
    files.sync_tree(tmp_path)
    assert {Path(p).name for _, p in journal[1:]} == {"shard", tmp_path.name}


class LibraryError(Exception):
    """Like safetensors' SafetensorError: not an OSError, only the OS message inside."""


@pytest.mark.parametrize(
    "raised",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        LibraryError(f"Error while serializing: IoError({os.strerror(errno.ENOSPC)})"),
    ],
    ids=["oserror", "library"],
)
def test_a_full_disk_is_one_line_and_leaves_the_destination_as_it_was(
    tmp_path: Path, raised: Exception
) -> None:
    dest = tmp_path / "adapter"
    with atomic_dir(dest) as tmp:
        (tmp / "old.safetensors").write_text("old")
    with pytest.raises(DiskFullError) as err, atomic_dir(dest) as tmp:
        (tmp / "half.safetensors").write_text("half")
        raise raised
    message = str(err.value)
    assert "\n" not in message and str(dest) in message and "free there" in message
    assert isinstance(err.value, UserError) and err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp left
    assert [p.name for p in dest.iterdir()] == ["old.safetensors"]


def test_other_errors_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic_path(tmp_path / "f"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_the_free_space_named_is_that_of_the_nearest_existing_folder(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = files._free_bytes(tmp_path / "not" / "yet" / "made")
    assert abs(free - st.f_bavail * st.f_frsize) < 64 << 20  # others write to this disk too
