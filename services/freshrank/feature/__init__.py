"""Feature service: streaming user/item features in a SQL store, served over aiohttp on 8081."""
