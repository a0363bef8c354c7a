"""metrics.jsonl under torn writes: a half-written last line is skipped by readers and dropped
on resume in one line; a bad line elsewhere names its file and line; a row is one `write`."""

import errno
import json

import pytest

from slacjax import durable, logger

TORN = '{"phase": "tr'  # what a kill during a row write leaves (13 bytes, no newline)


def rows_then_torn(run_dir, count: int = 3) -> bytes:
    """`count` rows written by the log, then a torn line -> the complete rows' bytes."""
    log = logger.MetricsLog(run_dir)
    for step in range(count):
        log.write({"phase": "train", "env_step": step, "loss": 0.5 + step})
    whole = (run_dir / logger.METRICS_FILE).read_bytes()
    with (run_dir / logger.METRICS_FILE).open("a") as file:
        file.write(TORN)
    return whole


def test_readers_skip_a_torn_last_line_and_say_where_it_is(tmp_path):
    rows_then_torn(tmp_path)
    assert [row["env_step"] for row in logger.read_rows(tmp_path)] == [0, 1, 2]
    path = tmp_path / logger.METRICS_FILE
    assert logger.read_metrics(tmp_path).torn == logger.TornLine(path, 4, 13)
    assert logger.MetricsLog(tmp_path).rows_written == 3


@pytest.mark.parametrize("kept", [2, 3])
def test_resume_drops_a_torn_line_in_one_line_and_keeps_the_checkpoints_rows(
        kept, tmp_path, capsys):
    whole = rows_then_torn(tmp_path)
    log = logger.MetricsLog(tmp_path)
    log.truncate(kept)
    path = tmp_path / logger.METRICS_FILE
    assert capsys.readouterr().out == (f"dropped {path}:4, a half-written last line (13 bytes: "
                                       "a row write cut off by a kill or a full disk)\n")
    assert path.read_bytes() == b"".join(whole.splitlines(keepends=True)[:kept])
    log.write({"phase": "train", "env_step": 9})  # the resumed run goes on after them
    assert [row["env_step"] for row in logger.read_rows(tmp_path)] == [*range(kept), 9]
    log.truncate(kept + 1)
    assert capsys.readouterr().out == ""  # nothing torn: nothing said


def test_complete_lines_have_no_torn_line(tmp_path):
    rows_then_torn(tmp_path)
    path = tmp_path / logger.METRICS_FILE
    path.write_bytes(path.read_bytes()[:-len(TORN)])
    assert logger.read_metrics(tmp_path).torn is None
    assert logger.parse_metrics(b"", path) == logger.Metrics([], [], None)


@pytest.mark.parametrize("line, reason", [
    (TORN.encode(), "not a JSON row (Unterminated string starting at: column 11)"),
    (b"\xc3(", "not a JSON row (not UTF-8 text)"),
    (b"[1, 2]", "not a JSON object but list")])
def test_a_bad_line_before_the_last_names_its_file_and_line(line, reason, tmp_path):
    path = tmp_path / logger.METRICS_FILE
    path.write_bytes(b'{"phase": "collect"}\n\n' + line + b'\n{"phase": "train"}\n')
    with pytest.raises(logger.MetricsError) as error:
        logger.read_rows(tmp_path)
    assert str(error.value) == f"{path}:3: {reason}"


def test_a_row_is_one_write_and_a_failed_one_leaves_no_half_row(tmp_path, monkeypatch):
    log = logger.MetricsLog(tmp_path)
    log.write({"phase": "collect", "env_step": 0})
    before = log.path.read_bytes()
    writes = []
    real_write = logger.os.write

    def record(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(logger.os, "write", record)
    row = {"phase": "eval", "env_step": 4, "returns_stochastic": [0.0, 950.0] * 50}
    log.write(row)
    assert writes == [(json.dumps(row) + "\n").encode()]

    def disk_full_half_way(fd, data):
        if len(data) > 20:  # the first call writes part of the row
            return real_write(fd, data[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logger.os, "write", disk_full_half_way)
    whole = log.path.read_bytes()
    with pytest.raises(durable.WriteError, match=rf"^could not write {log.path}: \[Errno 28\] "
                       r"No space left on device \(\d+\.\d MiB free\)$"):
        log.write({"phase": "train", "env_step": 8, "loss": 1.0})
    monkeypatch.undo()
    assert log.path.read_bytes() == whole and whole.startswith(before)
    assert logger.read_metrics(tmp_path).torn is None
