# Run this file in a Python session, or as a job: the table and the plots show in the console
# (and on the job run's page).
import math

rows = [{"x": x, "sin": round(math.sin(x / 4), 3)} for x in range(12)]
print("first rows:", rows[:3])

try:
    import pandas as pd
    df = pd.DataFrame(rows)
    display(df)  # noqa: F821 - defined by IPython in a session
except ImportError:
    print("pandas is not installed in this engine")

try:
    import matplotlib.pyplot as plt
    plt.plot([r["x"] for r in rows], [r["sin"] for r in rows])
    plt.title("sin(x/4)")
    plt.show()
except ImportError:
    print("matplotlib is not installed in this engine")

try:
    import plotly.express as px
    # interactive: zoom, pan and hover; drawn by the workbench, no internet needed
    px.scatter(x=[r["x"] for r in rows], y=[r["sin"] for r in rows],
               labels={"x": "x", "y": "sin(x/4)"}, title="sin(x/4), interactive").show()
except ImportError:
    print("plotly is not installed in this engine")
