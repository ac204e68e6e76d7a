"""The study file as a ledger: each run is saved at a cost that does not grow with the study
(as a part file beside it, once rewriting the file would cost more), and compacted into the
file. Every reader and --resume see every saved run, whatever moment a kill came."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from ablate.results import files as results

SCHEMA = results.arrow_schema({"study": str, "variant": str, "seed": int, "epoch": int, "split": str,
                               "loss": float, "accuracy": float, "status": str, "run_id": str, "config_id": str})


def run(n: int, loss: float = 1.0, status: str = "ok") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run n's rows (two epochs of both splits) and its per-class rows."""
    rows = pd.DataFrame([{"study": "s", "variant": f"v{n % 3}", "seed": n, "epoch": e, "split": split, "loss": loss,
                          "accuracy": 0.5, "status": status, "run_id": f"run{n:05d}", "config_id": f"c{n % 3}"}
                         for e in (0, 1) for split in ("train", "test")])
    classes = pd.DataFrame([{"study": "s", "variant": f"v{n % 3}", "seed": n, "run_id": f"run{n:05d}",
                             "config_id": f"c{n % 3}", "class_index": i, "class_name": f"class {i}", "images": 5,
                             "accuracy": 0.1 * i} for i in range(3)])
    return rows, classes


@pytest.fixture
def parts_always(monkeypatch):
    """Every save after the first (which makes the file) is a part file: the file costs too much."""
    monkeypatch.setattr(results.StudyFile, "PATIENCE", 10 ** 9)


def test_runs_saved_as_parts_are_seen_by_every_reader_and_by_resume(tmp_path, parts_always):
    path = tmp_path / "s.parquet"
    store = results.StudyFile(path, SCHEMA)
    for n in range(5):
        store.add(*run(n), {"study": {"name": "s"}}, f"run {n}")
    store.lock.release()  # killed here: the OS releases the lock, nothing is compacted
    assert pd.read_parquet(path)["run_id"].unique().tolist() == ["run00000"]  # the file: the first run only
    assert len(results.run_parts(path)) == 4 and not list(tmp_path.glob("*.tmp"))
    read = results.read_results(path)
    assert sorted(read["run_id"].unique()) == [f"run{n:05d}" for n in range(5)] and len(read) == 20
    assert len(results.read_per_class(path)) == 15
    assert results.read_metadata(path) == {"study": {"name": "s"}}
    with pytest.raises(results.UsageError, match="exists: add --resume"):  # parts are a study too
        results.existing_runs(path, resume=False, force=False)
    with results.StudyFile(path, SCHEMA, resume=True) as again:  # --resume: every saved run is done
        assert again.done() == {f"run{n:05d}" for n in range(5)}
    pd.testing.assert_frame_equal(pd.read_parquet(path), read)  # closing compacted the parts into the file
    assert results.run_parts(path) == [] and len(pd.read_parquet(results.per_class_path(path))) == 15


def test_a_run_saved_again_has_only_its_newest_rows(tmp_path, parts_always):
    path = tmp_path / "s.parquet"
    with results.StudyFile(path, SCHEMA) as store:
        store.add(*run(0, status="failed"), {}, "run 0")  # in the file
        store.add(*run(1, loss=2.0), {}, "run 1")  # a part
        store.add(*run(0, loss=3.0), {}, "run 0")  # trained again: a part, over the file's rows
        store.add(*run(1, loss=4.0), {}, "run 1")  # over its own part
        assert store.done() == {"run00000", "run00001"}
        seen = results.read_results(path)
        assert seen.groupby("run_id")["loss"].unique().to_dict() == {"run00000": [3.0], "run00001": [4.0]}
    final = pd.read_parquet(path)
    assert final.groupby("run_id")["loss"].unique().to_dict() == {"run00000": [3.0], "run00001": [4.0]}
    assert (final["status"] == "ok").all() and len(final) == 8


def test_force_replaces_the_old_study_only_when_its_first_run_is_saved(tmp_path, parts_always):
    path = tmp_path / "s.parquet"
    store = results.StudyFile(path, SCHEMA)
    for n in range(3):
        store.add(*run(n), {}, f"run {n}")
    store.lock.release()  # killed: two runs in parts
    before = results.read_results(path)
    with results.StudyFile(path, SCHEMA, force=True):
        pass  # stopped before any run finished: the old study is all there
    pd.testing.assert_frame_equal(results.read_results(path), before)
    assert len(results.run_parts(path)) == 2
    with results.StudyFile(path, SCHEMA, force=True) as store:
        store.add(*run(7), {}, "run 7")
        assert results.read_results(path)["run_id"].unique().tolist() == ["run00007"]
        assert results.run_parts(path) == []
        store.add(*run(8), {}, "run 8")
    assert pd.read_parquet(path)["run_id"].unique().tolist() == ["run00007", "run00008"]


def test_saving_is_cheap_while_the_file_is_and_parts_wait_when_it_is_not(tmp_path):
    path = tmp_path / "s.parquet"
    with results.StudyFile(path, SCHEMA) as store:
        store.add(*run(0), {}, "run 0")
        store._compacted_at -= 60  # a minute since the file was written: rewriting it is cheap
        store.add(*run(1), {}, "run 1")
        assert results.run_parts(path) == [] and pd.read_parquet(path)["run_id"].nunique() == 2
        store._compact_seconds = 3600  # the last rewrite took an hour: the next runs wait in parts
        store.add(*run(2), {}, "run 2")
        assert len(results.run_parts(path)) == 1 and pd.read_parquet(path)["run_id"].nunique() == 2
        store._on_disk += [store._on_disk[0]] * (store.MAX_PARTS - 1)  # as many as a reader may merge
        store.add(*run(3), {}, "run 3")
        assert results.run_parts(path) == [] and pd.read_parquet(path)["run_id"].nunique() == 4


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_ledger import SCHEMA, run
    from ablate.results import files as results

    results.StudyFile.PATIENCE = 20
    store = results.StudyFile({path!r}, SCHEMA, order={{f"run{{n:05d}}": n for n in range(100000)}})
    n = 0
    while True:
        store._compact_seconds = 0.05 if n % 7 else 10 ** 9  # now and then a rewrite, mostly parts
        store.add(*run(n), {{}}, f"run {{n}}")
        print(n, flush=True)
        n += 1
""")


@pytest.mark.parametrize("after", [5, 23])
def test_kill_9_while_saving_loses_no_saved_run(tmp_path, after):
    path = tmp_path / "s.parquet"
    script = WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    saved = -1
    deadline = time.monotonic() + 120
    while saved < after and time.monotonic() < deadline:
        saved = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)  # at any moment: mid-part, mid-rewrite, between the two
    process.wait()
    held = set(results.read_results(path)["run_id"])
    assert {f"run{n:05d}" for n in range(saved + 1)} <= held  # every run it said was saved
    with results.StudyFile(path, SCHEMA, resume=True) as store:
        assert store.done() == held
    final = pd.read_parquet(path)
    assert set(final["run_id"]) == held and results.run_parts(path) == []
    assert final["run_id"].drop_duplicates().tolist() == sorted(held)  # in the study's order, however saved
    assert len(results.read_per_class(path)) == 3 * len(held)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_reader_that_lists_a_part_the_writer_then_compacts_sees_each_run_once(tmp_path, parts_always,
                                                                                 monkeypatch):
    """The race of `ablate report` during a study: the reader lists the parts, the writer
    compacts them into the file and removes them, the reader reads. It reads again: no false
    error, each run once."""
    path = tmp_path / "s.parquet"
    store = results.StudyFile(path, SCHEMA)
    for n in range(4):
        store.add(*run(n), {}, f"run {n}")
    listed = results.run_parts(path)
    real_read = pd.read_parquet
    compacted = []

    def read_after_compaction(file, *args, **kwargs):
        if not compacted and file in listed:  # the writer gets there first
            compacted.append(file)
            store.compact()
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", read_after_compaction)
    seen = results.read_results(path)
    assert compacted and results.run_parts(path) == []
    assert sorted(seen["run_id"].unique()) == [f"run{n:05d}" for n in range(4)] and len(seen) == 16
    store.close()


def test_parts_that_cannot_be_removed_after_compaction_lose_nothing(tmp_path, parts_always, monkeypatch, capfd):
    path = tmp_path / "s.parquet"
    real_unlink = type(path).unlink

    def immutable(self, *args, **kwargs):
        if results.PARTS_FOLDER in self.parts:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(type(path), "unlink", immutable)
    with results.StudyFile(path, SCHEMA) as store:
        for n in range(3):
            store.add(*run(n), {}, f"run {n}")
    err = capfd.readouterr().err
    assert err.count("warning:") == 1 and "could not be removed (permission denied)" in err
    assert sorted(pd.read_parquet(path)["run_id"].unique()) == [f"run{n:05d}" for n in range(3)]
    assert len(results.read_results(path)) == 12  # the parts left behind are not counted twice


def test_a_full_disk_with_runs_in_parts_says_where_they_are(tmp_path, parts_always, monkeypatch):
    import errno

    path = tmp_path / "s.parquet"
    store = results.StudyFile(path, SCHEMA)
    for n in range(3):
        store.add(*run(n), {}, f"run {n}")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "write_frames", full)
    with pytest.raises(results.EnvironmentFailure) as failure:
        store.add(*run(3), {}, "run 3")
    said = str(failure.value)
    assert said.startswith("disk full while saving run 3: 3 runs are saved in ")
    assert f"{path} and 2 part files in {results.parts_path(path)}" in said and "pandas sees the file's" in said
    assert len(pd.read_parquet(path)["run_id"].unique()) == 1 and len(results.read_results(path)) == 12
    store.lock.release()
