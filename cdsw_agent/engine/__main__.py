"""`python -m cdsw_agent.engine`: the engine image's default command."""

from .entrypoint import main

main()
