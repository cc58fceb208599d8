"""Transports: ASGI (Starlette, FastAPI) and WSGI (Flask) adapters around the conductor.

They only translate: read the request line and headers, read and replay a body when the
guard asks for it, hop onto the event loop (WSGI), and write the response.
"""
