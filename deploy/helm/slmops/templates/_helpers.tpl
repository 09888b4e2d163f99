{{/*
Names, labels and shared pieces of the slmops chart.
*/}}

{{- define "slmops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, cut to 63 characters (DNS label). Components append a suffix,
so it is cut to 50 first.
*/}}
{{- define "slmops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "slmops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slmops.labels" -}}
helm.sh/chart: {{ include "slmops.chart" . }}
{{ include "slmops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slmops
{{- end }}

{{- define "slmops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slmops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "serve"). */}}
{{- define "slmops.componentSelectorLabels" -}}
{{ include "slmops.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "slmops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slmops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slmops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "slmops.secretName" -}}
{{- default (printf "%s-secrets" (include "slmops.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "slmops.configMapName" -}}
{{- printf "%s-settings" (include "slmops.fullname" .) }}
{{- end }}

{{- define "slmops.configTomlName" -}}
{{- printf "%s-config-toml" (include "slmops.fullname" .) }}
{{- end }}

{{- define "slmops.claimName" -}}
{{- default (printf "%s-workspace" (include "slmops.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "slmops.rayClusterName" -}}
{{- printf "%s-ray" (include "slmops.fullname" .) }}
{{- end }}

{{/* Where the API keys file is mounted; serve and ui read it with --keys-file. */}}
{{- define "slmops.keysFile" -}}
/etc/slmops/keys/api-keys
{{- end }}

{{/*
Settings that cannot work together fail the render with a message, not the pods later.
*/}}
{{- define "slmops.validate" -}}
{{- $scaled := or .Values.autoscaling.enabled (gt (int .Values.serve.replicaCount) 1) }}
{{- if $scaled }}
{{- if not (or .Values.secrets.databaseUrl .Values.secrets.existingSecret) }}
{{- fail "more than one serve replica (autoscaling.enabled or serve.replicaCount > 1) needs a shared metadata database: set secrets.databaseUrl, or secrets.existingSecret with a database-url key" }}
{{- end }}
{{- if and .Values.persistence.enabled (has "ReadWriteOnce" .Values.persistence.accessModes) }}
{{- fail "more than one serve replica cannot share a ReadWriteOnce workspace volume: use persistence.accessModes=[ReadWriteMany], or persistence.enabled=false with s3:// artifacts" }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- range .Values.secrets.apiKeys }}
{{- if lt (len .) 16 }}
{{- fail "every key in secrets.apiKeys must be at least 16 characters (slmops refuses shorter ones)" }}
{{- end }}
{{- end }}
{{- if .Values.ray.enabled }}
{{- $w := .Values.ray.worker }}
{{- if or (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) }}
{{- fail "ray.worker.replicas must lie between ray.worker.minReplicas and ray.worker.maxReplicas" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment shared by serve and the console: settings from the ConfigMap, credentials
from the Secret (the optional ones may be absent).
*/}}
{{- define "slmops.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "slmops.configMapName" . }}
env:
  - name: SLMOPS_DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "slmops.secretName" . }}
        key: database-url
        optional: true
  - name: AWS_ACCESS_KEY_ID
    valueFrom:
      secretKeyRef:
        name: {{ include "slmops.secretName" . }}
        key: aws-access-key-id
        optional: true
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "slmops.secretName" . }}
        key: aws-secret-access-key
        optional: true
{{- end }}

{{/* Volumes shared by serve and the console. */}}
{{- define "slmops.volumes" -}}
- name: workspace
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "slmops.claimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: api-keys
  secret:
    secretName: {{ include "slmops.secretName" . }}
    defaultMode: 0440
    items:
      - key: api-keys
        path: api-keys
- name: tmp
  emptyDir: {}
- name: cache
  emptyDir: {}
{{- if .Values.settings.configToml }}
- name: settings
  configMap:
    name: {{ include "slmops.configTomlName" . }}
    items:
      - key: config.toml
        path: config.toml
{{- end }}
{{- end }}

{{- define "slmops.volumeMounts" -}}
- name: workspace
  mountPath: /workspace
- name: api-keys
  mountPath: /etc/slmops/keys
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /home/slmops/.cache
{{- if .Values.settings.configToml }}
- name: settings
  mountPath: /workspace/config.toml
  subPath: config.toml
  readOnly: true
{{- end }}
{{- end }}
