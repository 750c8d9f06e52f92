"""The `cdsw` command line. Entry point: cdsw_agent.cli.main:main."""
