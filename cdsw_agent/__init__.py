"""cdsw_agent: an open data-science workbench run as a Hadoop cluster service.

The version below is the single source of truth: setup.py, build.sh, the CSD,
the parcel and the management pack all read it from here.
"""

__version__ = "0.1.0"
