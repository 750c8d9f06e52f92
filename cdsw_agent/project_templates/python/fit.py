"""An experiment: python fit.py --alpha 0.5"""
import argparse

try:
    import cdsw
except ImportError:  # outside the workbench
    cdsw = None

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, default=0.1)
args = parser.parse_args()

loss = (args.alpha - 0.3) ** 2
print("alpha=%s loss=%.4f" % (args.alpha, loss))
if cdsw is not None:
    cdsw.track_metric("alpha", args.alpha)
    cdsw.track_metric("loss", loss)
