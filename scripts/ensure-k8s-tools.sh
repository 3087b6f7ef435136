#!/usr/bin/env bash
# Installs what the chart's tests (tests/k8s) need into .tools/k8s/, once:
#   bin/helm, bin/kubeconform, bin/kwok        go install <module>@<version>
#   bin/etcd, bin/kube-apiserver, bin/kube-controller-manager, bin/kube-scheduler,
#   bin/kubectl                                 built from the wrapper module tools/k8s
#   kwok-stages.yaml                            kwok's fast node and pod stages
#   schemas/<k8s version>-standalone-strict/    kubeconform's offline JSON schemas
# Each tool has a stamp in .tools/k8s/stamps/ holding what it was built from (version,
# and for the wrapper module the hash of its go.mod and go.sum); a tool whose stamp
# matches is not built again, so a second run takes well under a second. A change of
# version rebuilds just that tool.
#
# Needs Go (1.26+; an older go fetches the toolchain go.mod asks for from the module
# proxy), python3 with venv, and flock. Works as root and as an ordinary user; nothing
# is installed outside the repository but Go's module and build caches.
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KWOK_VERSION=v0.8.0
KUBERNETES_VERSION=v1.37.2
OPENAPI2JSONSCHEMA_VERSION=0.9.1
# openapi2jsonschema pins PyYAML<6 (which no longer builds), jsonref<0.3 and click<8:
# it is installed --no-deps beside these, which it works with (colorama, also pinned,
# is not imported).
OPENAPI2JSONSCHEMA_DEPS=(PyYAML==6.0.3 jsonref==1.1.0 click==8.3.1)

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=$repo/.tools/k8s
bin=$tools/bin
stamps=$tools/stamps
wrapper=$repo/tools/k8s
python=${PYTHON:-python3}

say() { echo "ensure-k8s-tools: $*"; }
die() {
  echo "ensure-k8s-tools: $*" >&2
  exit 1
}

# A login shell of an ordinary user may lack Go's folder on PATH: try where the official
# archive installs it.
if ! command -v go > /dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH=/usr/local/go/bin:$PATH
fi
command -v go > /dev/null || die "Go is needed (https://go.dev/doc/install), and was not found"
command -v flock > /dev/null || die "flock is needed (Debian package util-linux)"
mkdir -p "$bin" "$stamps"

# Two runs at once (two make targets) would build the same tools twice and race on the
# files: the second waits for the first and then finds everything stamped.
exec 9> "$tools/.lock"
flock 9

# Static binaries, no VCS stamping (a repository owned by another user makes go refuse
# to read it), paths trimmed so the build does not depend on where the repo is.
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -trimpath"

# stamped NAME WANT: true if NAME was already made from WANT (and its files are there).
stamped() {
  [[ -f "$stamps/$1" ]] && [[ "$(head -n 1 "$stamps/$1")" == "$2" ]]
}

# stamp NAME WANT SECONDS: record that NAME was made from WANT, and how long it took.
stamp() {
  printf '%s\nbuilt in %s s on %s\n' "$2" "$3" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$stamps/$1"
  say "$1 ready (${2%% *}, $3 s)"
}

# go_install NAME MODULE/PKG VERSION [LDFLAGS]: `go install PKG@VERSION` into bin/.
go_install() {
  local name=$1 package=$2 version=$3 ldflags=${4:-}
  local want="$version${ldflags:+ ldflags:$ldflags}"
  if stamped "$name" "$want" && [[ -x "$bin/$name" ]]; then return; fi
  say "building $name $version (go install $package@$version)"
  local started=$SECONDS
  GOBIN=$bin go install -ldflags "-s -w $ldflags" "$package@$version"
  stamp "$name" "$want" $((SECONDS - started))
}

# module_dir MODULE@VERSION: the module's folder in Go's module cache (downloaded).
module_dir() {
  go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# --- single-module tools -----------------------------------------------------------
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"

# helm's Makefile sets its version, and the Kubernetes version `helm template` and `helm
# lint` assume (.Capabilities.KubeVersion; Chart.yaml's kubeVersion is checked against
# it) from the client-go it is built with. Without them it says v3.22 and assumes 1.20.
helm_dir=$(module_dir "helm.sh/helm/v3@$HELM_VERSION")
helm_k8s_minor=$(sed -n 's/^\tk8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$helm_dir/go.mod")
[[ -n "$helm_k8s_minor" ]] || die "no k8s.io/client-go version in $helm_dir/go.mod"
helm_flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for package in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_flags+=" -X $package.k8sVersionMajor=1 -X $package.k8sVersionMinor=$helm_k8s_minor"
done
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$helm_flags"

# kwok's stages: nodes turn Ready and keep a lease; pods turn Running, Ready, and go
# away when deleted. Shipped as YAML in kwok's module (not inside the binary).
if ! stamped kwok-stages "$KWOK_VERSION" || [[ ! -f "$tools/kwok-stages.yaml" ]]; then
  started=$SECONDS
  kwok_dir=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
  [[ -n "$kwok_dir" ]] || die "could not download sigs.k8s.io/kwok@$KWOK_VERSION"
  for stage in node/fast node/heartbeat-with-lease pod/fast; do
    for file in "$kwok_dir/kustomize/stage/$stage"/*.yaml; do
      [[ "$(basename "$file")" == kustomization.yaml ]] && continue
      echo "---"
      echo "# from sigs.k8s.io/kwok@$KWOK_VERSION kustomize/stage/$stage/$(basename "$file")"
      cat "$file"
    done
  done > "$tools/kwok-stages.yaml.tmp"
  mv "$tools/kwok-stages.yaml.tmp" "$tools/kwok-stages.yaml"
  stamp kwok-stages "$KWOK_VERSION" $((SECONDS - started))
fi

# --- the control plane, from the wrapper module ----------------------------------------
wrapper_hash=$(cat "$wrapper/go.mod" "$wrapper/go.sum" | sha256sum | cut -c1-16)
# What `kubectl version` and the apiserver's /version report (helm reads the latter
# for charts' kubeVersion), as release builds set them (hack/lib/version.sh).
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
version_flags=""
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $package.gitVersion=$KUBERNETES_VERSION"
  version_flags+=" -X $package.gitMajor=1 -X $package.gitMinor=$minor"
  version_flags+=" -X $package.gitTreeState=clean"
done

# wrapper_build NAME PACKAGE: go build PACKAGE (a tool of tools/k8s/go.mod) to bin/NAME.
wrapper_build() {
  local name=$1 package=$2 want="$KUBERNETES_VERSION go.mod+go.sum $wrapper_hash"
  if stamped "$name" "$want" && [[ -x "$bin/$name" ]]; then return; fi
  say "building $name (k8s $KUBERNETES_VERSION, from tools/k8s)"
  local started=$SECONDS
  (cd "$wrapper" && go build -ldflags "-s -w$version_flags" -o "$bin/$name.tmp" "$package")
  mv "$bin/$name.tmp" "$bin/$name"
  stamp "$name" "$want" $((SECONDS - started))
}

wrapper_build etcd go.etcd.io/etcd/server/v3
wrapper_build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
wrapper_build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
wrapper_build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
wrapper_build kubectl k8s.io/kubernetes/cmd/kubectl

# --- kubeconform's schemas, from the API server's own OpenAPI document -----------------
schema_dir=$tools/schemas/$KUBERNETES_VERSION-standalone-strict
schema_want="openapi2jsonschema $OPENAPI2JSONSCHEMA_VERSION ${OPENAPI2JSONSCHEMA_DEPS[*]} k8s $KUBERNETES_VERSION"
if ! stamped schemas "$schema_want" || [[ ! -f "$schema_dir/deployment-apps-v1.json" ]]; then
  say "generating JSON schemas of k8s $KUBERNETES_VERSION for kubeconform"
  started=$SECONDS
  venv=$tools/schema-venv
  if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv" || die "could not make a venv with $python (Debian: python3-venv)"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${OPENAPI2JSONSCHEMA_DEPS[@]}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "openapi2jsonschema==$OPENAPI2JSONSCHEMA_VERSION"
  kubernetes_dir=$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")
  mkdir -p "$tools/schemas"
  [[ -n "$kubernetes_dir" ]] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"
  name=$(basename "$schema_dir")
  rm -rf "$schema_dir.tmp"
  # --strict: no properties beyond the schema's (a misspelt field fails); --stand-alone:
  # references inlined, so kubeconform needs no other file; --kubernetes --expanded: file
  # names kind[-group]-version.json, as kubeconform asks for them. The output folder must
  # be relative: the tool resolves its references against the working directory joined
  # with it. A few types are skipped (logged): the CRD schema types, and the recursive
  # scheduling.k8s.io Workload types, which cannot be inlined.
  (cd "$tools/schemas" && "$venv/bin/openapi2jsonschema" --kubernetes --strict --stand-alone \
    --expanded -o "$name.tmp" "file://$kubernetes_dir/api/openapi-spec/swagger.json") \
    > "$tools/schemas.log" 2>&1 || die "openapi2jsonschema failed; see $tools/schemas.log"
  # It logs errors per type and exits 0: check that what the chart uses came out.
  for kind in deployment-apps-v1 service-v1 configmap-v1 secret-v1 job-batch-v1 \
    poddisruptionbudget-policy-v1 horizontalpodautoscaler-autoscaling-v2 \
    networkpolicy-networking-v1; do
    [[ -s "$schema_dir.tmp/$kind.json" ]] || die "no schema $kind.json; see $tools/schemas.log"
  done
  rm -rf "$schema_dir"
  mv "$schema_dir.tmp" "$schema_dir"
  stamp schemas "$schema_want" $((SECONDS - started))
fi
