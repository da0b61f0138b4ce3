"""What the commands run, built from plain config values: ``config`` (the hub's and the client's
configuration, parsed once from the option values that the command line and a TOML file both give),
``hub`` and ``client`` (start the asyncio shell from a config, with its status socket, metrics
and dial-out loops, and stop it). No argparse here, no exit codes: those belong to the CLI.
"""
