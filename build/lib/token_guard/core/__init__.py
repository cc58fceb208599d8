"""The decision core: the token model, routes, SQL, origins and policy. No I/O, no framework.

Everything here is a pure function of its inputs (configuration compiled once, then values),
so it is tested with hypothesis and shared by every transport. The request path that drives
it is ``token_guard.guard`` (the conductor) over ``token_guard.resolver`` (the token cache);
stores, adapters, management and the faces (CLI, demo, web page) sit around it.
"""
