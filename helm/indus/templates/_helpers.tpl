{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "indus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "indus.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "indus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "indus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "indus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "indus.labels" -}}
helm.sh/chart: {{ include "indus.chart" . }}
{{ include "indus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference-server
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod labels leave out the chart version, so a chart-only upgrade restarts no GPU pod. */}}
{{- define "indus.podLabels" -}}
{{ include "indus.selectorLabels" . }}
app.kubernetes.io/component: inference-server
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "indus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "indus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "indus.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "indus.cacheClaimName" -}}
{{- default (printf "%s-model-cache" (include "indus.fullname" .)) .Values.modelCache.persistence.existingClaim }}
{{- end }}

{{- define "indus.chatTemplateConfigMap" -}}
{{- default (printf "%s-chat-template" (include "indus.fullname" .)) .Values.engine.chatTemplate.existingConfigMap }}
{{- end }}

{{- define "indus.hasChatTemplate" -}}
{{- if or .Values.engine.chatTemplate.content .Values.engine.chatTemplate.existingConfigMap }}true{{- end }}
{{- end }}

{{- define "indus.terminationGracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.engine.shutdownTimeout) (int .Values.lifecycle.terminationGraceExtraSeconds) }}
{{- end }}

{{/* Checks of combinations the schema cannot express; fail renders with a clear message. */}}
{{- define "indus.validate" -}}
{{- $m := .Values.model }}
{{- if and (eq $m.source "hub") (not $m.id) }}
{{- fail "model.source=hub needs model.id (a hub id such as meta-llama/Llama-3.1-8B-Instruct)" }}
{{- end }}
{{- if and (eq $m.source "pvc") (not $m.pvc.claimName) }}
{{- fail "model.source=pvc needs model.pvc.claimName" }}
{{- end }}
{{- if and (eq $m.source "pvc") (not $m.pvc.path) (not $m.id) }}
{{- fail "model.source=pvc needs model.pvc.path (a model directory in the claim) or model.id (the claim is an HF_HOME cache)" }}
{{- end }}
{{- if and (gt (int .Values.gpu.count) 0) (gt (int .Values.engine.tensorParallelSize) (int .Values.gpu.count)) }}
{{- fail (printf "engine.tensorParallelSize=%d needs at least that many GPUs per pod (gpu.count=%d)" (int .Values.engine.tensorParallelSize) (int .Values.gpu.count)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/* The MODEL argument of `indus serve`; empty for the embedded test model. */}}
{{- define "indus.modelArg" -}}
{{- $m := .Values.model }}
{{- if eq $m.source "hub" }}
{{- $m.id }}
{{- else if eq $m.source "pvc" }}
{{- if $m.pvc.path }}
{{- printf "/models/%s" (trimPrefix "/" $m.pvc.path) }}
{{- else }}
{{- $m.id }}
{{- end }}
{{- end }}
{{- end }}

{{- define "indus.servedModelName" -}}
{{- if .Values.engine.servedModelName }}
{{- .Values.engine.servedModelName }}
{{- else if ne .Values.model.source "embedded" }}
{{- .Values.model.id }}
{{- end }}
{{- end }}

{{- define "indus.device" -}}
{{- if .Values.engine.device }}
{{- .Values.engine.device }}
{{- else if gt (int .Values.gpu.count) 0 }}
{{- "cuda:0" }}
{{- else }}
{{- "cpu" }}
{{- end }}
{{- end }}

{{/* The port /metrics is served on: metrics.port (indus --metrics-port, no key needed),
or the API port when it is null (then /metrics needs a key whenever keys are set). */}}
{{- define "indus.metricsPort" -}}
{{- if kindIs "invalid" .Values.metrics.port }}{{ .Values.engine.port }}{{ else }}{{ .Values.metrics.port | int64 }}{{ end }}
{{- end }}

{{/* `indus serve` arguments, one per line, from .Values.engine. */}}
{{- define "indus.serveArgs" -}}
{{- $e := .Values.engine }}
{{- $model := include "indus.modelArg" . }}
{{- if $model }}
- {{ $model | quote }}
{{- end }}
- --host
- "0.0.0.0"
- --port
- {{ $e.port | quote }}
{{- if not (kindIs "invalid" .Values.metrics.port) }}
- --metrics-port
- {{ .Values.metrics.port | int64 | toString | quote }}
{{- end }}
{{- with include "indus.servedModelName" . }}
- --served-model-name
- {{ . | quote }}
{{- end }}
- --device
- {{ include "indus.device" . | quote }}
{{- if ne $e.dtype "auto" }}
- --dtype
- {{ $e.dtype | quote }}
{{- end }}
{{- if ne $e.loadFormat "auto" }}
- --load-format
- {{ $e.loadFormat | quote }}
{{- end }}
{{- range $flag, $value := dict "max-model-len" $e.maxModelLen "max-num-seqs" $e.maxNumSeqs "max-num-batched-tokens" $e.maxNumBatchedTokens "seed" $e.seed "max-waiting-requests" $e.maxWaitingRequests }}
{{- if not (kindIs "invalid" $value) }}
- --{{ $flag }}
- {{ $value | int64 | toString | quote }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $e.blockSize) }}
- --block-size
- {{ $e.blockSize | int64 | toString | quote }}
{{- end }}
{{- if $e.kvCacheMemory }}
- --kv-cache-memory
- {{ $e.kvCacheMemory | quote }}
{{- end }}
{{- if not (kindIs "invalid" $e.gpuMemoryUtilization) }}
- --gpu-memory-utilization
- {{ $e.gpuMemoryUtilization | toString | quote }}
{{- end }}
- --shutdown-timeout
- {{ $e.shutdownTimeout | int64 | toString | quote }}
{{- if not $e.enablePrefixCaching }}
- --no-enable-prefix-caching
{{- end }}
{{- if gt (int $e.tensorParallelSize) 1 }}
- --tensor-parallel-size
- {{ $e.tensorParallelSize | int64 | toString | quote }}
{{- end }}
- --log-format
- {{ $e.logFormat | quote }}
{{- if include "indus.hasChatTemplate" . }}
- --chat-template
- /etc/indus/chat-template/{{ $e.chatTemplate.key }}
{{- end }}
{{- if .Values.auth.keysFileSecret }}
- --api-keys-file
- /etc/indus/keys/{{ .Values.auth.keysFileSecretKey }}
{{- end }}
{{- if .Values.audit.enabled }}
- --audit-log
- {{ printf "%s/$(POD_NAME).jsonl" .Values.audit.mountPath | quote }}
{{- if .Values.audit.logContent }}
- --audit-log-content
{{- end }}
{{- end }}
{{- range $e.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Volume for the model at /models: source-dependent. */}}
{{- define "indus.modelVolume" -}}
{{- if eq .Values.model.source "pvc" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: {{ .Values.model.pvc.readOnly }}
{{- else if and .Values.modelCache.persistence.enabled (eq .Values.workload.kind "StatefulSet") (not .Values.modelCache.persistence.existingClaim) }}
{{- /* from volumeClaimTemplates */}}
{{- else if .Values.modelCache.persistence.enabled }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "indus.cacheClaimName" . }}
{{- else }}
- name: models
  emptyDir:
    {{- with .Values.modelCache.emptyDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The pod template shared by the Deployment and the StatefulSet. */}}
{{- define "indus.podTemplate" -}}
{{- $fullname := include "indus.fullname" . -}}
metadata:
  labels:
    {{- include "indus.podLabels" . | nindent 4 }}
  {{- $annotations := deepCopy (default dict .Values.podAnnotations) }}
  {{- with .Values.engine.chatTemplate.content }}
  {{- $_ := set $annotations "checksum/chat-template" (. | sha256sum | trunc 16) }}
  {{- end }}
  {{- if .Values.metrics.podAnnotations }}
  {{- $_ := set $annotations "prometheus.io/scrape" "true" }}
  {{- $_ := set $annotations "prometheus.io/port" (toString (include "indus.metricsPort" .)) }}
  {{- $_ := set $annotations "prometheus.io/path" "/metrics" }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "indus.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "indus.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if eq .Values.model.source "hub" }}
  initContainers:
    - name: download-model
      image: {{ include "indus.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /usr/local/bin/indus
        - download
        - {{ .Values.model.id | quote }}
        {{- with .Values.model.revision }}
        - --revision
        - {{ . | quote }}
        {{- end }}
      env:
        - name: HF_HOME
          value: /models
        {{- with .Values.model.hfEndpoint }}
        - name: HF_ENDPOINT
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.model.hfToken.existingSecret }}
        - name: HF_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: {{ $.Values.model.hfToken.secretKey }}
        {{- end }}
        - name: INDUS_LOG_FORMAT
          value: {{ .Values.engine.logFormat | quote }}
        {{- with .Values.model.download.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.model.download.resources | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
        - name: tmp
          mountPath: /tmp
  {{- end }}
  containers:
    - name: indus
      image: {{ include "indus.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command:
        - /usr/local/bin/indus
        - serve
      args:
        {{- include "indus.serveArgs" . | trim | nindent 8 }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: HF_HOME
          value: /models
        {{- if ne .Values.model.source "embedded" }}
        - name: HF_HUB_OFFLINE
          value: "1"
        {{- end }}
        {{- if and (eq .Values.model.source "hub") .Values.model.revision }}
        - name: INDUS_REVISION
          value: {{ .Values.model.revision | quote }}
        {{- end }}
        - name: CUDA_CACHE_PATH
          value: /tmp/nv-compute-cache
        {{- if .Values.auth.existingSecret }}
        - name: INDUS_API_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ .Values.auth.existingSecret }}
              key: {{ .Values.auth.apiKeysSecretKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.engine.port }}
          protocol: TCP
        {{- if not (kindIs "invalid" .Values.metrics.port) }}
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: {{ .Values.probes.startup.path }}
          port: http
        periodSeconds: {{ .Values.probes.startup.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.startup.failureThreshold }}
      readinessProbe:
        httpGet:
          path: {{ .Values.probes.readiness.path }}
          port: http
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
        successThreshold: {{ .Values.probes.readiness.successThreshold }}
      livenessProbe:
        httpGet:
          path: {{ .Values.probes.liveness.path }}
          port: http
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      {{- if gt (int .Values.lifecycle.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          exec:
            command:
              - /bin/sleep
              - {{ .Values.lifecycle.preStopSleepSeconds | int64 | toString | quote }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- $resources := deepCopy (default dict .Values.resources) }}
        {{- if gt (int .Values.gpu.count) 0 }}
        {{- $limits := default dict (get $resources "limits") }}
        {{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: /models
          {{- if and (eq .Values.model.source "pvc") .Values.model.pvc.readOnly }}
          readOnly: true
          {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if .Values.shm.enabled }}
        - name: shm
          mountPath: /dev/shm
        {{- end }}
        {{- if include "indus.hasChatTemplate" . }}
        - name: chat-template
          mountPath: /etc/indus/chat-template
          readOnly: true
        {{- end }}
        {{- if .Values.auth.keysFileSecret }}
        - name: api-keys-file
          mountPath: /etc/indus/keys
          readOnly: true
        {{- end }}
        {{- if .Values.audit.enabled }}
        - name: audit
          mountPath: {{ .Values.audit.mountPath }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    {{- include "indus.modelVolume" . | trim | nindent 4 }}
    - name: tmp
      emptyDir:
        sizeLimit: 2Gi
    {{- if .Values.shm.enabled }}
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.shm.sizeLimit }}
    {{- end }}
    {{- if include "indus.hasChatTemplate" . }}
    - name: chat-template
      configMap:
        name: {{ include "indus.chatTemplateConfigMap" . }}
    {{- end }}
    {{- if .Values.auth.keysFileSecret }}
    - name: api-keys-file
      secret:
        secretName: {{ .Values.auth.keysFileSecret }}
        defaultMode: 0440
    {{- end }}
    {{- if .Values.audit.enabled }}
    - name: audit
      {{- if .Values.audit.existingClaim }}
      persistentVolumeClaim:
        claimName: {{ .Values.audit.existingClaim }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ .Values.audit.sizeLimit }}
      {{- end }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
