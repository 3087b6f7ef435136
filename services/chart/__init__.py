"""The Helm chart's generated files (helm/wallet-mesh/files/, values.schema.json), made
from the service catalogue and the edge's template by `make gen`."""
