#!/usr/bin/env python3
"""Checks the compose stack's Grafana provisioning without running Grafana
(no Grafana image can be pulled on the test machine):

* every provisioning file and the Prometheus config parse as YAML;
* the datasource uids the dashboards reference exist (and the exemplar link
  of the Prometheus datasource points at an existing datasource);
* the dashboard provider's path is where the compose file mounts dashboards/,
  and that directory holds the dashboards;
* every dashboard has a stable uid and `id: null`.

Exits 1 with one line per problem.
"""
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
problems = []


def load_yaml(path):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path.relative_to(ROOT)}: {e}")
        return None


def datasource_uids_in(node, found):
    """Collects every `datasource: {uid: ...}` (or string) a dashboard uses."""
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            found.add(ds["uid"])
        elif isinstance(ds, str):
            found.add(ds)
        for key, value in node.items():
            if key == "datasourceUid" and isinstance(value, str):
                found.add(value)
            datasource_uids_in(value, found)
    elif isinstance(node, list):
        for item in node:
            datasource_uids_in(item, found)


compose = load_yaml(DEPLOY / "docker-compose.yml") or {}
for path in [DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "prometheus" / "alerts.yml"]:
    load_yaml(path)

datasources = {}
for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
    doc = load_yaml(path) or {}
    for ds in doc.get("datasources", []):
        if not ds.get("uid"):
            problems.append(f"{path.relative_to(ROOT)}: datasource {ds.get('name')!r} has no fixed uid")
            continue
        datasources[ds["uid"]] = ds
if "prometheus" not in {ds.get("type") for ds in datasources.values()}:
    problems.append("no Prometheus datasource is provisioned")
for uid, ds in datasources.items():
    for link in ds.get("jsonData", {}).get("exemplarTraceIdDestinations", []):
        if link.get("datasourceUid") not in datasources:
            problems.append(f"datasource {uid}: exemplar link to unknown datasource uid {link.get('datasourceUid')!r}")

# Where the compose file mounts dashboards/ inside the Grafana container.
grafana = (compose.get("services") or {}).get("grafana") or {}
mounts = {}
for volume in grafana.get("volumes", []):
    parts = str(volume).split(":")
    if len(parts) >= 2:
        mounts[parts[1]] = (DEPLOY / parts[0]).resolve()
if "/etc/grafana/provisioning" not in mounts or mounts["/etc/grafana/provisioning"] != PROVISIONING.resolve():
    problems.append("the compose file does not mount deploy/grafana/provisioning at /etc/grafana/provisioning")

dashboard_files = []
for path in sorted((PROVISIONING / "dashboards").glob("*.y*ml")):
    doc = load_yaml(path) or {}
    for provider in doc.get("providers", []):
        target = (provider.get("options") or {}).get("path")
        host_dir = mounts.get(target)
        if host_dir is None:
            problems.append(f"{path.relative_to(ROOT)}: provider path {target!r} is not a mount of the grafana service")
            continue
        files = sorted(host_dir.glob("*.json"))
        if not files:
            problems.append(f"{path.relative_to(ROOT)}: {host_dir} (mounted at {target}) holds no dashboards")
        dashboard_files.extend(files)

if not dashboard_files:
    problems.append("no dashboard is provisioned")
for path in dashboard_files:
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.relative_to(ROOT)}: {e}")
        continue
    used = set()
    datasource_uids_in(dashboard, used)
    # Grafana's built-in annotation source, and template variables.
    used = {u for u in used if u != "-- Grafana --" and not u.startswith("$")}
    for uid in sorted(used - set(datasources)):
        problems.append(f"{path.relative_to(ROOT)}: references datasource uid {uid!r}, which is not provisioned")
    if not dashboard.get("uid"):
        problems.append(f"{path.relative_to(ROOT)}: no stable uid")
    if dashboard.get("id") is not None:
        problems.append(f"{path.relative_to(ROOT)}: id must be null")

for problem in problems:
    print(f"provisioning: {problem}")
if problems:
    sys.exit(1)
print(f"provisioning: {len(datasources)} datasources ({', '.join(sorted(datasources))}), "
      f"{len(dashboard_files)} dashboards, every referenced uid provisioned")
