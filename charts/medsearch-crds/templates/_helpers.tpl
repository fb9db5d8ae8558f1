{{/*
Expand the name of the chart.
*/}}
{{- define "medsearch-crds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "medsearch-crds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "medsearch-crds.labels" -}}
helm.sh/chart: {{ include "medsearch-crds.chart" . }}
{{ include "medsearch-crds.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: medsearch
{{- end }}

{{/*
Selector labels
*/}}
{{- define "medsearch-crds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medsearch-crds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
