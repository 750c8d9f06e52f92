"""The Open Inference Protocol mapping (models/inference_v2.py): v2 inputs to the function's
argument, and the function's result to typed v2 outputs."""

from __future__ import annotations

import pytest

from cdsw_agent.engine import inference_v2 as v2


def test_inputs_become_a_dict_and_single_values_unwrap() -> None:
    body = {"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [3]},
                       {"name": "s", "shape": [], "datatype": "BYTES", "data": ["x"]},
                       {"name": "t", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                       {"name": "one", "shape": [1, 1], "datatype": "FP32", "data": [[5]]}]}
    assert v2.function_input(body) == {"a": 3, "s": "x", "t": [1, 2, 3, 4], "one": [[5]]}


@pytest.mark.parametrize("body", [None, {}, {"inputs": []}, {"inputs": "x"},
                                  {"inputs": [{"name": "a"}]}, {"inputs": [{"data": [1]}]},
                                  {"inputs": [{"name": "a", "shape": "1", "data": [1]}]},
                                  {"inputs": [{"name": "a", "shape": [True], "data": [1]}]}])
def test_malformed_requests_are_refused_in_one_line(body: object) -> None:
    with pytest.raises(v2.InferenceError) as e:
        v2.function_input(body)
    assert "\n" not in str(e.value)


def test_results_become_typed_outputs() -> None:
    answer = v2.response("m", "7", {"id": "r1"}, {
        "n": 2, "x": 0.5, "ok": True, "label": "cat", "grid": [[1, 2.5], [3, 4]],
        "ragged": [[1], [2, 3]], "obj": {"k": 1}})
    out = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_name"] == "m" and answer["model_version"] == "7" and answer["id"] == "r1"
    assert out["n"] == {"name": "n", "datatype": "INT64", "shape": [1], "data": [2]}
    assert out["x"]["datatype"] == "FP64" and out["ok"]["datatype"] == "BOOL"
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]}
    assert out["grid"] == {"name": "grid", "datatype": "FP64", "shape": [2, 2],
                           "data": [1.0, 2.5, 3.0, 4.0]}
    assert out["ragged"]["shape"] == [2] and out["ragged"]["datatype"] == "BYTES"
    assert out["obj"]["data"] == ['{"k": 1}']
    # a result that is not a dict is one output; "outputs" choose what comes back
    assert v2.response("m", None, {}, [1, 2])["outputs"] == [
        {"name": "output", "datatype": "INT64", "shape": [2], "data": [1, 2]}]
    chosen = v2.response("m", None, {"outputs": [{"name": "n"}]}, {"n": 1, "x": 2})
    assert [o["name"] for o in chosen["outputs"]] == ["n"]


def test_metadata_reads_inputs_off_the_example() -> None:
    meta = v2.metadata("m", ["3"], {"a": 1, "v": [0.1, 0.2]})
    assert meta["inputs"] == [{"name": "a", "datatype": "INT64", "shape": [1]},
                              {"name": "v", "datatype": "FP64", "shape": [2]}]
    assert v2.metadata("m", [], "free text")["inputs"] == []
