"""Invariants of rendered chart manifests that schema validation cannot see.

usage: check_rendered.py default.yaml all-features.yaml default-elsewhere.yaml all-features-elsewhere.yaml least-privilege.yaml

The last two are the same renders with the same release name in another release
namespace: no object of theirs may have the kind, namespace and name of one of the
first two's (cluster-scoped RBAC, Roles in watchNamespace or the lease namespace).
The last is the least-privilege install (secrets.scope=credentialsNamespace).
"""

import sys

import yaml

RBAC_KINDS = {"Role", "ClusterRole"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
TEST_HOOK = "helm.sh/hook"


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


def hardened_pod(pod, path):
    (container,) = pod["containers"]
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532, path
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", path
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, path
    assert csc["capabilities"]["drop"] == ["ALL"], path
    assert {"requests", "limits"} <= container["resources"].keys(), path
    return container


def strategy(docs, path, leader_election):
    """Both branches render the whole strategy: with server-side apply, a rollingUpdate
    the apiserver defaulted has no owner, and a later switch to Recreate cannot drop it."""
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    got = deploy["spec"].get("strategy")
    if leader_election:
        assert got == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, (path, got)
    else:
        assert got == {"type": "Recreate"}, (path, got)


def test_hook(docs, path):
    """`helm test` runs the image's own probe against the metrics Service's /readyz."""
    hooks = [d for d in docs if TEST_HOOK in d["metadata"].get("annotations", {})]
    assert [h["kind"] for h in hooks] == ["Pod"], f"{path}: expected one test Pod, got {kinds(hooks)}"
    (pod,) = hooks
    assert pod["metadata"]["annotations"][TEST_HOOK] == "test", path
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False, path
    container = hardened_pod(spec, path)
    (service,) = [d for d in docs if d["kind"] == "Service"]
    port = service["spec"]["ports"][0]["port"]
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}/readyz"
    assert container["args"] == ["probe", url], (path, container["args"])
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    assert container["image"] == deploy["spec"]["template"]["spec"]["containers"][0]["image"], path
    selector = service["spec"]["selector"]
    labels = pod["metadata"]["labels"]
    assert not selector.items() <= labels.items(), f"{path}: the metrics Service would select the test Pod"


def distinct_names(one, other, paths):
    """The same release name in two namespaces: no object in common but the CRDs."""

    def keys(docs):
        return {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
            for d in docs
            if d["kind"] != "CustomResourceDefinition"
        }

    shared = keys(one) & keys(other)
    assert any(k[0] in CLUSTER_SCOPED for k in keys(one)), paths
    assert not shared, f"{paths}: objects collide: {sorted(shared)}"


def hardened(docs, path):
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    container = hardened_pod(pod, path)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", path
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", path
    return {e["name"]: e.get("value") for e in container["env"]}


def kinds(docs):
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


def secret_rules(doc):
    return [r for r in doc.get("rules", []) if "secrets" in r.get("resources", [])]


def least_privilege(docs, path):
    """No cluster-wide Secret access; a Role in the credentials namespace reads Secrets."""
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            assert not secret_rules(doc), f"{path}: ClusterRole {doc['metadata']['name']} grants Secrets"
    roles = [d for d in docs if d["kind"] == "Role" and secret_rules(d)]
    assert [r["metadata"]["namespace"] for r in roles] == ["accessplane-system"], (path, kinds(roles))
    assert all(rule["verbs"] == ["get", "list", "watch"] for r in roles for rule in secret_rules(r)), path
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == roles[0]["metadata"]["name"]]
    assert binding["metadata"]["namespace"] == "accessplane-system", path
    env = hardened(docs, path)
    assert env["ACCESSPLANE_SECRETS_SCOPE"] == "credentials-namespace", env
    assert env["ACCESSPLANE_CREDENTIALS_NAMESPACE"] == "accessplane-system", env


def main(default_path, all_path, default_elsewhere_path, all_elsewhere_path, least_privilege_path):
    default, everything = load(default_path), load(all_path)
    for docs, path in ((default, default_path), (everything, all_path)):
        no_wildcards(docs, path)
        test_hook(docs, path)
    strategy(default, default_path, leader_election=False)
    strategy(everything, all_path, leader_election=True)
    distinct_names(default, load(default_elsewhere_path), (default_path, default_elsewhere_path))
    distinct_names(everything, load(all_elsewhere_path), (all_path, all_elsewhere_path))
    least_privilege(load(least_privilege_path), least_privilege_path)
    env = hardened(default, default_path)
    assert env["ACCESSPLANE_LEADER_ELECTION"] == "false", env
    assert env["ACCESSPLANE_SECRETS_SCOPE"] == "cluster", env
    assert "ACCESSPLANE_NAMESPACE" not in env, env
    optional = ("Role/", "RoleBinding/", "ServiceMonitor/", "PrometheusRule/", "ConfigMap/", "PodDisruptionBudget/", "NetworkPolicy/", "ClusterRole/ap-accessplane:accessplane-system:crds")
    extra = [k for k in kinds(default) if k.startswith(optional)]
    assert not extra, f"{default_path}: optional objects rendered by default: {extra}"

    env = hardened(everything, all_path)
    assert env["ACCESSPLANE_LEADER_ELECTION"] == "true", env
    assert env["ACCESSPLANE_INSTALL_CRDS"] == "true", env
    assert env["ACCESSPLANE_NAMESPACE"], env
    rendered = {k.split("/")[0] for k in kinds(everything)}
    missing = {"Role", "RoleBinding", "ClusterRole", "ServiceMonitor", "PrometheusRule", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} - rendered
    assert not missing, f"{all_path}: missing {missing}"
    crd_roles = [d for d in everything if d["kind"] == "ClusterRole"]
    assert all(r["apiGroups"] == ["apiextensions.k8s.io"] for d in crd_roles for r in d["rules"]), (
        f"{all_path}: with watchNamespace set, only the CRD rules may be cluster-wide"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
