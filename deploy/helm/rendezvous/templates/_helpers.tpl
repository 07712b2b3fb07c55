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

{{/* Replica mode (serve --redis-url): "true" when Redis is configured, else empty. */}}
{{- define "rendezvous.replicaMode" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret .Values.redis.enabled -}}true{{- end -}}
{{- end -}}

{{/* The in-chart Redis's name (its Deployment, Service and Secret). */}}
{{- define "rendezvous.redisName" -}}
{{- printf "%s-redis" (include "rendezvous.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{/* The in-chart Redis's pod labels: apart from the server's, so that its Service never selects them. */}}
{{- define "rendezvous.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rendezvous.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* Where the Redis URL is: a secretKeyRef (name, key). */}}
{{- define "rendezvous.redisUrlRef" -}}
{{- if .Values.redis.existingSecret -}}
name: {{ .Values.redis.existingSecret }}
key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.enabled -}}
name: {{ include "rendezvous.redisName" . }}
key: url
{{- else -}}
name: {{ include "rendezvous.secretName" . }}
key: redis-url
{{- end -}}
{{- end -}}

{{/* The Service's session affinity: as set, else ClientIP in replica mode. */}}
{{- define "rendezvous.sessionAffinity" -}}
{{- .Values.service.sessionAffinity | default (ternary "ClientIP" "None" (eq (include "rendezvous.replicaMode" .) "true")) -}}
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
{{- range $key := list "stateKey" "clusterKey" "tokenKey" -}}
{{- $value := index $.Values.secrets $key -}}
{{- if and $value (lt (len $value) 32) -}}
{{- fail (printf "secrets.%s must be 32 bytes or more (e.g. openssl rand -base64 32)" $key) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- $redis := include "rendezvous.replicaMode" . -}}
{{- if and (gt (int .Values.replicaCount) 1) (not $redis) -}}
{{- fail "replicaCount above 1 needs Redis (replica mode): set redis.url, redis.existingSecret or redis.enabled=true; without it each pod holds its own tasks and a guest sent to another pod would not find its host" -}}
{{- end -}}
{{- $sources := 0 -}}
{{- range $set := list .Values.redis.url .Values.redis.existingSecret .Values.redis.enabled -}}
{{- if $set -}}{{- $sources = add1 $sources -}}{{- end -}}
{{- end -}}
{{- if gt $sources 1 -}}
{{- fail "set one of redis.url, redis.existingSecret and redis.enabled: each names the Redis of replica mode" -}}
{{- end -}}
{{- if and .Values.redis.url (not (regexMatch "^rediss?://" .Values.redis.url)) -}}
{{- fail "redis.url must be redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://…" -}}
{{- end -}}
{{- if and .Values.redis.url .Values.secrets.existingSecret -}}
{{- fail "redis.url goes in the chart's Secret, which secrets.existingSecret replaces: put the URL in a Secret and name it in redis.existingSecret (and redis.existingSecretKey)" -}}
{{- end -}}
{{- if and .Values.redis.existingSecret (not .Values.redis.existingSecretKey) -}}
{{- fail "redis.existingSecret needs redis.existingSecretKey, the key of the URL in it" -}}
{{- end -}}
{{- if and $redis .Values.tls.secretName -}}
{{- fail "tls.secretName with Redis (replica mode): the pods reach each other at https://POD_IP, which no certificate names; terminate TLS in front of the pods (an ingress) and leave tls.secretName empty" -}}
{{- end -}}
{{- if not (has (.Values.service.sessionAffinity | default "auto") (list "auto" "ClientIP" "None")) -}}
{{- fail (printf "service.sessionAffinity is %q: use ClientIP, None, or leave it empty" .Values.service.sessionAffinity) -}}
{{- end -}}
{{- end -}}
