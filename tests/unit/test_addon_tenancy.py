"""The tenancy addon: teams in, objects out (RBAC per namespace, the CI deployer's least-privilege Role, quota
and default container resources), its namespaces made restricted by the ``namespaces`` set, no teams pushing
nothing (and a set that lost its teams deleting what it applied), and bad teams refused by key."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError

from deploys import addon
from deploys.components import cluster_addons, tenancy
from facts.addons import AddonSets
from facts.files import FileStates
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CP = {"roles": ["control_plane"], "ssh_hostname": "10.0.0.11"}
KUBECTL = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf"
KEPT = "/etc/kubernetes/addons/tenancy.yaml"
STAGED = f"{KEPT}.spectra-new"
NAMESPACES = "/etc/kubernetes/addons/namespaces.yaml.spectra-new"
APPLY = f"{KUBECTL} apply --server-side --field-manager=spectra --force-conflicts -f {STAGED}"
RBAC = "rbac.authorization.k8s.io"

SAMPLE = {
    "shop": {
        "namespaces": ["shop-web", "shop-api"],
        "admins": ["group:shop-leads", "user:alice"],
        "developers": ["group:shop-devs"],
        "viewers": ["group:auditors"],
        "quota": {"pods": "20"},
    },
    "data": {"namespaces": ["data-etl"], "developers": ["user:dana"]},
}
# one namespace, every kind of override: a quota key changed and one dropped, a limit changed and one added
WEB = {
    "web": {
        "namespaces": ["web-prod"],
        "admins": ["group:web-leads"],
        "viewers": ["user:carol"],
        "quota": {"pods": 5, "services.nodeports": None},
        "limits": {"default": {"memory": "512Mi"}, "min": {"cpu": "10m"}},
    }
}


def docs(teams: dict[str, Any], **data: Any) -> list[dict[str, Any]]:
    result = run_component(tenancy.COMPONENT, facts={AddonSets: {}}, data={**CP, "teams": teams, **data})
    return [doc for doc in yaml.safe_load_all(result.uploads[STAGED]) if doc]


def labels(team: str) -> dict[str, str]:
    return {"spectra.io/team": team, "app.kubernetes.io/managed-by": "spectra", "spectra.io/addon-set": "tenancy"}


def test_sample_teams_give_these_objects_in_order() -> None:
    per_namespace = [
        ("ServiceAccount", "ci-deployer"), ("Role", "ci-deployer"), ("RoleBinding", "ci-deployer"),
        ("ResourceQuota", "team-quota"), ("LimitRange", "team-limits"),
    ]  # fmt: skip
    shop = [("RoleBinding", "team-admins"), ("RoleBinding", "team-developers"), ("RoleBinding", "team-viewers")]
    expected = [
        *((kind, "data-etl", name) for kind, name in [("RoleBinding", "team-developers"), *per_namespace]),
        *((kind, "shop-api", name) for kind, name in [*shop, *per_namespace]),
        *((kind, "shop-web", name) for kind, name in [*shop, *per_namespace]),
    ]
    found = docs(SAMPLE)
    assert [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in found] == expected
    for doc in found:
        team = "data" if doc["metadata"]["namespace"] == "data-etl" else "shop"
        assert doc["metadata"]["labels"] == labels(team)
    admins = next(d for d in found if d["metadata"]["name"] == "team-admins")
    assert admins["subjects"] == [
        {"kind": "Group", "apiGroup": RBAC, "name": "shop-leads"},
        {"kind": "User", "apiGroup": RBAC, "name": "alice"},
    ]
    quotas = {d["metadata"]["namespace"]: d["spec"]["hard"]["pods"] for d in found if d["kind"] == "ResourceQuota"}
    assert quotas == {"data-etl": "50", "shop-api": "20", "shop-web": "20"}  # the quota is per namespace


def test_one_namespace_whole_objects() -> None:
    meta = {"namespace": "web-prod", "labels": labels("web")}
    verbs = ["get", "list", "watch", "update", "patch"]
    assert docs(WEB) == [
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "team-admins", **meta},
         "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"},
         "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": "web-leads"}]},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "team-viewers", **meta},
         "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
         "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "carol"}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ci-deployer", **meta},
         "automountServiceAccountToken": False},
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": "ci-deployer", **meta},
         "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs},
                   {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": verbs}]},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "ci-deployer", **meta},
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "ci-deployer"},
         "subjects": [{"kind": "ServiceAccount", "name": "ci-deployer", "namespace": "web-prod"}]},
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-quota", **meta},
         "spec": {"hard": {
             "configmaps": "50", "limits.cpu": "8", "limits.memory": "16Gi", "persistentvolumeclaims": "10",
             "pods": "5", "requests.cpu": "4", "requests.memory": "8Gi", "secrets": "50", "services": "20",
             "services.loadbalancers": "0",
         }}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "team-limits", **meta},
         "spec": {"limits": [{
             "type": "Container",
             "min": {"cpu": "10m"},
             "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
             "default": {"cpu": "500m", "memory": "512Mi"},
             "max": {"cpu": "2", "memory": "2Gi"},
         }]}},
    ]  # fmt: skip


def test_ci_deployer_may_roll_out_and_nothing_else() -> None:
    (role,) = [d for d in docs(SAMPLE) if d["kind"] == "Role" and d["metadata"]["namespace"] == "shop-web"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    forbidden = {("", "secrets", "get"), ("apps", "deployments", "create"), ("apps", "deployments", "delete"),
                 (RBAC, "rolebindings", "create"), ("", "pods", "get"), ("", "serviceaccounts", "get")}  # fmt: skip
    assert granted & forbidden == set()
    assert ("apps", "deployments", "patch") in granted and ("", "configmaps", "update") in granted
    assert not any("*" in str(rule) for rule in role["rules"])


def test_a_first_push_is_dry_run_applied_and_kept_with_no_rollout_to_wait_for() -> None:
    result = run_component(tenancy.COMPONENT, facts={AddonSets: {}}, data={**CP, "teams": SAMPLE})
    (op,) = result.ops
    assert op.name == "Addon tenancy | Addon set tenancy (never applied)"
    assert op.commands == [
        f"upload {STAGED} sha256=" + op.commands[0].split("sha256=")[1],
        f"chmod 0600 {STAGED}",
        f"{APPLY} --dry-run=server -o name",
        APPLY,
        f"mv -f {STAGED} {KEPT}",
    ]


def test_no_teams_render_nothing_and_push_nothing() -> None:
    assert addon.objects(addon.render_addon(tenancy.ADDON, {})) == []
    result = run_component(tenancy.COMPONENT, facts={AddonSets: {}}, data=CP)
    assert result.commands == [] and result.uploads == {}
    assert result.noops == ["addon set tenancy: no objects, none applied before"]


def test_teams_removed_delete_what_was_applied_and_the_kept_manifest() -> None:
    kept = addon.render_addon(tenancy.ADDON, {"teams": WEB})
    state: dict[str, Any] = {"tenancy": {"kept": kept, "drift": [], "error": None}}
    result = run_component(tenancy.COMPONENT, facts={AddonSets: state}, data={**CP, "teams": {}})
    delete = f"{KUBECTL} delete -n web-prod --ignore-not-found --wait=false"
    assert result.commands == [
        f"{delete} RoleBinding.v1.{RBAC}/team-admins",
        f"{delete} RoleBinding.v1.{RBAC}/team-viewers",
        f"{delete} ServiceAccount/ci-deployer",
        f"{delete} Role.v1.{RBAC}/ci-deployer",
        f"{delete} RoleBinding.v1.{RBAC}/ci-deployer",
        f"{delete} ResourceQuota/team-quota",
        f"{delete} LimitRange/team-limits",
        f"rm -f {KEPT}",
    ]
    assert result.uploads == {}  # kubectl applies no empty file


def test_converged_teams_cost_nothing() -> None:
    kept = addon.render_addon(tenancy.ADDON, {"teams": SAMPLE})
    state: dict[str, Any] = {"tenancy": {"kept": kept, "drift": [], "error": None}}
    result = run_component(tenancy.COMPONENT, facts={AddonSets: state}, data={**CP, "teams": SAMPLE})
    assert result.commands == [] and result.noops == ["addon set tenancy: applied as rendered, no drift"]


def test_switch_off_pushes_nothing() -> None:
    result = run_component(tenancy.COMPONENT, facts={}, data={**CP, "teams": SAMPLE, "tenancy_enabled": False})
    assert result.ops == [] and result.fact_reads == []


# --- the namespaces they live in ----------------------------------------------------------------------------


def test_team_namespaces_are_sorted_and_none_when_off() -> None:
    settings = {**tenancy.DEFAULTS, "teams": SAMPLE}
    assert tenancy.team_namespaces(settings) == ["data-etl", "shop-api", "shop-web"]
    assert tenancy.team_namespaces({**settings, "tenancy_enabled": False}) == []
    assert tenancy.team_namespaces(tenancy.DEFAULTS) == []
    # other addons may ask before the check ran: what is not a team is left out, not raised on
    assert tenancy.team_namespaces({**tenancy.DEFAULTS, "teams": {"a": None, "b": {"namespaces": ["b-1"]}}}) == ["b-1"]
    assert tenancy.namespace_levels(settings) == dict.fromkeys(["data-etl", "shop-api", "shop-web"], "restricted")


def test_addon_namespaces_join_the_namespaces_of_other_addons() -> None:
    plain = addon.Addon("a", {"a_enabled": True}, (), dict, namespace="ns-a", pod_security="baseline")
    extra = addon.Addon("b", {"b_enabled": True}, (), dict, namespaces=lambda _: {"ns-b": "restricted"})
    # sharing a namespace: still the looser level
    shared = addon.Addon("c", {"c_enabled": True}, (), dict, namespaces=lambda _: {"ns-a": "restricted"})
    off = addon.Addon("d", {"d_enabled": False}, (), dict, namespaces=lambda _: {"ns-d": "restricted"})
    settings = {"a_enabled": True, "b_enabled": True, "c_enabled": True, "d_enabled": False}
    assert cluster_addons.namespaces([plain, extra, shared, off], settings) == {
        "ns-a": "baseline",
        "ns-b": "restricted",
    }


def test_namespaces_set_makes_team_namespaces_restricted() -> None:
    files = {FileStates: lambda paths, **_: dict.fromkeys(paths), AddonSets: {}}
    result = run_component(cluster_addons.COMPONENT, facts=files, data={**CP, "teams": SAMPLE})
    uploaded = yaml.safe_load_all(result.uploads[NAMESPACES])
    found = {doc["metadata"]["name"]: doc["metadata"]["labels"] for doc in uploaded if doc}
    for name in ("data-etl", "shop-api", "shop-web"):
        assert found[name] == {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "app.kubernetes.io/managed-by": "spectra",
            "spectra.io/addon-set": "namespaces",
        }
    # the addons' own namespaces keep their levels
    assert found["monitoring"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert found["logging-agents"]["pod-security.kubernetes.io/enforce"] == "privileged"
    off = run_component(cluster_addons.COMPONENT, facts=files, data={**CP, "teams": SAMPLE, "tenancy_enabled": False})
    names = {doc["metadata"]["name"] for doc in yaml.safe_load_all(off.uploads[NAMESPACES]) if doc}
    assert not names & {"data-etl", "shop-api", "shop-web"}


# --- bad teams ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"teams": {"shop": {"admins": ["group:a"]}}}, r"teams\['shop'\]\.namespaces=None: a team needs at least one"),
        ({"teams": {"shop": {"namespaces": []}}}, r"teams\['shop'\]\.namespaces=\[\]: a team needs at least one"),
        ({"teams": {"shop": {"namespaces": "shop"}}}, r"teams\['shop'\]\.namespaces='shop': .*\(a list\)"),
        ({"teams": ["shop"]}, r"teams=\['shop'\]: a mapping of team name"),
        ({"teams": {"shop": ["shop-web"]}}, r"teams\['shop'\]=\['shop-web'\]: a mapping with namespaces"),
        ({"teams": {"Shop": {"namespaces": ["shop"]}}}, r"teams\['Shop'\]: a team name is a DNS-1123 label"),
        ({"teams": {"shop": {"namespaces": ["shop_web"]}}}, r"teams\['shop'\]\.namespaces\[0\]='shop_web': a namesp"),
        ({"teams": {"shop": {"namespaces": ["s" * 64]}}}, r"teams\['shop'\]\.namespaces\[0\]='s{64}': .*DNS-1123"),
        ({"teams": {"shop": {"namespaces": ["kube-system"]}}}, r"namespaces\[0\]='kube-system': taken by the system"),
        ({"teams": {"shop": {"namespaces": ["default"]}}}, r"namespaces\[0\]='default': taken by the system"),
        ({"teams": {"shop": {"namespaces": ["kube-shop"]}}}, r"'kube-shop': taken by Kubernetes \(kube-\*\)"),
        ({"teams": {"shop": {"namespaces": ["monitoring"]}}}, r"'monitoring': taken by the \w+ addon"),
        ({"teams": {"shop": {"namespaces": ["logging"]}}}, r"'logging': taken by the victorialogs addon"),
        ({"teams": {"shop": {"namespaces": ["logging-agents"]}}}, r"'logging-agents': taken by the victorialogs-ag"),
        (
            {"teams": {"a": {"namespaces": ["web"]}, "b": {"namespaces": ["web"]}}},
            r"teams\['b'\]\.namespaces\[0\]='web': already a namespace of team 'a'",
        ),
        ({"teams": {"a": {"namespaces": ["web", "web"]}}}, r"namespaces\[1\]='web': already a namespace of team 'a'"),
        ({"teams": {"a": {"namespaces": ["a"], "members": []}}}, r"teams\['a'\]: unknown keys \['members'\]; known"),
        ({"teams": {"a": {"namespaces": ["a"], "admins": ["alice"]}}}, r"teams\['a'\]\.admins\[0\]='alice': 'user:"),
        ({"teams": {"a": {"namespaces": ["a"], "viewers": "group:x"}}}, r"teams\['a'\]\.viewers='group:x': a list"),
        (
            {"teams": {"a": {"namespaces": ["a"], "quota": {"pods": "lots"}}}},
            r"teams\['a'\]\.quota\['pods'\]='lots': a Kubernetes quantity",
        ),
        ({"teams": {"a": {"namespaces": ["a"], "quota": {"Pods!": "1"}}}}, r"teams\['a'\]\.quota\['Pods!'\]: not a"),
        ({"teams": {"a": {"namespaces": ["a"], "quota": {"pods": -1}}}}, r"teams\['a'\]\.quota\['pods'\]=-1: a Kub"),
        (
            {"teams": {"a": {"namespaces": ["a"], "limits": {"defaults": {}}}}},
            r"teams\['a'\]\.limits: unknown section 'defaults'",
        ),
        (
            {"teams": {"a": {"namespaces": ["a"], "limits": {"max": {"gpu": "1"}}}}},
            r"teams\['a'\]\.limits\['max'\]\['gpu'\]: not one of cpu, memory",
        ),
        (
            {"teams": {"a": {"namespaces": ["a"], "limits": {"default": {"cpu": "1 core"}}}}},
            r"teams\['a'\]\.limits\['default'\]\['cpu'\]='1 core': a Kubernetes quantity",
        ),
        (
            {"teams": {"a": {"namespaces": ["a"], "limits": {"default_request": {"cpu": "1"}}}}},
            r"teams\['a'\]\.limits: default_request\.cpu \(1\) is above default\.cpu \(500m\)",
        ),
        (
            {"teams": {"a": {"namespaces": ["a"], "limits": {"max": {"memory": "128Mi"}}}}},
            r"teams\['a'\]\.limits: default\.memory \(256Mi\) is above max\.memory \(128Mi\)",
        ),
        (
            {
                "teams": {
                    "a": {
                        "namespaces": ["a"],
                        "limits": {"default_request": {"memory": None}, "default": {"memory": None}},
                    }
                }
            },
            r"teams\['a'\]\.limits: quota requests\.memory needs a default_request\.memory",
        ),
        ({"tenancy_default_quota": {"pods": "1.5x"}}, r"tenancy_default_quota\['pods'\]='1.5x': a Kubernetes quantity"),
        (
            {"tenancy_default_limits": {"default": {"cpu": "100m", "memory": "1Gi"}, "max": {"cpu": "50m"}}},
            r"tenancy_default_limits: default\.cpu \(100m\) is above max\.cpu \(50m\)",
        ),
        ({"tenancy_default_limits": []}, r"tenancy_default_limits=\[\]: a mapping of min, default_request"),
    ],
)
def test_bad_teams_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    problems = tenancy.check({**tenancy.DEFAULTS, **data})
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_good_teams_and_the_defaults_pass() -> None:
    assert tenancy.check(tenancy.DEFAULTS) == []
    assert tenancy.check({**tenancy.DEFAULTS, "teams": SAMPLE}) == []
    assert tenancy.check({**tenancy.DEFAULTS, "teams": WEB}) == []
    # a quota on something the LimitRange does not fill in is fine: pods count, they state nothing
    assert (
        tenancy.check({**tenancy.DEFAULTS, "teams": {"a": {"namespaces": ["a"], "quota": {"count/jobs.batch": 3}}}})
        == []
    )


def test_a_team_without_namespace_stops_the_deploy_before_any_operation() -> None:
    with pytest.raises(DeployError, match=r"(?s)invalid settings:.*teams\['shop'\]\.namespaces=None"):
        run_component(tenancy.COMPONENT, facts={}, data={**CP, "teams": {"shop": {"admins": ["user:a"]}}})


def test_quantities_compare_by_amount() -> None:
    assert [tenancy.amount(v) for v in ("500m", "1", "1.5", "1Ki", "2Mi", "1G", 20)] == [
        tenancy.amount("0.5"), 1, tenancy.amount("1500m"), 1024, 2 * 1024**2, 10**9, 20,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        tenancy.amount("lots")


def test_the_lab_teams_pass_and_match_the_lab_test() -> None:
    """group_data/lab.py's teams (read as data: the file needs a pyinfra inventory) are valid, and the lab
    test's namespaces and figures are theirs."""
    source = (ROOT / "group_data" / "lab.py").read_text()
    assignments = [node for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    (teams,) = [ast.literal_eval(node.value) for node in assignments
                if [getattr(target, "id", None) for target in node.targets] == ["teams"]]  # fmt: skip
    assert tenancy.check({**tenancy.DEFAULTS, "teams": teams}) == []
    from tests.lab import test_tenancy as lab_test

    settings = {**tenancy.DEFAULTS, "teams": teams}
    owners = {ns: team for team, spec in teams.items() for ns in spec["namespaces"]}
    assert owners[lab_test.NAMESPACE] == owners[lab_test.SIBLING] != owners[lab_test.OTHER_TEAM]
    own = teams[owners[lab_test.NAMESPACE]]
    assert tenancy.merged_quota(settings, own)["pods"] == lab_test.POD_QUOTA
    limits = tenancy.merged_limits(settings, own)
    assert (limits["default_request"], limits["default"]) == (lab_test.DEFAULT_REQUESTS, lab_test.DEFAULT_LIMITS)
