"""The Scala REPL of an engine's Scala kernel (engine/scala_kernel.py), and where it can run.

The kernel is a Jupyter kernel over Spark's own Scala REPL, run on the cluster's Spark (or any Spark
whose jars/ hold the Scala compiler and spark-repl): the JVM is started exactly as `pyspark` starts
its driver (pyspark.java_gateway.launch_gateway: `spark-submit pyspark-shell`, so the engine's
spark-defaults.conf, driver host and ports apply), and the kernel drives the Scala compiler's
interpreter (scala.tools.nsc.interpreter.IMain) in it through py4j. As in spark-shell, classes that
cells define are written to a private folder that the driver serves to the executors
(spark.repl.class.outputDir), and `spark` and `sc` are ready (started on first use).

Completion is the REPL's own (ReplCompletion, the one spark-shell's Tab uses). Output: what the code
prints comes live from the JVM's stdout; the REPL's echo of definitions and values (`val x: Int =
3`) follows, as in spark-shell; a compile error or an exception is the cell's error. The JVM's
stderr (Spark's log) goes to the kernel's own stderr, the engine log.

Why not Apache Toree or almond: Toree's last release (0.5.0, 2022) is built for Scala 2.12 and Spark
3 and cannot load Spark 4's Scala 2.13; almond installs with coursier from Maven Central, which the
workbench's hosts need not reach. This kernel needs nothing but the cluster's Spark and Java: its
Scala is the one the cluster's Spark was built with. Scala 2.13 (Spark 4, and Spark 3 built for it)
is what the tests run; a Spark built for Scala 2.12 (most Spark 3 parcels) gets the 2.12 REPL's
IMain(settings, writer) and PresentationCompilerCompleter, which no test here runs.
"""

from __future__ import annotations

import codecs
import glob
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

KERNEL_NAME = "scala"
MODULE = "cdsw_agent.engine.scala_kernel"  # the kernel process (ipykernel)
# the Scala the REPL needs, in the Spark home's jars/
REQUIRED_JARS = ("scala-compiler-*.jar", "spark-repl_*.jar")
STARTUP_TIMEOUT = 300.0  # the JVM and the compiler's first run (a loaded machine: a minute)

LANGUAGE_INFO = {"name": "scala", "mimetype": "text/x-scala", "file_extension": ".scala",
                 "codemirror_mode": "text/x-scala", "pygments_lexer": "scala"}


class ScalaUnavailable(Exception):
    """No Spark with Scala or no Java here: one line saying what to set."""


def spark_home(env: Mapping[str, str]) -> Optional[str]:
    """$SPARK_HOME when its jars/ hold the Scala compiler and Spark's REPL."""
    home = env.get("SPARK_HOME", "")
    if home and all(glob.glob(os.path.join(home, "jars", p)) for p in REQUIRED_JARS):
        return home
    return None


def java_bin(env: Mapping[str, str]) -> Optional[str]:
    home = env.get("JAVA_HOME", "")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java", path=env.get("PATH", os.defpath))


def scala_version(home: str) -> str:
    """2.13.18 from jars/scala-library-2.13.18.jar; "" when not found."""
    for jar in glob.glob(os.path.join(home, "jars", "scala-library-*.jar")):
        m = re.match(r"scala-library-(\d+\.\d+\.\d+)\.jar$", os.path.basename(jar))
        if m:
            return m.group(1)
    return ""


def available(env: Mapping[str, str]) -> bool:
    """Whether this kernel can start with env: a Spark with Scala and a Java."""
    return spark_home(env) is not None and java_bin(env) is not None


def kernelspec(python: str) -> Dict[str, Any]:
    return {"argv": [python, "-I", "-m", MODULE, "-f", "{connection_file}"],
            "display_name": "Scala", "language": "scala", "interrupt_mode": "signal"}


def write_kernelspec(kernels_dir: str, python: str) -> str:
    """KERNELS_DIR/scala/kernel.json (KERNELS_DIR is a Jupyter data folder's kernels/)."""
    target = os.path.join(kernels_dir, KERNEL_NAME)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "kernel.json"), "w") as f:
        json.dump(kernelspec(python), f, indent=1)
    return target


def _scala_string(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid Scala string literal (\\, \", \n, \uXXXX)


def init_code(outdir: str, app_name: str) -> str:
    """`spark` and `sc` as in spark-shell, started on first use; classes of cells go to outdir,
    which the driver serves to the executors."""
    return (
        "@transient lazy val spark: org.apache.spark.sql.SparkSession = "
        "org.apache.spark.sql.SparkSession.builder()"
        ".appName(sys.props.get(\"spark.app.name\").filter(_ != \"pyspark-shell\")"
        ".getOrElse(%s))"
        ".config(\"spark.repl.class.outputDir\", %s)"
        ".config(\"spark.ui.showConsoleProgress\", \"false\").getOrCreate()\n"
        "@transient lazy val sc: org.apache.spark.SparkContext = spark.sparkContext\n"
        % (_scala_string(app_name), _scala_string(outdir)))


class Interpreter:
    """The JVM (spark-submit's driver with a py4j gateway) and the Scala REPL in it."""

    def __init__(self, env: Mapping[str, str]):
        home = spark_home(env)
        if home is None:
            raise ScalaUnavailable(
                "no Spark with Scala in this engine (SPARK_HOME=%s has no jars/scala-compiler "
                "or spark-repl jar); the Scala kernel runs on the cluster's Spark: set "
                "cluster_client_kind and cluster_client_dirs on the master"
                % (env.get("SPARK_HOME") or "unset"))
        if java_bin(env) is None:
            raise ScalaUnavailable("no Java in this engine (JAVA_HOME=%s); set java_home on the "
                                   "master" % (env.get("JAVA_HOME") or "unset"))
        self.home = home
        self.version = scala_version(home)
        self.outdir = tempfile.mkdtemp(prefix="cdsw-scala-classes-")
        self.output: "queue.Queue[str]" = queue.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.gateway: Any = None
        self.proc: Optional[subprocess.Popen] = None

    # --- starting
    def start(self, app_name: str, capture_stdout: bool = True) -> None:
        """Starts the JVM and the REPL. What the code prints comes through `output` with
        capture_stdout (a kernel sends it as the cell's stream), else straight to this process's
        stdout (a job's log)."""
        lib = os.path.join(self.home, "python", "lib")
        for entry in [os.path.join(self.home, "python")] + sorted(
                glob.glob(os.path.join(lib, "py4j-*-src.zip"))) + [
                os.path.join(lib, "pyspark.zip")]:
            if os.path.exists(entry) and entry not in sys.path:
                sys.path.append(entry)
        from pyspark.java_gateway import launch_gateway  # the cluster's own pyspark

        # never attach to a gateway somebody else started (launch_gateway would)
        for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
            os.environ.pop(name, None)
        self.gateway = launch_gateway(popen_kwargs={
            "stdout": subprocess.PIPE if capture_stdout else 1, "stderr": 2})
        self.proc = getattr(self.gateway, "proc", None)
        if self.proc is not None and self.proc.stdout is not None:
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,),
                             name="scala-stdout", daemon=True).start()
        jvm = self.gateway.jvm
        nsc = jvm.scala.tools.nsc
        settings = nsc.Settings()
        args = jvm.java.util.ArrayList()
        for a in ("-usejavacp", "-Yrepl-class-based", "-Yrepl-outdir", self.outdir):
            args.add(a)
        settings.processArguments(
            jvm.scala.collection.JavaConverters.asScalaBufferConverter(args).asScala().toList(),
            True)
        self.echo = jvm.java.io.StringWriter()
        writer = jvm.java.io.PrintWriter(self.echo, True)
        if self.version.startswith("2.12"):
            self.intp = nsc.interpreter.IMain(settings, writer)
            self.completer = nsc.interpreter.PresentationCompilerCompleter(self.intp)
        else:  # 2.13
            reporter = nsc.interpreter.shell.ReplReporterImpl(settings, writer)
            self.intp = nsc.interpreter.IMain(settings, reporter)
            self.completer = nsc.interpreter.shell.ReplCompletion(
                self.intp, nsc.interpreter.shell.Accumulator())
        status, text = self.interpret(init_code(self.outdir, app_name))
        if status != "Success":
            raise ScalaUnavailable("the Scala REPL did not start: %s" % text.strip())

    def _read_stdout(self, stream: Any) -> None:
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text = self._decoder.decode(chunk)
            if text:
                self.output.put(text)

    # --- running
    def interpret(self, code: str) -> Tuple[str, str]:
        """(Success | Error | Incomplete, the REPL's echo). Not thread-safe: one at a time."""
        self.echo.getBuffer().setLength(0)
        result = self.intp.interpret(code)
        return str(result.toString()), str(self.echo.toString())

    def flush_marker(self) -> str:
        """Writes a unique marker to the JVM's stdout after what the code printed."""
        marker = "\x00cdsw-%d-%f\x00" % (os.getpid(), time.time())
        out = self.gateway.jvm.System.out
        out.flush()
        out.print(marker)
        out.flush()
        return marker

    def complete(self, code: str, cursor: int) -> Tuple[List[str], int]:
        """(matches, where they start) from the REPL's completion."""
        jvm = self.gateway.jvm
        if self.version.startswith("2.12"):
            found = self.completer.complete(code, cursor)
            names = [str(c) for c in jvm.scala.collection.JavaConverters
                     .seqAsJavaListConverter(found.candidates()).asJava()]
            start = int(found.cursor())
        else:
            found = self.completer.complete(code, cursor, True)
            names = [str(c.name()) for c in jvm.scala.collection.JavaConverters
                     .seqAsJavaListConverter(found.candidates()).asJava()]
            start = int(found.cursor())
        seen: Dict[str, None] = {}
        for n in names:
            if n and not n.startswith("<"):
                seen.setdefault(n, None)
        return list(seen), start if 0 <= start <= len(code) else cursor

    def cancel_spark_jobs(self) -> bool:
        try:
            active = self.gateway.jvm.org.apache.spark.sql.SparkSession.getDefaultSession()
            if active.isDefined():
                active.get().sparkContext().cancelAllJobs()
                return True
        except Exception:  # noqa: BLE001 - best effort on an interrupt
            pass
        return False

    def shutdown(self) -> None:
        try:
            if self.gateway is not None:
                self.cancel_spark_jobs()
                try:  # the application ends as finished, its executors released
                    active = self.gateway.jvm.org.apache.spark.sql.SparkSession \
                        .getDefaultSession()
                    if active.isDefined():
                        active.get().stop()
                except Exception:  # noqa: BLE001 - the JVM may be gone already
                    pass
                self.gateway.shutdown()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
            if self.proc is not None:
                try:  # Spark's shutdown hooks clean up first
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.outdir, ignore_errors=True)


ERROR_LINE = re.compile(r"^\s*(?:On line \d+: )?error: (.*)$")
REPL_PROMPT_WIDTH = 7  # "scala> ": the REPL's messages are indented to the code after it


def error_parts(status: str, echo: str, code: str = "") -> Tuple[str, str, List[str]]:
    """(ename, evalue, traceback lines) of a cell that failed. The REPL points at an error in
    the first line of the code with a caret alone (the line is above it, after the prompt):
    that line is put back, and the REPL's indentation taken off."""
    lines = echo.rstrip("\n").split("\n") if echo.strip() else []
    if lines and lines[0].strip() == "^" and code.strip():
        lines.insert(0, " " * REPL_PROMPT_WIDTH + code.lstrip("\n").split("\n")[0])
    lines = textwrap.dedent("\n".join(lines)).split("\n") if lines else []
    if status == "Incomplete":
        return "Incomplete", "the code is incomplete (an unclosed bracket, string or block)", \
            lines or ["incomplete input"]
    for line in lines:
        m = ERROR_LINE.match(line)
        if m:
            return "CompileError", m.group(1).strip(), lines
    head = next((ln.strip() for ln in lines if ln.strip()), "error")
    name, _, value = head.partition(": ")
    return name or "Exception", value or head, lines
