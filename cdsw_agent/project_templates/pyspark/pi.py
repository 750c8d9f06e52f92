# Run in a Python session on an engine with Spark; uses the cluster's spark-defaults.
import random
from operator import add

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("cdsw-pi").getOrCreate()
n = 100000


def inside(_):
    x, y = random.random(), random.random()
    return 1 if x * x + y * y <= 1 else 0


count = spark.sparkContext.parallelize(range(n), 4).map(inside).reduce(add)
print("pi is roughly %f" % (4.0 * count / n))
spark.stop()
