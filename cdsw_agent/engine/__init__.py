"""Code that runs inside engine containers.

It is copied into every engine image (see cdsw_agent/images/runtime.py), so it may import only the
standard library and what the image's wheelhouse holds, never the rest of cdsw_agent.
"""
