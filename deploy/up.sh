#!/usr/bin/env bash
# Bring the carbon-scheduler demo up on minikube:
#   1. a minikube cluster with one control-plane node and NODES_PER_REGION
#      nodes per region, each labelled topology.kubernetes.io/region=REGION;
#   2. one vcluster per region (deploy/vcluster/REGION.yaml) that syncs only
#      that region's nodes;
#   3. in each vcluster, the scheduler's ServiceAccount and RBAC (deploy/rbac.yaml),
#      and a kubeconfig with its token and the vcluster's in-cluster address,
#      all three stored in the Secret carbon-scheduler-kubeconfigs;
#   4. the scheduler image, built inside minikube;
#   5. the scheduler, InfluxDB, Prometheus and Grafana (deploy/kustomization.yaml),
#      Grafana provisioned from grafana/;
#   6. one batch of demo workloads (deploy/submit-workloads.sh).
# It prints the Grafana URL at the end. Running it again updates what changed.
#
# Settings (environment variables):
#   MINIKUBE_PROFILE   minikube profile and kubectl context (default carbon-demo)
#   NODES_PER_REGION   minikube nodes per region (default 1)
#   MINIKUBE_CPUS, MINIKUBE_MEMORY   per node (default 3 and 3000mb; see below)
#   VCLUSTER_CHART_VERSION   version of the loft-sh vcluster Helm chart (default 0.21.4)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=lib.sh
. "$here/lib.sh"

NAMESPACE=carbon-scheduler
IMAGE=carbon-scheduler:dev
NODES_PER_REGION="${NODES_PER_REGION:-1}"
# Node size. The scheduler counts only the pods inside each vcluster, so host
# pods on a region node take room that it does not count. The default must hold
# max_pods = 4 task pods beside every host pod that may land on one region node
# (requests, worst case):
#   host CPU:    kindnet 100m + CoreDNS 100m + the vcluster's CoreDNS (100m,
#                an allowance) + 3 vcluster control planes 3 x 100m + Prometheus
#                100m + Grafana 100m + 2 scheduler replicas 2 x 100m = 1000m
#   task CPU:    4 x 250m (every demo workload requests 250m) = 1000m
#   => 2000m of 3000m, a third of the node to spare.
#   host memory: 50Mi + 70Mi + 70Mi + 3 x 256Mi + 256Mi + 128Mi + 2 x 128Mi = 1598Mi
#   task memory: 4 x 128Mi = 512Mi
#   => 2110Mi of about 2900Mi (3000mb less the kubelet's 100Mi eviction reserve).
# InfluxDB runs on the control-plane node, which has no region. This assumes that
# a node's allocatable CPU is MINIKUBE_CPUS. tests/test_deploy.py recomputes the
# sums from the manifests.
MINIKUBE_CPUS="${MINIKUBE_CPUS:-3}"
MINIKUBE_MEMORY="${MINIKUBE_MEMORY:-3000mb}"
VCLUSTER_CHART_VERSION="${VCLUSTER_CHART_VERSION:-0.21.4}"
VCLUSTER_CHART_REPO=https://charts.loft.sh
# The service-account tokens in the region kubeconfigs expire after this long;
# run up.sh again to renew them.
TOKEN_DURATION=8760h

[[ "$NODES_PER_REGION" =~ ^[1-9][0-9]*$ ]] ||
  die "NODES_PER_REGION must be a whole number of 1 or more, got '$NODES_PER_REGION'"
require_tools minikube kubectl helm base64

workdir="$(mktemp -d)"
cleanup() {
  stop_port_forwards
  rm -rf "$workdir"
}
trap cleanup EXIT

start_minikube() {
  local nodes=$((1 + ${#REGIONS[@]} * NODES_PER_REGION))
  if minikube -p "$PROFILE" status >/dev/null 2>&1; then
    log "minikube profile $PROFILE is running"
  else
    log "starting minikube profile $PROFILE with $nodes nodes"
    minikube start -p "$PROFILE" --nodes "$nodes" --cpus "$MINIKUBE_CPUS" --memory "$MINIKUBE_MEMORY"
  fi
}

# Label every node but the control plane with a region, round-robin.
label_nodes() {
  local nodes=() node i=0
  mapfile -t nodes < <(host_kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  ((${#nodes[@]} >= ${#REGIONS[@]})) ||
    die "minikube profile $PROFILE has ${#nodes[@]} worker nodes, fewer than the ${#REGIONS[@]} regions; delete it with deploy/down.sh and run up.sh again"
  for node in "${nodes[@]}"; do
    host_kubectl label node "$node" --overwrite "topology.kubernetes.io/region=${REGIONS[i % ${#REGIONS[@]}]}" >/dev/null
    log "node $node is in region ${REGIONS[i % ${#REGIONS[@]}]}"
    i=$((i + 1))
  done
}

install_vclusters() {
  local region
  for region in "${REGIONS[@]}"; do
    log "installing vcluster $region"
    helm upgrade --install "$region" vcluster \
      --repo "$VCLUSTER_CHART_REPO" --version "$VCLUSTER_CHART_VERSION" \
      --kube-context "$PROFILE" --namespace "vcluster-$region" --create-namespace \
      --values "$here/vcluster/$region.yaml" --wait --timeout 10m
  done
}

# Give the scheduler its own identity in each vcluster and write a kubeconfig
# that reaches the vcluster from inside the host cluster.
write_region_kubeconfigs() {
  local region admin ca_data token server
  mkdir -p "$workdir/kubeconfigs"
  for region in "${REGIONS[@]}"; do
    admin="$workdir/$region-admin.kubeconfig"
    connect_vcluster "$region" "$admin"
    kubectl --kubeconfig "$admin" create namespace "$NAMESPACE" --dry-run=client -o yaml |
      kubectl --kubeconfig "$admin" apply -f - >/dev/null
    kubectl --kubeconfig "$admin" apply -f "$here/rbac.yaml" >/dev/null
    token="$(kubectl --kubeconfig "$admin" -n "$NAMESPACE" create token carbon-scheduler --duration "$TOKEN_DURATION")"
    ca_data="$(kubectl --kubeconfig "$admin" config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
    [[ -n "$ca_data" ]] || die "the kubeconfig of vcluster $region has no certificate-authority-data"
    server="https://$region.vcluster-$region.svc:443"
    # A heredoc keeps the token off command lines, where ps would show it.
    cat >"$workdir/kubeconfigs/$region.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: $region
    cluster:
      server: $server
      certificate-authority-data: $ca_data
users:
  - name: carbon-scheduler
    user:
      token: $token
contexts:
  - name: $region
    context:
      cluster: $region
      user: carbon-scheduler
current-context: $region
KUBECONFIG
    log "kubeconfig of region $region points at $server"
  done
  stop_port_forwards
  host_kubectl -n "$NAMESPACE" create secret generic carbon-scheduler-kubeconfigs \
    --from-file="$workdir/kubeconfigs" --dry-run=client -o yaml | host_kubectl apply -f - >/dev/null
}

build_image() {
  log "building $IMAGE inside minikube"
  # From the repository root, so -f means the same to minikube and to docker.
  (cd "$root" && minikube -p "$PROFILE" image build --all -t "$IMAGE" -f deploy/Dockerfile .)
}

# Grafana's ConfigMaps come from grafana/, outside the kustomization's folder.
provision_grafana() {
  host_kubectl -n "$NAMESPACE" create configmap grafana-datasources \
    --from-file="$root/grafana/provisioning/datasources" --dry-run=client -o yaml | host_kubectl apply -f - >/dev/null
  host_kubectl -n "$NAMESPACE" create configmap grafana-dashboard-providers \
    --from-file="$root/grafana/provisioning/dashboards" --dry-run=client -o yaml | host_kubectl apply -f - >/dev/null
  # Server-side apply keeps no copy of the ConfigMap in the last-applied
  # annotation, whose 256 KiB limit the dashboards (74 KB now) would otherwise
  # approach as panels are added.
  host_kubectl -n "$NAMESPACE" create configmap grafana-dashboards \
    --from-file="$root/grafana/dashboards" --dry-run=client -o yaml |
    host_kubectl apply --server-side --force-conflicts -f - >/dev/null
  if ! host_kubectl -n "$NAMESPACE" get secret grafana-admin >/dev/null 2>&1; then
    # 24 random bytes from the kernel, base64 without padding or '/'.
    host_kubectl -n "$NAMESPACE" create secret generic grafana-admin \
      --from-literal=password="$(head -c 24 /dev/urandom | base64 | tr -d '=/+')" >/dev/null
  fi
}

deploy_host_side() {
  log "applying deploy/kustomization.yaml"
  host_kubectl apply -k "$here" >/dev/null
  # A new image under the same tag needs new pods.
  host_kubectl -n "$NAMESPACE" rollout restart deployment/carbon-scheduler >/dev/null
  local deployment
  for deployment in influxdb prometheus grafana carbon-scheduler; do
    host_kubectl -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout 5m
  done
}

start_minikube
label_nodes
install_vclusters
host_kubectl apply -f "$here/scheduler/namespace.yaml" >/dev/null
write_region_kubeconfigs
build_image
provision_grafana
deploy_host_side
"$here/submit-workloads.sh" 1

log "Grafana (anonymous viewers; user admin, password: kubectl --context $PROFILE -n $NAMESPACE get secret grafana-admin -o jsonpath='{.data.password}' | base64 -d):"
minikube -p "$PROFILE" service grafana -n "$NAMESPACE" --url
