"""The hiring pipeline example: a declared workflow, its tools, and a runner."""
