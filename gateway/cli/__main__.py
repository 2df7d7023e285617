"""``python -m gateway.cli``: the same program as the ``blindpost`` script."""

from gateway.cli import run

run()
