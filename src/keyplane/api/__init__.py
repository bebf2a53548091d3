"""The HTTP adapter: FastAPI routers that parse, call a service and map the result."""
