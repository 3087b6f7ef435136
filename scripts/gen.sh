#!/usr/bin/env bash
# Regenerates everything in gen/ from protos/: Python modules and type stubs,
# the descriptor set Envoy's gRPC-JSON transcoder loads, and the OpenAPI 3
# document of the REST surface. Run through `make gen`; never edit gen/ by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
openapi_plugin=$1

# google/api and google/rpc protos come from the googleapis-common-protos wheel.
googleapis=$(python -c 'import pathlib, google.api.annotations_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')
mapfile -t wallet_protos < <(cd protos && find wallet -name '*.proto' | LC_ALL=C sort)
protoc=(python -m grpc_tools.protoc -I protos -I "$googleapis")

rm -rf gen/python gen/descriptors gen/openapi
mkdir -p gen/python gen/descriptors gen/openapi

"${protoc[@]}" \
  --python_out=gen/python --mypy_out=gen/python \
  --grpc_python_out=gen/python --mypy_grpc_out=gen/python \
  "${wallet_protos[@]}"

# Envoy needs every import in the set, and google/rpc's status and error
# details so that BadRequest field violations reach REST clients.
"${protoc[@]}" --include_imports --include_source_info \
  --descriptor_set_out=gen/descriptors/wallet.pb \
  "${wallet_protos[@]}" google/rpc/status.proto google/rpc/error_details.proto

# The plugin is written in Go and insists on a Go package per file; the
# contracts are not used from Go, so name one on the command line instead.
go_packages=()
for proto in "${wallet_protos[@]}"; do
  go_packages+=("--openapi_opt=M$proto=wallet.example/$(dirname "$proto")")
done
"${protoc[@]}" --plugin=protoc-gen-openapi="$openapi_plugin" "${go_packages[@]}" \
  --openapi_out=naming=proto,fq_schema_naming=true,title='Wallet mesh',version=v1:gen/openapi \
  "${wallet_protos[@]}"

# Files without a service get an empty *_pb2_grpc module: drop it.
for grpc_module in $(find gen/python -name '*_pb2_grpc.py'); do
  grep -q 'Stub' "$grpc_module" || rm -f "$grpc_module" "${grpc_module}i"
done
