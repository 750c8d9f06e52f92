"""The Open Inference Protocol (v2) for a deployed model, with plain HTTP following the
published spec (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol):
health, model metadata and readiness, inference with the access key as a Bearer token or the
accessKey parameter, beside CDSW's POST /model on the same replicas; refusals."""

from __future__ import annotations

import httpx

from .test_models_api import Models, models, ready  # noqa: F401  (the fixture)

MODEL_PY = """
def predict(args):
    if "x" in args:
        return {"doubled": [[2 * v for v in row] for row in args["x"]], "n": len(args["x"])}
    return {"sum": args["a"] + args["b"], "label": "ok", "flags": [True, False]}

def fail(args):
    raise ValueError("no")
"""


def test_v2_protocol_on_a_deployed_model(models: Models) -> None:  # noqa: F811
    m = models
    m.file("model.py", MODEL_PY)
    created = m.create(name="adder", file="model.py", function="predict",
                       example_input={"a": 1, "b": 2.5})
    key, model_id = created["access_key"], created["id"]
    url = m.master.url + "/v2"
    auth = {"Authorization": "Bearer " + key}

    # the server is live and ready whatever is deployed; the model is not ready before it is
    assert httpx.get(url + "/health/live").json() == {"live": True}
    assert httpx.get(url + "/health/ready").json() == {"ready": True}
    r = httpx.get(url + "/models/adder/ready", headers=auth)
    assert r.status_code == 503 and "no ready replica" in r.json()["error"]

    build = m.build(model_id)
    m.deploy(model_id, replicas=1)
    m.wait_deployment(model_id, ready(1), "a ready replica")
    r = httpx.get(url + "/models/adder/ready", headers=auth)
    assert r.status_code == 200 and r.json() == {"ready": True}
    meta = httpx.get(url + "/models/adder", headers=auth).json()
    assert meta["name"] == "adder" and meta["versions"] == [str(build["id"])]
    assert meta["inputs"] == [{"name": "a", "datatype": "INT64", "shape": [1]},
                              {"name": "b", "datatype": "FP64", "shape": [1]}]

    # inference: scalar inputs reach the function as values, outputs come back typed
    body = {"id": "req-1", "inputs": [
        {"name": "a", "shape": [1], "datatype": "INT64", "data": [2]},
        {"name": "b", "shape": [1], "datatype": "INT64", "data": [40]}]}
    r = httpx.post(url + "/models/adder/infer", json=body, headers=auth)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == "adder" and answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["sum"] == {"name": "sum", "datatype": "INT64", "shape": [1], "data": [42]}
    assert outputs["label"] == {"name": "label", "datatype": "BYTES", "shape": [1],
                                "data": ["ok"]}
    assert outputs["flags"] == {"name": "flags", "datatype": "BOOL", "shape": [2],
                                "data": [True, False]}
    # a tensor keeps its shape; the key may be a parameter; "outputs" choose what comes back
    r = httpx.post(url + "/models/%d/infer" % model_id, params={"accessKey": key}, json={
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64",
                    "data": [[1.0, 2.0], [3.0, 4.5]]}], "outputs": [{"name": "doubled"}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "doubled", "datatype": "FP64", "shape": [2, 2],
                                    "data": [2.0, 4.0, 6.0, 9.0]}]
    # the same replicas answer CDSW's shape
    r = m.call(key, {"a": 1, "b": 2})
    assert r.status_code == 200 and r.json()["response"]["sum"] == 3

    # refusals, in the protocol's {"error": ...} shape
    for headers, params, code in (({}, {}, 401), ({"Authorization": "Bearer cdswm_wrong"}, {},
                                                  401), (auth, {}, 404)):
        path = "/models/adder/infer" if code != 404 else "/models/other/infer"
        r = httpx.post(url + path, json=body, headers=headers, params=params)
        assert r.status_code == code and isinstance(r.json()["error"], str), r.text
    r = httpx.post(url + "/models/adder/infer", json={"inputs": "nope"}, headers=auth)
    assert r.status_code == 400 and "inputs" in r.json()["error"]
    r = httpx.post(url + "/models/adder/infer", headers=auth, json={"inputs": [
        {"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}]})  # b missing: KeyError
    assert r.status_code == 500 and "KeyError" in r.json()["error"], r.text
