"""One module per report section; each exposes ``async def run(ctx) -> Result``."""
