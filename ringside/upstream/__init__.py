"""Provider adapters on httpx: every upstream call leaves the gateway through this package."""
