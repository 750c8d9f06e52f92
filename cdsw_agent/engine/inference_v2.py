"""The Open Inference Protocol (v2, as KServe, Triton and Seldon speak it) over a model's
function, which is written for CDSW's request shape (one JSON value in, one out).

The mapping, decided here once:
- request: the function receives a dict {input name: data}. An input whose shape is [1] (or
  []) passes its single value, so a CDSW function taking {"a": 1, "b": 2} works unchanged;
  any other input passes its "data" list as sent (flat, in row-major order, or nested);
- response: a dict result gives one output per key; any other result one output named
  "output". A scalar has shape [1]; a list its shape (nested lists of equal lengths) with the
  data flattened; the datatype is BOOL, INT64, FP64 or BYTES (strings, and anything else as
  its JSON text). The request's "outputs", when given, choose which outputs come back.

It lives in the engine runtime (standard library only) because two servers speak it: the
master's /v2 routes (server/routes/inference_v2.py) and a model bundle's own replica at the
edge (engine/model_edge.py), which runs with no workbench.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple


class InferenceError(ValueError):
    """A request that does not follow the protocol: answered 400 {"error": message}."""


def function_input(body: Any) -> Dict[str, Any]:
    """The function's argument for a v2 inference request body."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) \
            or not body["inputs"]:
        raise InferenceError("the request needs \"inputs\": [{\"name\", \"shape\", "
                             "\"datatype\", \"data\"}, ...]")
    out: Dict[str, Any] = {}
    for item in body["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not item["name"] or "data" not in item:
            raise InferenceError("each input needs a \"name\" and its \"data\"")
        shape = item.get("shape", [])
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  for d in shape):
            raise InferenceError("input %s: \"shape\" must be a list of integers" % item["name"])
        data = item["data"]
        if shape in ([], [1]) and isinstance(data, list) and len(data) == 1:
            data = data[0]
        out[item["name"]] = data
    return out


def _shape(value: List[Any]) -> Tuple[List[int], List[Any]]:
    """Shape and flattened data of a (nested) list; ragged lists stay one-dimensional."""
    if value and all(isinstance(v, list) for v in value):
        inner = [_shape(v) for v in value]
        if all(s == inner[0][0] for s, _ in inner):
            return [len(value)] + inner[0][0], [x for _, d in inner for x in d]
    return [len(value)], list(value)


def _datatype(data: List[Any]) -> Tuple[str, List[Any]]:
    if data and all(isinstance(v, bool) for v in data):
        return "BOOL", data
    if all(isinstance(v, int) and not isinstance(v, bool) for v in data):
        return "INT64", data
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        return "FP64", [float(v) for v in data]
    return "BYTES", [v if isinstance(v, str) else json.dumps(v) for v in data]


def output(name: str, value: Any) -> Dict[str, Any]:
    shape, data = _shape(value) if isinstance(value, list) else ([1], [value])
    datatype, data = _datatype(data)
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def response(model_name: str, version: Optional[str], body: Dict[str, Any], result: Any
             ) -> Dict[str, Any]:
    items = result.items() if isinstance(result, dict) else [("output", result)]
    outputs = [output(str(k), v) for k, v in items]
    wanted = [o.get("name") for o in body.get("outputs") or [] if isinstance(o, dict)]
    if wanted:
        outputs = [o for o in outputs if o["name"] in wanted]
    answer: Dict[str, Any] = {"model_name": model_name, "outputs": outputs}
    if version:
        answer["model_version"] = version
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    return answer


def metadata(model_name: str, versions: List[str], example_input: Any) -> Dict[str, Any]:
    """The model's metadata; its inputs are read off its example input when it is a dict."""
    inputs = []
    if isinstance(example_input, dict):
        for k, v in example_input.items():
            o = output(str(k), v)
            inputs.append({"name": o["name"], "datatype": o["datatype"], "shape": o["shape"]})
    return {"name": model_name, "versions": versions, "platform": "cdsw_python_function",
            "inputs": inputs, "outputs": []}
