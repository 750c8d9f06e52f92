# Run this file in a Python session: the table and the plot show in the console.
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
