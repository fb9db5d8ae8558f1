{{/*
Expand the name of the chart.
*/}}
{{- define "medsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "medsearch.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "medsearch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "medsearch.labels" -}}
helm.sh/chart: {{ include "medsearch.chart" . }}
{{ include "medsearch.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: medsearch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "medsearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "medsearch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component names, labels and selector labels. Call with (dict "ctx" $ "component" "gateway").
The component label is part of each Deployment's selector and, like the others, must never change.
*/}}
{{- define "medsearch.componentName" -}}
{{- printf "%s-%s" (include "medsearch.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "medsearch.componentLabels" -}}
{{ include "medsearch.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "medsearch.componentSelectorLabels" -}}
{{ include "medsearch.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Service accounts of the operator and the gateway.
*/}}
{{- define "medsearch.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "medsearch.componentName" (dict "ctx" . "component" "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "medsearch.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "medsearch.componentName" (dict "ctx" . "component" "gateway")) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from an image block. Call with (dict "image" .Values.gateway.image "ctx" $ "suffix" "").
The tag defaults to the chart's appVersion (plus suffix); a digest, when set, pins the image.
*/}}
{{- define "medsearch.image" -}}
{{- $tag := .image.tag | default (printf "%s%s" .ctx.Chart.AppVersion (.suffix | default "")) -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/*
Resolved service settings.
*/}}
{{- define "medsearch.indexName" -}}
{{- .Values.config.index | default .Values.defaultIndex.name }}
{{- end }}

{{- define "medsearch.milvusUri" -}}
{{- required "externalMilvus.uri is required" .Values.externalMilvus.uri }}
{{- end }}

{{- define "medsearch.kafkaBootstrap" -}}
{{- required "externalKafka.brokerList is required" .Values.externalKafka.brokerList }}
{{- end }}

{{- define "medsearch.objectStoreUrl" -}}
{{- $bucket := required "externalS3.bucket is required" .Values.externalS3.bucket }}
{{- $root := .Values.externalS3.rootPath | trimAll "/" }}
{{- if $root }}
{{- printf "s3://%s/%s" $bucket $root }}
{{- else }}
{{- printf "s3://%s" $bucket }}
{{- end }}
{{- end }}

{{/*
The embedding predictor of the served index: KServe names the predictor Service <isvc>-predictor, and the
operator names the InferenceService <index>-embedder.
*/}}
{{- define "medsearch.modelServerUrl" -}}
{{- if .Values.config.modelServerUrl }}
{{- .Values.config.modelServerUrl }}
{{- else }}
{{- printf "http://%s-embedder-predictor.%s.svc.cluster.local" (include "medsearch.indexName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "medsearch.configMapName" -}}
{{- include "medsearch.componentName" (dict "ctx" . "component" "config") }}
{{- end }}

{{- define "medsearch.secretName" -}}
{{- include "medsearch.componentName" (dict "ctx" . "component" "secrets") }}
{{- end }}

{{- define "medsearch.urlSecretName" -}}
{{- .Values.gateway.urlSigning.existingSecret | default (include "medsearch.componentName" (dict "ctx" . "component" "url-signing")) }}
{{- end }}

{{- define "medsearch.tokensSecretName" -}}
{{- .Values.gateway.auth.staticTokens.existingSecret | default (include "medsearch.componentName" (dict "ctx" . "component" "tokens")) }}
{{- end }}

{{/*
Pod annotations that restart pods when the shared configuration changes.
*/}}
{{- define "medsearch.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/*
Environment shared by every medsearch container: the ConfigMap, the Secret, and credentials from existing
Secrets.
*/}}
{{- define "medsearch.envFrom" -}}
- configMapRef:
    name: {{ include "medsearch.configMapName" . }}
- secretRef:
    name: {{ include "medsearch.secretName" . }}
{{- end }}

{{- define "medsearch.secretEnv" -}}
{{- if .Values.externalPostgres.existingSecret }}
- name: MEDSEARCH_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalPostgres.existingSecret }}
      key: {{ .Values.externalPostgres.existingSecretKey }}
{{- end }}
{{- if .Values.externalKafka.sasl.existingSecret }}
- name: MEDSEARCH_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalKafka.sasl.existingSecret }}
      key: {{ .Values.externalKafka.sasl.existingSecretKey }}
{{- end }}
{{- if .Values.externalMilvus.existingSecret }}
- name: MEDSEARCH_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalMilvus.existingSecret }}
      key: {{ .Values.externalMilvus.existingSecretKey }}
{{- end }}
{{- if and .Values.externalS3.existingSecret (not .Values.externalS3.useIAM) }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalS3.existingSecret }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalS3.existingSecret }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}

{{/*
The Kafka CA (externalKafka.tls.caSecret), mounted where MEDSEARCH_KAFKA_SSL_CAFILE points.
*/}}
{{- define "medsearch.kafkaCaMount" -}}
{{- if .Values.externalKafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/medsearch-kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "medsearch.kafkaCaVolume" -}}
{{- if .Values.externalKafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.externalKafka.tls.caSecret }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{/*
Egress rule allowing DNS lookups (used when networkPolicy.egress restricts egress).
*/}}
{{- define "medsearch.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
API versions that moved to GA after the oldest supported Kubernetes (1.20): the GA one when the cluster
serves it (helm template assumes it does), else the beta one.
*/}}
{{- define "medsearch.pdb.apiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end }}

{{- define "medsearch.hpa.apiVersion" -}}
{{- if .Capabilities.APIVersions.Has "autoscaling/v2" -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end -}}
{{- end }}
