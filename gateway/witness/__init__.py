"""``blindpost witness``: a C2SP tlog-witness that partners and regulators run.

It cosigns a gateway's audit checkpoints only if each is consistent with every one it
cosigned before, so the gateway can never show two histories. It runs from the client
install (``cryptography``, ``click`` and the standard library): nothing here imports the
gateway's database layer.
"""
