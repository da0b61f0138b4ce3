"""The asyncio shell around the protocol core: tunnel driver, channel bridges, hub, client, gateways."""
