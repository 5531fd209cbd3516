"""Invariants of rendered chart manifests that schema validation cannot see.

usage: check_rendered.py default.yaml all-features.yaml
"""

import sys

import yaml

RBAC_KINDS = {"Role", "ClusterRole"}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def no_wildcards(docs, path):
    for doc in docs:
        if doc["kind"] not in RBAC_KINDS:
            continue
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), f"{path}: {doc['kind']} {doc['metadata']['name']} has '*' in {field}"


def hardened(docs, path):
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, path
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", path
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, path
    assert csc["capabilities"]["drop"] == ["ALL"], path
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", path
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", path
    assert {"requests", "limits"} <= container["resources"].keys(), path
    return {e["name"]: e.get("value") for e in container["env"]}


def kinds(docs):
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


def main(default_path, all_path):
    default, everything = load(default_path), load(all_path)
    for docs, path in ((default, default_path), (everything, all_path)):
        no_wildcards(docs, path)
    env = hardened(default, default_path)
    assert env["ACCESSPLANE_LEADER_ELECTION"] == "false", env
    assert "ACCESSPLANE_NAMESPACE" not in env, env
    optional = ("Role/", "RoleBinding/", "ServiceMonitor/", "PodDisruptionBudget/", "NetworkPolicy/", "ClusterRole/ap-accessplane-crds")
    extra = [k for k in kinds(default) if k.startswith(optional)]
    assert not extra, f"{default_path}: optional objects rendered by default: {extra}"

    env = hardened(everything, all_path)
    assert env["ACCESSPLANE_LEADER_ELECTION"] == "true", env
    assert env["ACCESSPLANE_INSTALL_CRDS"] == "true", env
    assert env["ACCESSPLANE_NAMESPACE"], env
    rendered = {k.split("/")[0] for k in kinds(everything)}
    missing = {"Role", "RoleBinding", "ClusterRole", "ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"} - rendered
    assert not missing, f"{all_path}: missing {missing}"
    crd_roles = [d for d in everything if d["kind"] == "ClusterRole"]
    assert all(r["apiGroups"] == ["apiextensions.k8s.io"] for d in crd_roles for r in d["rules"]), (
        f"{all_path}: with watchNamespace set, only the CRD rules may be cluster-wide"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
