"""Drop-in replacements for the libraries Keyplane's users come from.

- :mod:`keyplane.compat.api_service_handler`: seed 002's ``api-service-handler`` package
  (``APIServiceHandler``, its models, exceptions and the ``ash`` command), on Keyplane's vault.

The HTTP compatibility surfaces (OpenRouter/AnyAPI, FastRouter) are routes: ``keyplane.api.compat``.
"""
