"""A role started by a cluster manager logs to the rotated file the SDL's logging block names
($CDSW_LOG_FILE, set by the start runner), redacted like its stderr."""

from __future__ import annotations

import logging

from cdsw_agent import logs


def test_role_log_file_is_written_redacted_and_rotated(tmp_path, monkeypatch):
    path = tmp_path / "log" / "cdsw-master.log"
    monkeypatch.setenv("CDSW_LOG_FILE", str(path))
    monkeypatch.setenv("CDSW_LOG_MAX_MB", "1")
    monkeypatch.setenv("CDSW_LOG_BACKUPS", "2")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup_logging("info", ["s3cr3t-value"])
        log = logging.getLogger("cdsw_agent.test")
        for _ in range(3000):  # about 3 MB: rotated at 1 MB, two backups kept
            log.info("x" * 1000)
        log.info("joined with s3cr3t-value")
        for h in root.handlers:
            h.flush()
        first = sorted(p.name for p in path.parent.iterdir())
        assert first == ["cdsw-master.log", "cdsw-master.log.1", "cdsw-master.log.2"]
        text = "".join(p.read_text() for p in path.parent.iterdir())
        assert "s3cr3t-value" not in text
        assert "cdsw_agent.test: joined with ****" in path.read_text()
        logs.setup_logging("info")  # the master sets logging up twice: still one file handler
        files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert len(files) == 1
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_no_file_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CDSW_LOG_FILE", raising=False)
    assert logs.file_handler(logging.Formatter()) is None
