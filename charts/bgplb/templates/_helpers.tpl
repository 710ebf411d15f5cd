{{/* Prefix of every resource name: "bgplb" unless overridden. */}}
{{- define "bgplb.fullname" -}}
{{- default "bgplb" .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "bgplb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "bgplb.labels" -}}
helm.sh/chart: {{ include "bgplb.chart" . }}
app.kubernetes.io/name: bgplb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: bgplb
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: include "bgplb.selectorLabels" (list . "controller") */}}
{{- define "bgplb.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: bgplb
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "bgplb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The YAML documents of a file in files/ (controller-gen writes several,
separated by "---"), as a list of dicts; empty documents are dropped.
*/}}
{{- define "bgplb.docs" -}}
{{- $root := index . 0 -}}
{{- $docs := list -}}
{{- range regexSplit "(?m)^---[ \t]*$" ($root.Files.Get (index . 1)) -1 -}}
{{- $d := fromYaml . -}}
{{- if and $d $d.kind -}}
{{- $docs = append $docs $d -}}
{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}

{{/* Container security context shared by both programs. */}}
{{- define "bgplb.containerSecurityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "bgplb.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
