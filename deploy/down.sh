#!/usr/bin/env bash
# Tear the carbon-scheduler demo down. By default it deletes the whole minikube
# profile that deploy/up.sh created. With --keep-cluster it removes only what
# up.sh installed (the scheduler, InfluxDB, Prometheus, Grafana and the three
# vclusters) and leaves minikube running.
#
#   deploy/down.sh [--keep-cluster]
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

keep_cluster=false
case "${1:-}" in
  "") ;;
  --keep-cluster) keep_cluster=true ;;
  *) die "unknown argument '$1'; usage: deploy/down.sh [--keep-cluster]" ;;
esac

if ! $keep_cluster; then
  require_tools minikube
  log "deleting minikube profile $PROFILE"
  minikube delete -p "$PROFILE"
  exit 0
fi

require_tools kubectl helm
log "removing the scheduler, InfluxDB, Prometheus and Grafana"
host_kubectl delete namespace carbon-scheduler --ignore-not-found --wait
for region in "${REGIONS[@]}"; do
  log "removing vcluster $region"
  if helm status "$region" --kube-context "$PROFILE" --namespace "vcluster-$region" >/dev/null 2>&1; then
    helm uninstall "$region" --kube-context "$PROFILE" --namespace "vcluster-$region" --wait
  fi
  host_kubectl delete namespace "vcluster-$region" --ignore-not-found --wait
done
for node in $(host_kubectl get nodes -l topology.kubernetes.io/region -o jsonpath='{.items[*].metadata.name}'); do
  host_kubectl label node "$node" topology.kubernetes.io/region- >/dev/null
done
