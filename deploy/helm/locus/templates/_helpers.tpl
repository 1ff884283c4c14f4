{{/* Names ------------------------------------------------------------------------------------------- */}}
{{- define "locus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "locus.fullname" -}}
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

{{- define "locus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "locus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "locus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "locus.labels" -}}
helm.sh/chart: {{ include "locus.chart" . }}
{{ include "locus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: locus
{{- end }}

{{- define "locus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "locus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "locus.webService" -}}
{{- printf "%s-web" (include "locus.fullname" .) }}
{{- end }}

{{/* The chart's own Secret (inline values) and the copy a pre-install hook can read before it exists. */}}
{{- define "locus.secretName" -}}
{{- printf "%s-env" (include "locus.fullname" .) }}
{{- end }}
{{- define "locus.hookSecretName" -}}
{{- printf "%s-migrate-env" (include "locus.fullname" .) }}
{{- end }}

{{- define "locus.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Settings -------------------------------------------------------------------------------------------- */}}
{{- define "locus.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- printf "https://%s" (first .Values.ingress.hosts) }}
{{- else }}
{{- printf "http://%s:%v" (include "locus.webService" .) .Values.service.port }}
{{- end }}
{{- end }}

{{/* The in-cluster URL job workers call (the worker API), unless a pool or workerDefaults says otherwise. */}}
{{- define "locus.internalUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "locus.webService" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{- define "locus.allowedHosts" -}}
{{- $svc := include "locus.webService" . }}
{{- $hosts := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
{{- if .Values.ingress.enabled }}{{- $hosts = concat $hosts .Values.ingress.hosts }}{{- end }}
{{- $hosts = concat $hosts .Values.allowedHosts }}
{{- $public := urlParse (include "locus.publicUrl" .) }}
{{- $hosts = append $hosts (regexReplaceAll ":[0-9]+$" $public.host "") }}
{{- join "," (uniq $hosts) }}
{{- end }}

{{/* Non-secret environment of the portal processes (ConfigMap data and the migration hook's env). */}}
{{- define "locus.configData" -}}
LOCUS_MODE: production
DJANGO_SETTINGS_MODULE: portal.settings
LOCUS_VAR_DIR: /var/lib/locus
LOCUS_PUBLIC_URL: {{ include "locus.publicUrl" . | quote }}
ALLOWED_HOSTS: {{ include "locus.allowedHosts" . | quote }}
CSRF_TRUSTED_ORIGINS: {{ join "," (uniq (prepend .Values.csrfTrustedOrigins (include "locus.publicUrl" .))) | quote }}
LOCUS_CODE_VERSION: {{ default .Chart.AppVersion .Values.image.tag | quote }}
{{- if .Values.s3.bucket }}
AWS_STORAGE_BUCKET_NAME: {{ .Values.s3.bucket | quote }}
AWS_S3_REGION_NAME: {{ .Values.s3.region | quote }}
{{- if .Values.s3.endpointUrl }}
S3_ENDPOINT_URL: {{ .Values.s3.endpointUrl | quote }}
{{- end }}
{{- end }}
{{- range $k, $v := .Values.config }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/* SECRET_KEY: the value given, else the one already stored in the cluster, else a new random one. */}}
{{- define "locus.secretKey" -}}
{{- if .Values.secretKey.value }}
{{- .Values.secretKey.value }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "locus.secretName" .) }}
{{- if and $existing (hasKey $existing.data "SECRET_KEY") }}
{{- index $existing.data "SECRET_KEY" | b64dec }}
{{- else }}
{{- randAlphaNum 64 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Data of the chart's Secret: every inline value whose service has no existingSecret. */}}
{{- define "locus.secretData" -}}
{{- if not .Values.secretKey.existingSecret }}
SECRET_KEY: {{ include "locus.secretKey" . | b64enc | quote }}
{{- end }}
{{- if not .Values.database.existingSecret }}
DATABASE_URL: {{ .Values.database.url | b64enc | quote }}
{{- end }}
{{- if not .Values.broker.existingSecret }}
CELERY_BROKER_URL: {{ .Values.broker.url | b64enc | quote }}
{{- end }}
{{- if not .Values.email.existingSecret }}
EMAIL_URL: {{ .Values.email.url | b64enc | quote }}
{{- end }}
{{- if and .Values.s3.bucket (not .Values.s3.existingSecret) }}
AWS_ACCESS_KEY_ID: {{ .Values.s3.accessKeyId | b64enc | quote }}
AWS_SECRET_ACCESS_KEY: {{ .Values.s3.secretAccessKey | b64enc | quote }}
{{- end }}
{{- end }}

{{/* One secret env var: from the service's existingSecret, else from `secret` (the chart's or the hook's). */}}
{{- define "locus.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ default .secret .svc.existingSecret }}
      key: {{ if .svc.existingSecret }}{{ default .name .key }}{{ else }}{{ .name }}{{ end }}
{{- end }}

{{/* Secret env of the portal processes; `secret` names the Secret holding the inline values. */}}
{{- define "locus.portalSecretEnv" -}}
{{- $v := .root.Values }}
{{- include "locus.secretEnv" (dict "name" "SECRET_KEY" "svc" $v.secretKey "key" $v.secretKey.existingSecretKey "secret" .secret) }}
{{ include "locus.secretEnv" (dict "name" "DATABASE_URL" "svc" $v.database "key" $v.database.existingSecretKey "secret" .secret) }}
{{ include "locus.secretEnv" (dict "name" "CELERY_BROKER_URL" "svc" $v.broker "key" $v.broker.existingSecretKey "secret" .secret) }}
{{ include "locus.secretEnv" (dict "name" "EMAIL_URL" "svc" $v.email "key" $v.email.existingSecretKey "secret" .secret) }}
{{- if $v.s3.bucket }}
{{ include "locus.secretEnv" (dict "name" "AWS_ACCESS_KEY_ID" "svc" $v.s3 "key" "AWS_ACCESS_KEY_ID" "secret" .secret) }}
{{ include "locus.secretEnv" (dict "name" "AWS_SECRET_ACCESS_KEY" "svc" $v.s3 "key" "AWS_SECRET_ACCESS_KEY" "secret" .secret) }}
{{- end }}
{{- end }}

{{/* Restarts pods when the settings they read change. Hashes inputs, not the random SECRET_KEY. */}}
{{- define "locus.configChecksum" -}}
{{- $inputs := dict "config" (include "locus.configData" .) "secretKey" .Values.secretKey "database" .Values.database "broker" .Values.broker "email" .Values.email "s3" .Values.s3 "extraEnv" .Values.extraEnv }}
{{- toJson $inputs | sha256sum }}
{{- end }}

{{/* Pod pieces shared by the portal processes ----------------------------------------------------------- */}}
{{- define "locus.portalEnvFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "locus.fullname" . }}
env:
  {{- include "locus.portalSecretEnv" (dict "root" . "secret" (include "locus.secretName" .)) | nindent 2 }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "locus.writableVolumes" -}}
- name: tmp
  emptyDir: {}
- name: var
  emptyDir: {}
{{- end }}

{{- define "locus.writableMounts" -}}
- name: tmp
  mountPath: /tmp
- name: var
  mountPath: /var/lib/locus
{{- end }}

{{- define "locus.podSecurity" -}}
serviceAccountName: {{ include "locus.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "locus.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Job workers ---------------------------------------------------------------------------------------- */}}
{{/* A pool's values merged over workerDefaults; adds name, image, concurrency, grace, tolerations. */}}
{{- define "locus.pool" -}}
{{- $root := .root }}
{{- $pool := mergeOverwrite (deepCopy $root.Values.workerDefaults) (deepCopy .pool) }}
{{- $gpu := int (default 0 $pool.gpu) }}
{{- $_ := set $pool "gpu" $gpu }}
{{- $_ := set $pool "name" .name }}
{{- $_ := set $pool "fullname" (printf "%s-worker-%s" (include "locus.fullname" $root) .name | trunc 63 | trimSuffix "-") }}
{{- if not $pool.concurrency }}{{- $_ := set $pool "concurrency" (max 1 $gpu) }}{{- end }}
{{- $_ := set $pool "graceSeconds" (add (int $pool.maxJobSeconds) (int $pool.graceMarginSeconds) (int $pool.jobStopGraceSeconds)) }}
{{- if not $pool.image }}
{{- $_ := set $pool "image" (ternary $root.Values.gpuImage $root.Values.image (gt $gpu 0)) }}
{{- end }}
{{- if gt $gpu 0 }}
{{- $tolerations := default (list) $pool.tolerations }}
{{- $tolerated := false }}
{{- range $tolerations }}{{- if eq (toString .key) "nvidia.com/gpu" }}{{- $tolerated = true }}{{- end }}{{- end }}
{{- if not $tolerated }}
{{- $_ := set $pool "tolerations" (append $tolerations (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule")) }}
{{- end }}
{{- end }}
{{- if not (hasKey $pool "keda") }}{{- $_ := set $pool "keda" true }}{{- end }}
{{- toJson $pool }}
{{- end }}

{{/* The KEDA query: jobs queued or running on any of the pool's queues (running work keeps pods up). */}}
{{- define "locus.kedaQuery" -}}
{{- $quoted := list }}
{{- range .queues }}{{- $quoted = append $quoted (printf "'%s'" .) }}{{- end }}
{{- printf "SELECT count(*) FROM jobs_job WHERE status IN ('queued','running') AND queue IN (%s)" (join "," $quoted) }}
{{- end }}
