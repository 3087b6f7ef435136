"""A fault-injection suite of our own: Jepsen's bank workload against a mesh of its own,
through the edge, while a seeded schedule of faults runs (`make chaos`; a short run is
part of `make test`, in test_chaos.py). See run.py for the order of things."""
