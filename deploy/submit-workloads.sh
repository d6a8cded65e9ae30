#!/usr/bin/env bash
# Submit one batch of the demo workloads to the vclusters of the minikube demo:
# the critical pod to us-east, the standard Job to eu-west and the deferrable
# Job to asia-east. Each manifest uses generateName, so every run adds a new
# batch. The scheduler may place each task in another region than the one it
# was submitted to.
#
#   deploy/submit-workloads.sh [BATCHES]     (default 1)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

batches="${1:-1}"
[[ "$batches" =~ ^[1-9][0-9]*$ ]] || die "BATCHES must be a whole number of 1 or more, got '$batches'"
require_tools kubectl

workdir="$(mktemp -d)"
cleanup() {
  stop_port_forwards
  rm -rf "$workdir"
}
trap cleanup EXIT

submit() {
  local region=$1 manifest=$2 i
  connect_vcluster "$region" "$workdir/$region.kubeconfig"
  for ((i = 0; i < batches; i++)); do
    kubectl --kubeconfig "$workdir/$region.kubeconfig" create -f "$here/workloads/$manifest"
  done
}

submit us-east critical.yaml
submit eu-west standard.yaml
submit asia-east deferrable.yaml
