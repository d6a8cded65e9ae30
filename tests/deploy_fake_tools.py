#!/usr/bin/env python3
"""Stand-in for kubectl, helm and minikube, so tests can run deploy/*.sh offline.

tests/test_deploy.py copies this file into a temporary bin folder under each
tool's name and puts that folder first on PATH. Every call appends one JSON line
(tool, arguments, working directory) to $FAKE_TOOLS_LOG and prints what the real
tool would print for the calls the scripts make. It keeps copies of what the
scripts hand over, so the test can read them: the kubeconfigs folder of
`create secret generic carbon-scheduler-kubeconfigs`, and the process id of each
`port-forward`. A call the fake does not know exits 3, so a new call in a script
fails the test until the fake learns it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path

# A vcluster admin kubeconfig, as the vc-REGION Secret contains it.
ADMIN_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: my-vcluster
    cluster:
      server: https://localhost:8443
      certificate-authority-data: RkFLRS1DQQ==
users:
  - name: my-vcluster
    user:
      client-certificate-data: RkFLRS1DRVJU
      client-key-data: RkFLRS1LRVk=
contexts:
  - name: my-vcluster
    context:
      cluster: my-vcluster
      user: my-vcluster
current-context: my-vcluster
"""
CERTIFICATE_AUTHORITY_DATA = "RkFLRS1DQQ=="
WORKER_NODES = ["carbon-demo-m02", "carbon-demo-m03", "carbon-demo-m04"]
GRAFANA_URL = "http://192.168.49.2:31000"
UNKNOWN_CALL = 3


# Options of the three tools that the scripts give a separate value.
VALUE_OPTIONS = {
    "--context", "--kubeconfig", "-n", "--namespace", "-o", "-l", "-f", "--duration", "--from-file",
    "--server", "--timeout", "--kube-context", "--repo", "--version", "--values", "-p", "--nodes",
    "--cpus", "--memory", "-t",
}


def positional(arguments: list[str]) -> list[str]:
    """Return the arguments that are neither options nor option values."""
    words = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in VALUE_OPTIONS:
            skip = True
        elif not argument.startswith("-") or argument == "-":
            words.append(argument)
    return words


def option(arguments: list[str], name: str) -> str | None:
    """Return the value of `--name VALUE` or `--name=VALUE`."""
    for index, argument in enumerate(arguments):
        if argument == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def kubectl(arguments: list[str], capture: Path) -> int:
    words = positional(arguments)
    if "port-forward" in arguments:
        (capture / "port-forwards").mkdir(exist_ok=True)
        (capture / "port-forwards" / str(os.getpid())).write_text(" ".join(arguments))
        # Like the real command, run until stopped.
        time.sleep(600)
        return 0

    if "--raw=/readyz" in arguments:
        return 0

    if words[:2] == ["get", "nodes"]:
        print("\n".join(WORKER_NODES))
        return 0

    if words[:2] == ["label", "node"] or words[:1] in (["apply"], ["rollout"], ["delete"]):
        if "-" in arguments or option(arguments, "-f") == "-":
            sys.stdin.read()
        return 0

    if words[:2] == ["get", "secret"]:
        name = words[2]
        if name == "grafana-admin":
            return 1
        if option(arguments, "-o") == "jsonpath={.data.config}":
            print(base64.b64encode(ADMIN_KUBECONFIG.encode()).decode())
        return 0

    if words[:2] == ["config", "view"]:
        jsonpath = option(arguments, "-o") or ""
        if "certificate-authority-data" in jsonpath:
            print(CERTIFICATE_AUTHORITY_DATA, end="")
        elif "{.clusters[0].name}" in jsonpath:
            print("my-vcluster", end="")
        else:
            return UNKNOWN_CALL
        return 0

    if words[:2] == ["config", "set-cluster"]:
        return 0

    if words[:2] == ["create", "token"]:
        kubeconfig = Path(option(arguments, "--kubeconfig") or "none")
        print(f"token-from-{kubeconfig.name}")
        return 0

    if words[:2] == ["create", "namespace"]:
        print(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {words[2]}")
        return 0

    if words[:3] == ["create", "secret", "generic"]:
        source = option(arguments, "--from-file")
        if words[3] == "carbon-scheduler-kubeconfigs" and source:
            shutil.copytree(source, capture / "kubeconfigs")
        print(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {words[3]}")
        return 0

    if words[:2] == ["create", "configmap"]:
        print(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {words[2]}")
        return 0

    if words[:1] == ["create"] and option(arguments, "-f"):
        return 0
    return UNKNOWN_CALL


def helm(arguments: list[str]) -> int:
    if arguments[:2] == ["upgrade", "--install"] or arguments[:1] in (["status"], ["uninstall"]):
        return 0
    return UNKNOWN_CALL


def minikube(arguments: list[str]) -> int:
    command = positional(arguments)
    if command[:1] == ["status"]:
        return 1
    if command[:1] in (["start"], ["delete"]) or command[:2] == ["image", "build"]:
        return 0
    if command[:1] == ["service"]:
        print(GRAFANA_URL)
        return 0
    return UNKNOWN_CALL


def main() -> int:
    tool = Path(sys.argv[0]).name
    arguments = sys.argv[1:]
    capture = Path(os.environ["FAKE_TOOLS_CAPTURE"])
    with open(os.environ["FAKE_TOOLS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "arguments": arguments, "cwd": os.getcwd()}) + "\n")
    if tool == "kubectl":
        return kubectl(arguments, capture)
    if tool == "helm":
        return helm(arguments)
    if tool == "minikube":
        return minikube(arguments)
    return UNKNOWN_CALL


if __name__ == "__main__":
    sys.exit(main())
