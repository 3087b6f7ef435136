{{/* Names, labels and the catalogue, written once. */}}

{{- define "wallet-mesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wallet-mesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "wallet-mesh.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "wallet-mesh.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The service catalogue (files/catalogue.yaml, generated from services/catalogue.py). */}}
{{- define "wallet-mesh.catalogue" -}}
{{- .Files.Get "files/catalogue.yaml" -}}
{{- end -}}

{{- define "wallet-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wallet-mesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "user"). */}}
{{- define "wallet-mesh.labels" -}}
{{ include "wallet-mesh.selectorLabels" . }}
app.kubernetes.io/part-of: wallet-mesh
app.kubernetes.io/version: {{ .root.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wallet-mesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* A service's image: its own (services.<name>.image), else the global one. */}}
{{- define "wallet-mesh.serviceImage" -}}
{{- $own := (index .root.Values.services .name | default dict).image | default dict -}}
{{ $own.repository | default .root.Values.image.repository }}:{{ $own.tag | default .root.Values.image.tag }}
{{- end -}}

{{- define "wallet-mesh.servicePullPolicy" -}}
{{- $own := (index .root.Values.services .name | default dict).image | default dict -}}
{{ $own.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end -}}

{{/* A service's DNS name (its headless Service); call with (dict "root" $ "name" "user"). */}}
{{- define "wallet-mesh.serviceHost" -}}
{{ include "wallet-mesh.fullname" .root }}-{{ .name }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}
{{- end -}}

{{- define "wallet-mesh.edgeHost" -}}
{{ include "wallet-mesh.fullname" . }}-edge.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}

{{/* Secret names: the operator's existing one, or the chart's. */}}
{{- define "wallet-mesh.secretName" -}}
{{- $secret := index .root.Values.secrets .key -}}
{{- if $secret.existingSecret -}}{{ $secret.existingSecret }}{{- else -}}{{ include "wallet-mesh.fullname" .root }}-{{ .suffix }}{{- end -}}
{{- end -}}

{{- define "wallet-mesh.postgresSecret" -}}
{{- if .Values.postgres.existingSecret -}}{{ .Values.postgres.existingSecret }}{{- else -}}{{ include "wallet-mesh.fullname" . }}-postgres{{- end -}}
{{- end -}}

{{- define "wallet-mesh.redisSecret" -}}
{{- if .Values.redis.existingSecret -}}{{ .Values.redis.existingSecret }}{{- else -}}{{ include "wallet-mesh.fullname" . }}-redis{{- end -}}
{{- end -}}

{{/* Replicas of a service: values, else the catalogue's. (dict "root" $ "name" .. "spec" ..) */}}
{{- define "wallet-mesh.replicas" -}}
{{- $values := index .root.Values.services .name | default dict -}}
{{- if hasKey $values "replicas" -}}{{ $values.replicas }}{{- else -}}{{ .spec.replicas }}{{- end -}}
{{- end -}}

{{/* The most instances a service may run (its fair share of the rate limits). */}}
{{- define "wallet-mesh.maxReplicas" -}}
{{- $values := index .root.Values.services .name | default dict -}}
{{- $autoscaling := $values.autoscaling | default dict -}}
{{- if $autoscaling.enabled -}}{{ $autoscaling.maxReplicas | default 10 }}{{- else -}}{{ include "wallet-mesh.replicas" . }}{{- end -}}
{{- end -}}

{{/* Security settings of every pod and container: non-root, read-only root, no privileges. */}}
{{- define "wallet-mesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "wallet-mesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Spread a component's pods over nodes; (dict "root" $ "component" ..). */}}
{{- define "wallet-mesh.topologySpread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "wallet-mesh.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* What the image runs is picked by its entry point's arguments (image/README.md):
     `<service> serve|migrate|audit` or `envoy <envoy's arguments>`. */}}

{{/* A service's environment: the catalogue's variables, each filled the cluster's way,
     then the values' extra variables. (dict "root" $ "name" "user" "spec" <catalogue entry>) */}}
{{- define "wallet-mesh.serviceEnv" -}}
{{- $args := . -}}
{{- $root := .root -}}
{{- $catalogue := include "wallet-mesh.catalogue" $root | fromYaml -}}
{{- $spec := .spec -}}
- name: LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- range $variable := $spec.env }}
- name: {{ $variable.name }}
{{- if eq $variable.setting "grpc_address" }}
  value: {{ printf "0.0.0.0:%v" $catalogue.grpcPort | quote }}
{{- else if eq $variable.setting "metrics_address" }}
  value: {{ printf "0.0.0.0:%v" $catalogue.metricsPort | quote }}
{{- else if eq $variable.setting "instance_id" }}
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
{{- else if eq $variable.setting "redis_url" }}
  valueFrom:
    secretKeyRef: {name: {{ include "wallet-mesh.redisSecret" $root }}, key: url}
{{- else if eq $variable.setting "database_url" }}
  valueFrom:
    secretKeyRef: {name: {{ include "wallet-mesh.postgresSecret" $root }}, key: {{ $spec.database }}}
{{- else if eq $variable.setting "service_token_file" }}
  value: /var/run/wallet/service-token/token
{{- else if eq $variable.setting "signing_key_file" }}
  value: /var/run/wallet/jwt/signing-key.pem
{{- else if eq $variable.setting "limits_file" }}
  value: /etc/wallet/limits/limits.yaml
{{- else if eq $variable.setting "instances" }}
  value: {{ include "wallet-mesh.maxReplicas" $args | quote }}
{{- else if eq $variable.setting "sandbox_webhook_url" }}
  value: {{ $root.Values.sandbox.webhookUrl | default (printf "http://%s:%v/v1/webhooks/sandbox" (include "wallet-mesh.edgeHost" $root) $root.Values.edge.service.port) | quote }}
{{- else if eq $variable.setting "sandbox_webhook_secret" }}
  valueFrom:
    secretKeyRef: {name: {{ include "wallet-mesh.secretName" (dict "root" $root "key" "sandboxWebhookSecret" "suffix" "sandbox-webhook") }}, key: secret}
{{- else if eq $variable.setting "service_target" }}
  value: {{ printf "dns:///%s:%v" (include "wallet-mesh.serviceHost" (dict "root" $root "name" $variable.service)) $catalogue.grpcPort | quote }}
{{- else }}
{{- fail (printf "the catalogue's setting %q of %s has no value in this chart" $variable.setting $variable.name) }}
{{- end }}
{{- end }}
{{- range $name, $value := (index $root.Values.services .name | default dict).env | default dict }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The volumes a service's environment points at. */}}
{{- define "wallet-mesh.serviceVolumes" -}}
- name: tmp
  emptyDir: {}
- name: service-token
  secret:
    secretName: {{ include "wallet-mesh.secretName" (dict "root" .root "key" "serviceToken" "suffix" "service-token") }}
    defaultMode: 0440
{{- if .spec.signsTokens }}
- name: jwt
  secret:
    secretName: {{ include "wallet-mesh.secretName" (dict "root" .root "key" "jwtSigningKey" "suffix" "jwt") }}
    defaultMode: 0440
{{- end }}
{{- if .spec.readsLimits }}
- name: limits
  configMap:
    name: {{ include "wallet-mesh.fullname" .root }}-limits
{{- end }}
{{- end -}}

{{- define "wallet-mesh.serviceVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: service-token
  mountPath: /var/run/wallet/service-token
  readOnly: true
{{- if .spec.signsTokens }}
- name: jwt
  mountPath: /var/run/wallet/jwt
  readOnly: true
{{- end }}
{{- if .spec.readsLimits }}
- name: limits
  mountPath: /etc/wallet/limits
  readOnly: true
{{- end }}
{{- end -}}

{{/*
A database's URL for a Secret, quoted: a string, or a list of them (the ledger's
databases, one per shard range: services/transaction/SHARDS.md) joined by spaces, as
TRANSACTION_DATABASE_URL takes them. Required unless postgres.existingSecret is set.
*/}}
{{- define "wallet-mesh.databaseUrl" -}}
{{- $url := .url -}}
{{- if kindIs "slice" $url -}}
{{- $url = join " " $url -}}
{{- end -}}
{{- required (printf "postgres.urls.%s (or postgres.existingSecret) is required" .database) $url | quote -}}
{{- end -}}
