{{- define "tideflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tideflow.fullname" -}}
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

{{- define "tideflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tideflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "tideflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tideflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tideflow.image" -}}
{{- $image := .image | default dict -}}
{{- $repository := $image.repository | default .root.Values.image.repository -}}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{ printf "%s:%s" $repository $tag }}
{{- end }}

{{- define "tideflow.secretName" -}}
{{ include "tideflow.fullname" . }}
{{- end }}

{{/* One secret setting's env entry: (dict "root" $ "env" "TIDEFLOW_DATABASE_URL" "field" "databaseUrl" "key" "database-url"). */}}
{{- define "tideflow.secretEnv" -}}
{{- $existing := index .root.Values.secrets.existing .field -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
{{- if $existing.name }}
      name: {{ $existing.name }}
      key: {{ $existing.key }}
{{- else }}
      name: {{ include "tideflow.secretName" .root }}
      key: {{ .key }}
{{- end }}
{{- end }}

{{- define "tideflow.apiUrl" -}}
{{- .Values.config.apiUrl | default (printf "http://%s-api:%v" (include "tideflow.fullname" .) .Values.api.service.port) -}}
{{- end }}

{{/* The TIDEFLOW_* settings every tideflow container gets: each field of tideflow.Settings. */}}
{{- define "tideflow.env" -}}
{{ include "tideflow.secretEnv" (dict "root" . "env" "TIDEFLOW_DATABASE_URL" "field" "databaseUrl" "key" "database-url") }}
{{ include "tideflow.secretEnv" (dict "root" . "env" "TIDEFLOW_BROKER_URL" "field" "brokerUrl" "key" "broker-url") }}
{{ include "tideflow.secretEnv" (dict "root" . "env" "TIDEFLOW_EVENT_KEY" "field" "eventKey" "key" "event-key") }}
{{- if or .Values.secrets.existing.eventKeys.name .Values.secrets.eventKeys }}
{{ include "tideflow.secretEnv" (dict "root" . "env" "TIDEFLOW_EVENT_KEYS" "field" "eventKeys" "key" "event-keys") }}
{{- else }}
- name: TIDEFLOW_EVENT_KEYS
  value: ""
{{- end }}
{{ include "tideflow.secretEnv" (dict "root" . "env" "TIDEFLOW_SIGNING_KEY" "field" "signingKey" "key" "signing-key") }}
- name: TIDEFLOW_API_URL
  value: {{ include "tideflow.apiUrl" . | quote }}
- name: TIDEFLOW_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: TIDEFLOW_ENV
  value: {{ .Values.config.env | quote }}
- name: TIDEFLOW_LEASE_S
  value: {{ .Values.config.leaseS | quote }}
- name: TIDEFLOW_RETRY_BACKOFF_BASE_MS
  value: {{ .Values.config.retryBackoffBaseMs | int | quote }}
- name: TIDEFLOW_METRICS_PORT
  value: {{ .Values.metrics.port | int | quote }}
- name: TIDEFLOW_CONNECT_TIMEOUT_S
  value: {{ .Values.config.connectTimeoutS | quote }}
- name: TIDEFLOW_STEP_TIMEOUT_S
  value: {{ .Values.config.stepTimeoutS | quote }}
- name: TIDEFLOW_SHUTDOWN_GRACE_S
  value: {{ .Values.workerDefaults.shutdownGraceS | quote }}
- name: TIDEFLOW_AUTH_PROXY_HEADER
  value: {{ .Values.config.authProxyHeader | quote }}
- name: TIDEFLOW_METRICS_AUTH
  value: {{ .Values.config.metricsAuth | quote }}
- name: TIDEFLOW_SESSION_TTL
  value: {{ .Values.config.sessionTtl | quote }}
- name: TIDEFLOW_RETENTION
  value: {{ .Values.config.retention | quote }}
- name: TIDEFLOW_DELIVERY_LIMIT
  value: {{ .Values.config.deliveryLimit | int | quote }}
- name: TIDEFLOW_MAX_BODY_BYTES
  value: {{ .Values.config.maxBodyBytes | int | quote }}
- name: TIDEFLOW_MAX_RUN_STATE_BYTES
  value: {{ .Values.config.maxRunStateBytes | int | quote }}
- name: TIDEFLOW_EVENT_KEY_RATE
  value: {{ .Values.config.eventKeyRate | quote }}
- name: TIDEFLOW_FETCH_CONCURRENCY
  value: {{ .Values.config.fetchConcurrency | int | quote }}
- name: TIDEFLOW_FETCH_ALLOW
  value: {{ .Values.config.fetchAllow | quote }}
{{- end }}

{{- define "tideflow.podSecurity" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "tideflow.metricsAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* A worker app's settings: workerDefaults overlaid with the app's own keys. */}}
{{- define "tideflow.worker" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.workerDefaults) (deepCopy .worker) -}}
{{- toYaml $merged -}}
{{- end }}

{{- define "tideflow.kedaCheck" -}}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.keda.enabled (not .Values.autoscaling.keda.skipCrdCheck) (not (.Capabilities.APIVersions.Has "keda.sh/v1alpha1")) -}}
{{- fail "autoscaling.keda.enabled is true but this cluster has no KEDA (API keda.sh/v1alpha1 is absent): install KEDA first (https://keda.sh), or set autoscaling.keda.enabled=false for a CPU HPA. To render offline, pass --api-versions keda.sh/v1alpha1 or set autoscaling.keda.skipCrdCheck=true." -}}
{{- end -}}
{{- end }}

{{/* Schedulers and workers serve no /health: their only HTTP endpoint is the metrics server
(TIDEFLOW_METRICS_PORT), started before the process connects. The probes check that this
process is up and answering; a lost database or broker is handled by the process itself,
which reconnects with backoff, so restarting it would not help. */}}
{{- define "tideflow.metricsProbes" -}}
readinessProbe:
  httpGet: {path: /metrics, port: metrics}
  periodSeconds: 10
livenessProbe:
  httpGet: {path: /metrics, port: metrics}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 6
{{- end }}
