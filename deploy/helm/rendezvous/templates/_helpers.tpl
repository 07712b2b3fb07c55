{{/* The chart's name. */}}
{{- define "rendezvous.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object: the release's, with the chart's unless it has it. */}}
{{- define "rendezvous.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels pods are selected by: they never change across upgrades. */}}
{{- define "rendezvous.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rendezvous.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rendezvous.labels" -}}
{{ include "rendezvous.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret of the keys: the given one, or the chart's. */}}
{{- define "rendezvous.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "rendezvous.fullname" .) -}}
{{- end -}}

{{/* The probes' scheme: HTTPS with TLS in the pod, else HTTP. */}}
{{- define "rendezvous.scheme" -}}
{{- if .Values.tls.secretName -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/* Fails the render on values that would start a server that refuses to run or admits anyone by mistake. */}}
{{- define "rendezvous.validate" -}}
{{- $mode := .Values.admission.mode -}}
{{- if not (has $mode (list "hostTokens" "oidc" "open")) -}}
{{- fail (printf "admission.mode is %q: use hostTokens, oidc or open" $mode) -}}
{{- end -}}
{{- if and (eq $mode "hostTokens") (not .Values.admission.hostTokens) (not .Values.secrets.existingSecret) -}}
{{- fail "admission.mode hostTokens needs admission.hostTokens (lines NAME TOKEN; --set-file admission.hostTokens=FILE) or secrets.existingSecret with a key host-tokens" -}}
{{- end -}}
{{- if and (eq $mode "oidc") (or (not .Values.admission.oidc.issuers) (not .Values.admission.oidc.audience)) -}}
{{- fail "admission.mode oidc needs admission.oidc.issuers and admission.oidc.audience" -}}
{{- end -}}
{{- range $key := list "stateKey" "tokenKey" -}}
{{- $value := index $.Values.secrets $key -}}
{{- if and $value (lt (len $value) 32) -}}
{{- fail (printf "secrets.%s must be 32 bytes or more (e.g. openssl rand -base64 32)" $key) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail "replicaCount above 1 needs the upcoming Redis mode: keep 1" -}}
{{- end -}}
{{- end -}}
