"""MLflow search filters and ordering as the tracking API reads them
(experiments/mlflow_store.py): the clauses the mlflow client sends, and one-line refusals."""

from __future__ import annotations

import pytest

from cdsw_agent.experiments import mlflow_store as store


def test_clauses_are_parsed() -> None:
    assert store.parse_filter("metrics.acc > 0.9 and params.lr = '0.1' AND tags.`a b` != 'x'") \
        == [("metrics", "acc", ">", 0.9), ("params", "lr", "=", "0.1"),
            ("tags", "a b", "!=", "x")]
    assert store.parse_filter("attributes.status IN ('FINISHED', 'FAILED')") \
        == [("attributes", "status", "IN", ["FINISHED", "FAILED"])]
    assert store.parse_filter("run_name LIKE 'tr%'") == [("attributes", "run_name", "LIKE",
                                                          "tr%")]
    assert store.parse_filter("params.note = 'it''s'") == [("params", "note", "=", "it's")]
    assert store.parse_filter("") == []


@pytest.mark.parametrize("text", ["metrics.acc >", "nonsense", "bogus.x = 1", "a = 1 or b = 2"])
def test_bad_filters_are_refused(text: str) -> None:
    with pytest.raises(store.MlflowError) as e:
        store.parse_filter(text)
    assert e.value.code == "INVALID_PARAMETER_VALUE" and e.value.status == 400


def test_matching_and_ordering() -> None:
    assert store._match(0.95, ">", 0.9) and not store._match("0.8", ">", 0.9)
    assert store._match("train-1", "LIKE", "train%") and store._match("TRAIN", "ILIKE", "tr%")
    assert store._match("a", "NOT LIKE", "b%") and not store._match(None, "=", "x")
    rows = [{"m": 0.5}, {"m": None}, {"m": 0.9}, {"m": 0.1}]
    ordered = store._ordered(rows, ["metrics.m DESC"], lambda r, kind, key: r[key])
    assert [r["m"] for r in ordered] == [0.9, 0.5, 0.1, None]  # missing values last
    page, token = store._page(list(range(5)), {"max_results": 2})
    assert page == [0, 1] and token == "2"
    assert store._page(list(range(5)), {"max_results": 2, "page_token": "4"}) == ([4], None)
