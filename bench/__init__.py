"""The benchmark harness behind `make bench`: what a transfer costs end to end.

It starts a mesh of its own, seeds wallets straight into the ledger, measures the SQL floor
(pgbench calling the same `ledger_transfer` the service calls), then the same transfers
through Envoy and the services (ghz for gRPC, wrk for REST), reads with and without the
Redis cache, and the edge's overhead; it audits the ledger after all of it and writes
`bench/results/<UTC timestamp>/`. See README "Benchmarks".
"""
