"""token_guard's benchmarks: ``python -m benchmarks [--quick] [--json PATH]``.

Every section measures token_guard side by side with what a user would otherwise pick, in
one run and interleaved, and reports ratios: absolute times drift on shared machines, ratios
measured together do not. See benchmarks/README.md for the latest full run.
"""
