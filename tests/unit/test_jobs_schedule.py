"""Cron schedules with time zones, catch-up after downtime, and dependency cycles (no services)."""

from __future__ import annotations

import datetime as dt

from pathlib import Path

import pytest

from cdsw_agent.jobs import graph, notify, schedule
from cdsw_agent.jobs.launch import LaunchError, check_script_path, command
from cdsw_agent.jobs.script import script_file
from cdsw_agent.store.jobs_models import Job

T = dt.datetime


@pytest.mark.parametrize("line", ["0 6 * * 1-5", "*/15 * * * *", "@daily", "  0  6 * * *  "])
def test_valid_cron_lines(line: str) -> None:
    assert schedule.validate_cron(line) == " ".join(line.split())


@pytest.mark.parametrize("line", ["", "* * * *", "61 * * * *", "0 0 * * * *", "every day",
                                  "@sometimes"])
def test_invalid_cron_names_schedule_and_says_how(line: str) -> None:
    with pytest.raises(schedule.ScheduleError) as e:
        schedule.validate_cron(line)
    assert e.value.field == "schedule"
    assert "five fields" in str(e.value) and repr(line) in str(e.value)


def test_unknown_time_zone() -> None:
    assert schedule.parse_timezone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(schedule.ScheduleError) as e:
            schedule.parse_timezone(bad)
        assert e.value.field == "timezone" and "IANA" in str(e.value)


def test_fire_times_follow_the_time_zone() -> None:
    # 06:00 in Berlin is 05:00 UTC in winter and 04:00 UTC in summer
    assert schedule.next_fire("0 6 * * *", "Europe/Berlin", T(2026, 1, 10, 12)) == T(2026, 1, 11, 5)
    assert schedule.next_fire("0 6 * * *", "Europe/Berlin", T(2026, 7, 10, 12)) == T(2026, 7, 11, 4)
    assert schedule.next_fire("0 6 * * *", "UTC", T(2026, 7, 10, 12)) == T(2026, 7, 11, 6)
    # a fire time exactly at now counts as due now
    assert schedule.previous_fire("0 6 * * *", "UTC", T(2026, 1, 1, 6)) == T(2026, 1, 1, 6)
    assert schedule.previous_fire("0 6 * * *", "UTC", T(2026, 1, 1, 5, 59)) == T(2025, 12, 31, 6)


def test_due_on_time_once() -> None:
    last = T(2026, 1, 1, 5, 30)
    assert schedule.due("0 6 * * *", "UTC", last, T(2026, 1, 1, 5, 59, 59)) is None
    d = schedule.due("0 6 * * *", "UTC", last, T(2026, 1, 1, 6, 0, 2))
    assert d == schedule.Due(T(2026, 1, 1, 6), "schedule")
    # once handled (last = the fire time), the same fire time is not due again
    assert schedule.due("0 6 * * *", "UTC", d.at, T(2026, 1, 1, 6, 0, 4)) is None
    assert schedule.due("0 6 * * *", "UTC", None, T(2026, 1, 1, 6)) is None  # new: counts from now


def test_downtime_is_made_up_by_one_catch_up_run() -> None:
    last = T(2026, 1, 1, 6, 0)
    now = T(2026, 1, 1, 9, 7)  # the master was down for three hours of an hourly job
    d = schedule.due("0 * * * *", "UTC", last, now)
    assert d == schedule.Due(T(2026, 1, 1, 9), "catch-up")
    # the next tick sees nothing more to make up
    assert schedule.due("0 * * * *", "UTC", d.at, now + dt.timedelta(seconds=2)) is None
    # one missed fire time found late is a catch-up too; found in time it is not
    assert schedule.due("0 * * * *", "UTC", T(2026, 1, 1, 8, 30), now).trigger == "catch-up"
    assert schedule.due("0 * * * *", "UTC", T(2026, 1, 1, 8, 30),
                        T(2026, 1, 1, 9, 0, 30)).trigger == "schedule"


def test_cycles_are_found_and_named() -> None:
    parents = {1: None, 2: 1, 3: 2, 4: None}
    assert graph.find_cycle(parents, 1, 3) == [1, 3, 2, 1]
    assert graph.find_cycle(parents, 1, 1) == [1, 1]
    assert graph.find_cycle(parents, 4, 3) is None
    assert graph.find_cycle(parents, 1, None) is None
    assert graph.find_cycle({1: 2, 2: 1, 3: None}, 3, 1) is None  # an old cycle elsewhere ends


def test_pipeline_graph() -> None:
    g = graph.pipeline({1: {"name": "a"}, 2: {"name": "b"}, 3: {"name": "c"}},
                       {1: None, 2: 1, 3: 1})
    assert [n["name"] for n in g["nodes"]] == ["a", "b", "c"]
    assert g["edges"] == [{"from": 1, "to": 2}, {"from": 1, "to": 3}]
    assert graph.children({1: None, 2: 1, 3: 1}, 1) == [2, 3]


def test_script_paths_and_interpreters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert check_script_path("./etl/load.py") == "etl/load.py"
    for bad in ("/etc/passwd.py", "../other/x.py", "a/../../x.py"):
        with pytest.raises(ValueError, match="inside the project"):
            check_script_path(bad)
    with pytest.raises(ValueError, match=r"\.py, \.R, \.sh or \.scala"):
        check_script_path("notes.txt")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "ok.py").write_text("")
    (tmp_path / "secret.py").write_text("")
    (tmp_path / "p" / "link.py").symlink_to(tmp_path / "secret.py")
    assert script_file(tmp_path / "p", "ok.py").name == "ok.py"
    for missing in ("nope.py", "link.py"):
        with pytest.raises(LaunchError, match="script %s not found" % missing):
            script_file(tmp_path / "p", missing)
    job = Job(script="fit.R", arguments="--alpha '0.5 1' x")
    assert command(job, "/venv/bin/python") == ["Rscript", "fit.R", "--alpha", "0.5 1", "x"]
    assert command(Job(script="a.sh", arguments=""), "/venv/bin/python")[0] == "bash"


def test_the_master_reads_a_job_script_through_no_link(tmp_path: Path) -> None:
    """The master reads scripts as root: a collaborator who makes the script, or a folder on
    its path, a symbolic link (even to a file inside the project, or after the job was saved)
    gets a refusal, never the bytes of what the link points at."""
    from cdsw_agent.jobs import script

    project, outside = tmp_path / "p", tmp_path / "other-users-home"
    (project / "jobs").mkdir(parents=True)
    outside.mkdir()
    (outside / "etl.py").write_text("SECRET = 'not yours'\n")
    (project / "jobs" / "etl.py").write_text("print('etl')\n")
    assert script.read(project, "jobs/etl.py") == b"print('etl')\n"
    assert script.current_digest(project, "jobs/etl.py") == script.digest(b"print('etl')\n")
    (project / "jobs").rename(project / "jobs-before")  # the folder swapped for a link
    (project / "jobs").symlink_to(outside)
    (project / "inside.py").symlink_to(project / "jobs-before" / "etl.py")
    for through in ("jobs/etl.py", "inside.py"):
        with pytest.raises(script.ThroughLink, match="symbolic link"):
            script.read(project, through)
        assert script.current_digest(project, through) == ""
    (project / "big.py").write_bytes(b"#" * (script.MAX_BYTES + 1))
    (project / "folder.py").mkdir()
    for bad, why in (("big.py", "over 16 MiB"), ("folder.py", "not found"),
                     ("nope.py", "not found")):
        with pytest.raises(LaunchError, match=why):
            script.read(project, bad)


def test_mail_content_and_choice() -> None:
    assert notify.wanted("failed", ["failure"], ["a@x"])
    assert notify.wanted("lost", ["failure"], ["a@x"])
    assert not notify.wanted("succeeded", ["failure"], ["a@x"])
    assert not notify.wanted("failed", ["failure"], [])
    assert notify.subject("etl", "timed_out") == "[CDSW] job etl timed out"
    text = notify.body("etl", "p", 7, "failed", 3, "exit code 3", T(2026, 1, 1, 6),
                       T(2026, 1, 1, 6, 0, 12), ["line %d" % i for i in range(50)])
    assert "Exit code: 3" in text and "Duration: 12.0 s" in text and text.endswith("line 49\n")
