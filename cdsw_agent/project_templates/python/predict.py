"""Deploy as a model: file predict.py, function predict, example input {"x": 3}."""


def predict(args):
    x = float(args.get("x", 0))
    return {"y": 2 * x + 1}
