# Shared settings and helpers of deploy/up.sh, deploy/down.sh and
# deploy/submit-workloads.sh. Source it: it defines functions and variables and
# runs nothing.
# shellcheck shell=bash

# The minikube profile, which is also the kubectl context of the host cluster.
PROFILE="${MINIKUBE_PROFILE:-carbon-demo}"
# Region names: each is a vcluster, release REGION in host namespace vcluster-REGION.
REGIONS=(eu-west us-east asia-east)
# Local ports of the port-forwards to the three vcluster API servers.
FORWARD_BASE_PORT="${FORWARD_BASE_PORT:-18443}"

FORWARD_PIDS=()

die() {
  echo "error: $*" >&2
  exit 1
}

log() {
  echo "==> $*" >&2
}

# Fail with one message that names every missing command and where to get it.
require_tools() {
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    die "missing required tools: ${missing[*]}. Install them first:
  minikube  https://minikube.sigs.k8s.io/docs/start/
  kubectl   https://kubernetes.io/docs/tasks/tools/
  helm      https://helm.sh/docs/intro/install/"
  fi
}

# kubectl against the host cluster.
host_kubectl() {
  kubectl --context "$PROFILE" "$@"
}

# Print the index of a region in REGIONS.
region_index() {
  local i
  for i in "${!REGIONS[@]}"; do
    if [[ "${REGIONS[$i]}" == "$1" ]]; then
      echo "$i"
      return 0
    fi
  done
  die "unknown region '$1'; expected one of: ${REGIONS[*]}"
}

# Write the vcluster's admin kubeconfig to $2, pointed at a port-forward of its
# API server on localhost, and start that port-forward. The vcluster's serving
# certificate names localhost, which is also the server in its own kubeconfig.
connect_vcluster() {
  local region=$1 kubeconfig=$2 port cluster i
  port=$((FORWARD_BASE_PORT + $(region_index "$region")))

  for ((i = 0; i < 120; i++)); do
    host_kubectl -n "vcluster-$region" get secret "vc-$region" >/dev/null 2>&1 && break
    sleep 2
  done
  host_kubectl -n "vcluster-$region" get secret "vc-$region" -o jsonpath='{.data.config}' | base64 -d >"$kubeconfig" ||
    die "failed to read the kubeconfig Secret vc-$region in namespace vcluster-$region; check that the vcluster is installed (helm list -A)"
  cluster="$(kubectl --kubeconfig "$kubeconfig" config view -o jsonpath='{.clusters[0].name}')"
  kubectl --kubeconfig "$kubeconfig" config set-cluster "$cluster" --server "https://localhost:$port" >/dev/null

  # kubectl itself, not host_kubectl, runs in the background, so that $! is
  # kubectl's process id and stop_port_forwards ends the port-forward.
  kubectl --context "$PROFILE" -n "vcluster-$region" port-forward "svc/$region" "$port:443" \
    >"$kubeconfig.port-forward.log" 2>&1 &
  FORWARD_PIDS+=("$!")
  for ((i = 0; i < 60; i++)); do
    if kubectl --kubeconfig "$kubeconfig" get --raw=/readyz >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  # The caller's cleanup may delete the log, so its end goes into the message.
  die "timed out after 60 s waiting for the API server of vcluster $region at localhost:$port; kubectl port-forward wrote:
$(tail -n 5 "$kubeconfig.port-forward.log")"
}

# Stop the port-forwards that connect_vcluster started.
stop_port_forwards() {
  local pid
  for pid in "${FORWARD_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  FORWARD_PIDS=()
}
