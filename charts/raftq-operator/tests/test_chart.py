"""Lints and renders the raftq-operator chart with the real Helm library
(helm-python-sdk) and checks the objects it produces."""

import json
import pathlib
import unittest

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent
ROOT = CHART.parent.parent


def render(values=None, namespace="raftq-system"):
    chart = helm.Chart.load(str(CHART))
    try:
        files = chart.render(values or {}, name="raftq", namespace=namespace, is_install=True)
    finally:
        chart.close()
    objects = []
    for path, text in files.items():
        if not path.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects, files


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def main_cluster_role(objects):
    """The ClusterRole with the operator's rules (not the Nodes' zones)."""
    return [r for r in by_kind(objects, "ClusterRole") if not r["metadata"]["name"].endswith("node-zones")][0]


class ChartTest(unittest.TestCase):
    def test_lint_is_clean_in_strict_mode(self):
        report = helm.lint(str(CHART), strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        self.assertEqual(problems, [], report)

    def test_default_install_watches_every_namespace(self):
        objects, _ = render()
        kinds = sorted(o["kind"] for o in objects)
        self.assertEqual(
            kinds,
            [
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "RoleBinding",
                "ServiceAccount",
            ],
        )
        deployment = by_kind(objects, "Deployment")[0]
        self.assertEqual(deployment["metadata"]["namespace"], "raftq-system")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(container["image"], "ghcr.io/raftq/raftq-operator:0.1.0")
        env = env_of(container)
        self.assertEqual(env["WATCH_NAMESPACES"], "")
        self.assertEqual(env["RAFTQ_LOG"], "info")
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        sa = by_kind(objects, "ServiceAccount")[0]["metadata"]["name"]
        self.assertEqual(deployment["spec"]["template"]["spec"]["serviceAccountName"], sa)
        binding = by_kind(objects, "ClusterRoleBinding")[0]
        self.assertEqual(binding["subjects"][0], {"kind": "ServiceAccount", "name": sa, "namespace": "raftq-system"})

    def test_rbac_is_least_privilege(self):
        objects, _ = render()
        rules = main_cluster_role(objects)["rules"]
        granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        for rule in rules:
            self.assertNotIn("*", rule["verbs"] + rule["resources"] + rule["apiGroups"], rule)
        # What reconcile does, and nothing more: Secrets by name only (no
        # list or watch), no pods, no deletes of data.
        self.assertIn(("apps", "statefulsets", "patch"), granted)
        self.assertIn(("raftq.dev", "jobqueues/status", "patch"), granted)
        self.assertIn(("events.k8s.io", "events", "create"), granted)
        for verb in ("get", "create", "patch"):
            self.assertIn(("", "secrets", verb), granted)
        for verb in ("list", "watch", "delete", "update"):
            self.assertNotIn(("", "secrets", verb), granted)
        # The owned kinds the controller watches can be watched.
        for kind in ("configmaps", "services"):
            self.assertIn(("", kind, "watch"), granted)
        self.assertIn(("policy", "poddisruptionbudgets", "watch"), granted)
        # Pods are listed (for the Node each runs on: its zone), nothing
        # more; Nodes are read by name, in a role of their own.
        self.assertEqual({v for _, r, v in granted if r == "pods"}, {"list"})
        self.assertFalse(any(r == "persistentvolumeclaims" for _, r, _ in granted))
        zones = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("node-zones")]
        self.assertEqual(zones[0]["rules"], [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
        self.assertNotIn(("apps", "statefulsets", "delete"), granted)
        self.assertFalse(any(g == "cert-manager.io" for g, _, _ in granted))

    def test_cert_manager_support_grants_certificates_only_when_on(self):
        objects, files = render({"certManager": {"enabled": True}})
        rules = main_cluster_role(objects)["rules"]
        granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        self.assertIn(("cert-manager.io", "certificates", "create"), granted)
        notes = next(text for path, text in files.items() if path.endswith("NOTES.txt"))
        self.assertIn("tls.mode: certManager", notes)
        lease_role = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("leader-election")][0]
        self.assertEqual(lease_role["metadata"]["namespace"], "raftq-system")
        self.assertEqual(lease_role["rules"][0]["resources"], ["leases"])

    def test_watched_namespaces_get_roles_not_a_cluster_role(self):
        objects, _ = render({"watchNamespaces": ["team-a", "team-b"], "logLevel": "debug"})
        # Only the Nodes' zones, which are cluster-wide.
        self.assertEqual(
            [r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")], ["raftq-raftq-operator-node-zones"]
        )
        namespaces = sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")
                            if not r["metadata"]["name"].endswith("leader-election"))
        self.assertEqual(namespaces, ["team-a", "team-b"])
        container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(env_of(container)["WATCH_NAMESPACES"], "team-a,team-b")
        self.assertEqual(env_of(container)["RAFTQ_LOG"], "debug")

    def test_image_and_resources_come_from_values(self):
        objects, _ = render({"image": {"repository": "registry.example/op", "tag": "9.9"},
                             "resources": {"limits": {"memory": "1Gi"}}})
        container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(container["image"], "registry.example/op:9.9")
        self.assertEqual(container["resources"]["limits"], {"memory": "1Gi"})

    def test_bad_values_are_rejected_by_the_schema(self):
        for bad in ({"logLevel": "loud"}, {"replicaCount": 0}, {"watchNamespaces": ["Not_A_Namespace"]},
                    {"unknownKey": 1}, {"certManager": {"enabled": "yes"}}):
            with self.subTest(values=bad):
                with self.assertRaises(helm.HelmError):
                    render(bad)

    def test_chart_ships_the_generated_crd(self):
        chart_crd = (CHART / "crds" / "jobqueue.yaml").read_text()
        self.assertEqual(chart_crd, (ROOT / "crds" / "jobqueue.yaml").read_text())
        crd = yaml.safe_load(chart_crd)
        self.assertEqual(crd["metadata"]["name"], "jobqueues.raftq.dev")

    def test_notes_tell_the_user_what_to_do_next(self):
        _, files = render()
        notes = next(text for path, text in files.items() if path.endswith("NOTES.txt"))
        self.assertIn("kind: JobQueue", notes)
        self.assertIn("kubectl get jobqueues", notes)
        self.assertIn("jobs-admin", notes)
        self.assertIn("jobs-ca-bundle", notes)

    def test_examples_are_valid_jobqueues(self):
        crd = yaml.safe_load((ROOT / "crds" / "jobqueue.yaml").read_text())
        spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        jobqueues = 0
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc.get("kind") != "JobQueue":
                    continue
                jobqueues += 1
                with self.subTest(example=path.name):
                    self.assertEqual(doc["apiVersion"], "raftq.dev/v1alpha1")
                    unknown = set(doc["spec"]) - set(spec_schema["properties"])
                    self.assertEqual(unknown, set(), f"{path.name}: fields not in the CRD")
                    replicas = doc["spec"]["replicas"]
                    self.assertTrue(1 <= replicas <= 7 and replicas % 2 == 1, path.name)
        self.assertGreater(jobqueues, 0, "no JobQueue among the examples")

    def test_the_keda_example_uses_only_keys_the_scaler_reads(self):
        # The node refuses any other key (queue-node/src/service/scaler.rs).
        known = {"scalerAddress", "enableTLS", "unsafeSsl", "queue", "targetPerReplica",
                 "activationBacklog", "includeLeased", "tokenFromEnv"}
        docs = list(yaml.safe_load_all((ROOT / "examples" / "keda-scaledobject.yaml").read_text()))
        scaled = [d for d in docs if d["kind"] == "ScaledObject"]
        self.assertEqual(len(scaled), 1)
        triggers = scaled[0]["spec"]["triggers"]
        self.assertTrue(triggers)
        for trigger in triggers:
            self.assertIn(trigger["type"], ("external", "external-push"))
            self.assertEqual(set(trigger["metadata"]) - known, set())
            self.assertIn("queue", trigger["metadata"])

if __name__ == "__main__":
    unittest.main()


class MonitoringTest(unittest.TestCase):
    def test_off_by_default(self):
        objects, _ = render()
        kinds = {o["kind"] for o in objects}
        self.assertFalse(kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}, kinds)
        self.assertEqual([o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]], [])

    def test_monitors_rules_and_dashboard_when_on(self):
        values = {
            "monitoring": {
                "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": True, "oldestReadyMinutes": 3, "certificateExpiryDays": 7},
                "grafanaDashboard": {"enabled": True, "namespace": "grafana"},
            }
        }
        objects, _ = render(values)
        # The nodes' ServiceMonitors are the operator's (one per JobQueue).
        self.assertEqual(by_kind(objects, "ServiceMonitor"), [])
        (operator,) = by_kind(objects, "PodMonitor")
        self.assertEqual(operator["metadata"]["labels"]["release"], "prom")
        self.assertEqual(operator["spec"]["podMetricsEndpoints"][0]["port"], "http")
        (rule,) = by_kind(objects, "PrometheusRule")
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        for name in [
            "RaftqShardWithoutLeader",
            "RaftqDeadLettersGrowing",
            "RaftqOldestReadyJobTooOld",
            "RaftqReplicaLagging",
            "RaftqCertificateExpiringSoon",
        ]:
            self.assertIn(name, alerts)
        self.assertTrue(alerts["RaftqOldestReadyJobTooOld"]["expr"].endswith("> 180"), alerts["RaftqOldestReadyJobTooOld"]["expr"])
        self.assertTrue(alerts["RaftqCertificateExpiringSoon"]["expr"].endswith("< 604800"))
        self.assertIn("{{ $labels.queue }}", alerts["RaftqOldestReadyJobTooOld"]["annotations"]["summary"])
        (dashboard,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
        self.assertEqual(dashboard["metadata"]["namespace"], "grafana")
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        board = json.loads(dashboard["data"]["raftq.json"])
        self.assertEqual(board["uid"], "raftq-overview")
        self.assertGreaterEqual(len([p for p in board["panels"] if p["type"] != "row"]), 15)

    def test_the_operator_may_manage_service_monitors(self):
        for values in [{}, {"watchNamespaces": ["jobs"]}]:
            objects, _ = render(values)
            roles = by_kind(objects, "ClusterRole") + by_kind(objects, "Role")
            rules = [r for role in roles for r in role["rules"] if "servicemonitors" in r["resources"]]
            self.assertTrue(rules, values)
            self.assertEqual(rules[0]["apiGroups"], ["monitoring.coreos.com"])
            self.assertIn("delete", rules[0]["verbs"])

    def test_bad_monitoring_values_are_refused(self):
        for bad in [
            {"monitoring": {"podMonitor": {"interval": "often"}}},
            # The nodes' monitors moved to the JobQueue's spec.monitoring.
            {"monitoring": {"serviceMonitor": {"enabled": True}}},
            {"monitoring": {"prometheusRule": {"oldestReadyMinutes": 0}}},
            {"monitoring": {"grafanaDashboard": {"enable": True}}},
        ]:
            with self.subTest(values=bad), self.assertRaises(helm.HelmError):
                render(bad)
