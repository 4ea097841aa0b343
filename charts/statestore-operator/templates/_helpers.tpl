{{/* Names, labels and image references shared by the templates. */}}

{{- define "statestore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name when it already contains the chart name; at most 63 chars. */}}
{{- define "statestore-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "statestore-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "statestore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "statestore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The standard labels of every object (https://helm.sh/docs/chart_best_practices/labels/). */}}
{{- define "statestore-operator.labels" -}}
helm.sh/chart: {{ include "statestore-operator.chart" . }}
{{ include "statestore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: statestore-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "statestore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "statestore-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "statestore-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "statestore-operator.stateApiImage" -}}
{{- printf "%s:%s" .Values.stateApi.image.repository (default .Chart.AppVersion .Values.stateApi.image.tag) -}}
{{- end -}}

{{- define "statestore-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "statestore-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "statestore-operator.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "statestore-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ValidatingWebhookConfiguration is cluster-scoped: its name carries the namespace too. */}}
{{- define "statestore-operator.webhookConfigName" -}}
{{- printf "%s.%s.statestore.dapr.io" (include "statestore-operator.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The handler id of kopf's @kopf.on.validate (operator/statestore_operator/handlers.py): the URL path. */}}
{{- define "statestore-operator.webhookPath" -}}
/validate-component
{{- end -}}

{{/* The handler id of kopf's @kopf.on.mutate for Pods (operator/statestore_operator/injection.py). */}}
{{- define "statestore-operator.injectPath" -}}
/inject-sidecar
{{- end -}}

{{/* Where the serving certificate is mounted in the operator container. */}}
{{- define "statestore-operator.webhookCertDir" -}}
/etc/statestore-operator/webhook-tls
{{- end -}}

{{/*
The webhook's CA and serving certificate when the chart generates them (webhook.certManager.enabled=false).
Generated once: an existing Secret (from a previous install/upgrade) is looked up and reused, so
`helm upgrade` neither rotates the certificate nor breaks the caBundle. Returns a dict of base64 values.
`lookup` returns nothing under `helm template` / `--dry-run=client`, which then render a fresh pair.
*/}}
{{- define "statestore-operator.webhookCert" -}}
{{- /* Computed once per render: the Secret, the webhook configuration and the pod checksum must agree. */ -}}
{{- if not (hasKey .Release "statestoreWebhookCert") -}}
{{- $_ := set .Release "statestoreWebhookCert" (include "statestore-operator.webhookCertFresh" .) -}}
{{- end -}}
{{- get .Release "statestoreWebhookCert" -}}
{{- end -}}

{{- define "statestore-operator.webhookCertFresh" -}}
{{- $secretName := include "statestore-operator.webhookSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- $data := dict -}}
{{- if and $existing $existing.data -}}
{{- $data = $existing.data -}}
{{- end -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- dict "ca" (index $data "ca.crt") "cert" (index $data "tls.crt") "key" (index $data "tls.key") | toJson -}}
{{- else -}}
{{- $service := include "statestore-operator.webhookServiceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $days := int .Values.webhook.generatedCert.validityDays -}}
{{- $ca := genCA (printf "%s-webhook-ca" (include "statestore-operator.fullname" .)) $days -}}
{{- $dns := list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service $ns) nil $dns $days $ca -}}
{{- dict "ca" ($ca.Cert | b64enc) "cert" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) | toJson -}}
{{- end -}}
{{- end -}}
