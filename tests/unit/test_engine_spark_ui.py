"""The session's Spark UI through the engine's jupyter_server (cdsw_agent/engine/spark_ui.py);
the proxying itself is proven against a real driver in tests/integration/test_three_hosts.py."""

from __future__ import annotations


def test_spark_ui_redirects_stay_under_the_sessions_prefix() -> None:
    from cdsw_agent.engine.spark_ui import handlers, rewrite_location

    prefix = "/api/v1/sessions/7/engine/cdsw/spark-ui"
    assert rewrite_location("http://127.0.0.1:4040/jobs/", prefix, 4040) == prefix + "/jobs/"
    assert rewrite_location("/jobs/?id=1", prefix, 4040) == prefix + "/jobs/?id=1"
    assert rewrite_location(prefix + "/jobs/", prefix, 4040) == prefix + "/jobs/"
    # elsewhere (the cluster's history server, a YARN proxy) is left alone
    assert rewrite_location("http://rm.example.com:8088/proxy/app_1/", prefix, 4040) == \
        "http://rm.example.com:8088/proxy/app_1/"
    assert rewrite_location("http://127.0.0.1:4041/", prefix, 4040) == "http://127.0.0.1:4041/"
    (pattern, _), = handlers("/api/v1/sessions/7/engine/")
    assert pattern == "/api/v1/sessions/7/engine/cdsw/spark-ui/?(.*)"
