{{/* Names and labels. */}}
{{- define "ocfcloud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ocfcloud.fullname" -}}
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

{{- define "ocfcloud.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ocfcloud.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ocfcloud
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ocfcloud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ocfcloud.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one service's objects; call with (dict "root" $ "svc" "coap-gateway"). */}}
{{- define "ocfcloud.serviceLabels" -}}
{{ include "ocfcloud.labels" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end }}

{{- define "ocfcloud.serviceSelector" -}}
{{ include "ocfcloud.selectorLabels" .root }}
app.kubernetes.io/component: {{ .svc }}
{{- end }}

{{- define "ocfcloud.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ocfcloud.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ocfcloud.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secrets and where each value comes from. */}}
{{- define "ocfcloud.configSecret" -}}
{{- printf "%s-config" (include "ocfcloud.fullname" .) }}
{{- end }}

{{- define "ocfcloud.gatewayTLSSecret" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-coap-gateway-tls" (include "ocfcloud.fullname" .) }}
{{- else }}
{{- .Values.certificates.gateway.existingSecret }}
{{- end }}
{{- end }}

{{- define "ocfcloud.ingressTLSSecret" -}}
{{- default (printf "%s-http-tls" (include "ocfcloud.fullname" .)) .Values.ingress.tls.secretName }}
{{- end }}

{{/* coaps+tcp is on and has certificates. */}}
{{- define "ocfcloud.coapsEnabled" -}}
{{- if .Values.coapGateway.coaps.enabled }}true{{ end }}
{{- end }}

{{/* In-cluster URL of authz, for token exchange and JWKS. */}}
{{- define "ocfcloud.authzURL" -}}
{{- printf "http://%s-authz.%s.svc:8080" (include "ocfcloud.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Checks that fail early with a message saying what to set. */}}
{{- define "ocfcloud.validate" -}}
{{- $hub := required "global.hubId is required: the cloud id (sid), one UUID for the deployment (uuidgen); it must never change once devices onboard" .Values.global.hubId }}
{{- if not (regexMatch "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$" $hub) }}
{{- fail (printf "global.hubId %q is not a UUID (uuidgen makes one)" $hub) }}
{{- end }}
{{- $_ := required "publicURL is required: the external base URL of the API and portal, e.g. https://cloud.example.com" .Values.publicURL }}
{{- $_ := required "coapGateway.publicHost is required: the host name devices dial (a SAN of the gateway certificate)" .Values.coapGateway.publicHost }}
{{- if and (not .Values.nats.url) (not .Values.nats.existingSecret) }}
{{- fail "nats.url or nats.existingSecret is required: the chart runs no NATS; point it at a NATS cluster with JetStream" }}
{{- end }}
{{- if and (not .Values.mongodb.uri) (not .Values.mongodb.existingSecret) }}
{{- fail "mongodb.uri or mongodb.existingSecret is required: the chart runs no MongoDB; point it at a replica set" }}
{{- end }}
{{- if and .Values.coapGateway.coaps.enabled (not .Values.certManager.enabled) (not .Values.certificates.gateway.existingSecret) }}
{{- fail "coaps+tcp needs a gateway certificate: set certificates.gateway.existingSecret (a Secret made with `ocfcloud certs gateway`, see docs/deploy.md), or certManager.enabled=true, or coapGateway.coaps.enabled=false" }}
{{- end }}
{{- if and .Values.certManager.enabled (not .Values.certManager.issuerRef.name) }}
{{- fail "certManager.issuerRef.name is required when certManager.enabled is true" }}
{{- end }}
{{- if and (not .Values.coapGateway.coap.enabled) (not .Values.coapGateway.coaps.enabled) }}
{{- fail "coapGateway.coap.enabled and coapGateway.coaps.enabled are both false: devices could not connect" }}
{{- end }}
{{- if and .Values.coapGateway.autoscaling.enabled (gt (int .Values.coapGateway.autoscaling.minReplicas) (int .Values.coapGateway.autoscaling.maxReplicas)) }}
{{- fail "coapGateway.autoscaling.minReplicas is greater than maxReplicas" }}
{{- end }}
{{- end }}
