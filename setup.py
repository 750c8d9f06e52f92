"""Package metadata for cdsw_agent. The version lives in cdsw_agent/__init__.py only."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "cdsw_agent" / "__init__.py").read_text()).group(1)

LOCAL_ENGINE = ["jupyter_server>=2.10", "ipykernel>=6.25", "terminado>=0.18", "matplotlib>=3.7",
                "pandas>=1.5",
                # interactive plots, drawn by the plotly.js that web/package.json pins: the
                # version the image's plotly (images/recipe.py) bundles
                "plotly==7.1.0",
                # a session's web apps under proxy/PORT/ (4.1.1 closed an unauthenticated
                # websocket path; the image pins its version)
                "jupyter-server-proxy>=4.1.1"]

setup(
    name="cdsw-agent",
    version=VERSION,
    description="An open data-science workbench operated as a Hadoop cluster service",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_namespace_packages(include=["cdsw_agent", "cdsw_agent.*", "cdsw"]),
    include_package_data=True,
    package_data={"cdsw_agent": ["templates/*", "templates/**/*", "store/migrations/*",
                                 "store/migrations/versions/*", "project_templates/**/*",
                                 "project_templates/*/*", "project_templates/*/.*",
                                 "web/templates/*", "web/static/*/*", "web/package.json",
                                 "web/package-lock.json"]},
    install_requires=[
        "click>=8.1",
        "jinja2>=3.1",
        "requests>=2.28",
        "fastapi>=0.110",
        "uvicorn>=0.23",
        "python-multipart>=0.0.9",
        "sqlalchemy>=2.0",
        "alembic>=1.12",
        "psycopg[binary]>=3.1",
        "argon2-cffi>=23.1",
        "zxcvbn>=4.4.28",  # its list of common passwords, refused for new passwords
        "ldap3>=2.9",
        "docker>=7.0",
        "croniter>=2.0",
        "cryptography>=41",
        "markdown-it-py>=3.0",
        "httpx>=0.25",  # the router's HTTP proxy to engines
        "sniffio>=1.3",  # without it httpx tries (and fails) to import it on every request
        # uvicorn picks these up by itself: a C HTTP parser and a faster event loop; the model
        # router parses replicas' answers with httptools too (models/replica_client.py)
        "httptools>=0.6",
        "uvloop>=0.19",
        "websockets>=15.0",  # the router's WebSocket proxy and kernel channel client
        # the project list's JSON: 20x the standard library's speed, the same bytes
        # (benchmarks/README.md, issue 14)
        "orjson>=3.9",
    ],
    extras_require={
        # sessions on the local backend (`cdsw standalone` without Docker) run the engine as a
        # process on this host: what the engine image holds (cdsw_agent/images/recipe.py)
        "local": LOCAL_ENGINE,
        "test": ["pytest>=7", "pytest-timeout>=2.2", "httpx>=0.25", "schemathesis>=3.30",
                 "aiohttp>=3.9",  # benchmarks/loadgen.py, the benchmarks' load generator
                 "cm-client>=45.0.4",  # tests/packaging/test_cm_deploy.py
                 "aiosmtpd>=1.4", "playwright>=1.40",
                 # a Python 2.7 grammar check of the Ambari scripts where no python2.7 exists
                 "vermin>=1.6",
                 # JupyterLab through the engine origin, in Chromium (tests/browser)
                 "jupyterlab>=4",
                 # the MLflow client against /mlflow (tests/integration/test_mlflow_tracking.py)
                 "mlflow-skinny>=2.10",
                 # decodes monitoring/grafana/*.json (tests/integration/test_dashboards.py)
                 "grafana-foundation-sdk; python_version >= '3.11'"] + LOCAL_ENGINE,
        # scripts/cm_deploy.py talks to Cloudera Manager through Cloudera's API client
        "deploy": ["cm-client>=45.0.4"],
        "dev": ["pytest>=7", "pytest-timeout>=2.2", "httpx>=0.25", "schemathesis>=3.30",
                "aiosmtpd>=1.4", "ruff", "aiohttp>=3.9",
                "py-spy>=0.3"],  # benchmarks/model_serving.py --profile
    },
    entry_points={"console_scripts": ["cdsw = cdsw_agent.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
