"""Storage: the trio-asyncio bridge, the embedded servers, migrations and SQL query modules."""
