{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: "<release>-baton", or the release name when it already contains
the chart name. Truncated to 63 characters, leaving room for no suffix longer than the
ones this chart adds ("-backend", "-metrics", "-config").
*/}}
{{- define "baton.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "baton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "baton.labels" -}}
helm.sh/chart: {{ include "baton.chart" . }}
{{ include "baton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "baton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "baton.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "baton.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret the pods read BATON_BACKEND from, checked against the backend values. */}}
{{- define "baton.backendSecretName" -}}
{{- if and .Values.backend.url .Values.backend.existingSecret }}
{{- fail "backend: set either backend.existingSecret (recommended) or backend.url, not both" }}
{{- end }}
{{- default (printf "%s-backend" (include "baton.fullname" .)) .Values.backend.existingSecret }}
{{- end }}

{{/*
baton.yaml as a dict: the config section plus jobs and http. backend and replica_id are not
in it: they come from the Secret and the pod name (env), which override the file anyway.
*/}}
{{- define "baton.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "jobs" .Values.jobs }}
{{- $_ := set $config "http" (dict "port" (int .Values.http.port) "host" .Values.http.host "status_error_text" (.Values.http.status_error_text | default false)) }}
{{- toYaml $config }}
{{- end }}

{{/* Seconds between SIGTERM and SIGKILL: explicit, or shutdown_grace + margin. */}}
{{- define "baton.terminationGracePeriodSeconds" -}}
{{- /* 30 is Baton's own default; `default` would also replace an explicit 0. */ -}}
{{- $grace := 30.0 }}
{{- if not (kindIs "invalid" .Values.config.shutdown_grace) }}
{{- $grace = float64 .Values.config.shutdown_grace }}
{{- end }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (ceil $grace | int) (int .Values.terminationGraceMargin) }}
{{- else }}
{{- $explicit := int .Values.terminationGracePeriodSeconds }}
{{- if le (float64 $explicit) $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.shutdown_grace (%v): Kubernetes would kill replicas before their running jobs finish and the lease is released" $explicit $grace) }}
{{- end }}
{{- $explicit }}
{{- end }}
{{- end }}
