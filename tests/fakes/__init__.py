"""Fakes, one module per service or provider: user, ledger (the transaction service),
gateway, ratelimit for the domain tests; stripe_api and paypal_api, the providers' HTTP
APIs on loopback, for the connectors and the mesh."""
