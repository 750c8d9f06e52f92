"""Interactive sessions: an engine running jupyter_server for its launcher, reached only through
the master (manager.py starts, follows and stops them; engine_client.py talks to the engine;
proxy.py forwards HTTP and WebSocket traffic; transcript.py keeps the console log)."""
