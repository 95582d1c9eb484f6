{{/* Name of the chart, overridable. */}}
{{- define "kaito.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; cluster-scoped objects take it too, so two releases do not clash. */}}
{{- define "kaito.fullname" -}}
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

{{- define "kaito.webhook.fullname" -}}
{{- printf "%s-webhook" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.controller.fullname" -}}
{{- printf "%s-controller" (include "kaito.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhook.certSecret" -}}
{{- printf "%s-cert" (include "kaito.webhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhook.caSecret" -}}
{{- printf "%s-ca" (include "kaito.webhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kaito.webhook.serviceAccountName" -}}
{{- default (include "kaito.webhook.fullname" .) .Values.webhook.serviceAccount.name }}
{{- end }}

{{- define "kaito.controller.serviceAccountName" -}}
{{- default (include "kaito.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- end }}

{{- define "kaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kaito
{{- end }}

{{- define "kaito.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "kaito.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* image: repository:tag (tag defaults to the appVersion) or repository@digest. */}}
{{- define "kaito.image" -}}
{{- $img := .image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{/* Workload identity: the label goes on the pods, the annotations on the ServiceAccount. */}}
{{- define "kaito.workloadIdentity.podLabels" -}}
{{- if .Values.azure.workloadIdentity.enabled }}
azure.workload.identity/use: "true"
{{- end }}
{{- end }}

{{/* The Lease the controller replicas elect a leader with. */}}
{{- define "kaito.controller.leaseName" -}}
{{- include "kaito.controller.fullname" . }}
{{- end }}
