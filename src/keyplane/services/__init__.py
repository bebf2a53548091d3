"""Use cases composed from the domain and the storage adapters."""
